"""The runs view's data: run directories with their loss curves, compute and scores."""

from __future__ import annotations

import json

import pytest

from lmforge.serve.runs import RunNotFound, list_runs, run_detail
from lmforge.training.logging import read_metrics


def test_runs_lists_training_and_evaluation_runs_only(runs_dir) -> None:
    runs = {r["name"]: r for r in list_runs(runs_dir)}
    assert set(runs) == {"tiny-gpt2", "eval-bleu"}  # "notes" holds no metrics
    training = runs["tiny-gpt2"]
    last = [e for e in read_metrics(runs_dir / "tiny-gpt2") if e["event"] == "train"][-1]
    assert training["kind"] == "training" and training["steps"] == 4
    assert training["loss"] == last["loss"] and training["has_final_model"]
    assert isinstance(training["eval_loss"], float)
    assert runs["eval-bleu"]["kind"] == "evaluation" and runs["eval-bleu"]["steps"] is None
    assert list_runs(runs_dir / "missing") == []


def test_a_training_run_gives_its_curves_and_compute(runs_dir) -> None:
    detail = run_detail(runs_dir, "tiny-gpt2")
    events = read_metrics(runs_dir / "tiny-gpt2")
    assert detail["train"] == [
        {"step": e["step"], "loss": e["loss"]} for e in events if e["event"] == "train"
    ]
    assert [e["step"] for e in detail["eval"]] == [2, 4]
    assert "eval_loss" in detail["last_eval"] and detail["last_train"]["step"] == 4
    compute = json.loads((runs_dir / "tiny-gpt2" / "compute.json").read_text())
    assert detail["compute"]["steps"] == 4 and detail["compute"]["mfu"] == compute["mfu"]
    assert detail["scores"] == []


def test_an_evaluation_run_gives_its_scores(runs_dir) -> None:
    detail = run_detail(runs_dir, "eval-bleu")
    assert detail["scores"] == [
        {"model": "tiny", "dataset": "pairs", "metric": "bleu", "score": 12.5}
    ]
    assert detail["train"] == [] and detail["eval"] == []


@pytest.mark.parametrize("name", ["notes", "missing", "../tiny-gpt2", ".hidden", "a/b"])
def test_only_run_directories_directly_inside_are_shown(runs_dir, name) -> None:
    with pytest.raises(RunNotFound):
        run_detail(runs_dir, name)


def test_the_runs_api_needs_the_key_and_answers_404_for_unknown_runs(serve, runs_dir) -> None:
    with serve("causal", model_name="m", runs_dir=runs_dir, api_keys=("k",)) as server:
        key = {"Authorization": "Bearer k"}
        listing = server.get("/api/runs", headers=key).json()
        assert listing["runs_dir"] == str(runs_dir)
        assert {r["name"] for r in listing["runs"]} == {"tiny-gpt2", "eval-bleu"}
        detail = server.get("/api/runs/tiny-gpt2", headers=key).json()
        assert detail == json.loads(json.dumps(run_detail(runs_dir, "tiny-gpt2")))
        missing = server.get("/api/runs/notes", headers=key)
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"
        assert server.get("/api/runs").status_code == 401
