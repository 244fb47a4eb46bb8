"""Checkpoints: layout, atomicity, retention, the best pointer and resume rules."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoTokenizer, GPT2LMHeadModel

from lmforge.errors import UserError
from lmforge.training.checkpoint import (
    COMPLETE_MARKER,
    complete_checkpoints,
    point_best,
    prune_checkpoints,
    remove_incomplete,
)


def _fake_checkpoint(run_dir, step, complete=True):
    path = run_dir / "checkpoints" / f"step-{step:06d}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        (path / COMPLETE_MARKER).write_text("{}")
    return path


def test_incomplete_checkpoints_are_ignored_and_removed(tmp_path):
    done = [_fake_checkpoint(tmp_path, s) for s in (2, 4)]
    _fake_checkpoint(tmp_path, 6, complete=False)  # killed before its marker
    (tmp_path / "checkpoints" / ".step-000008.tmp").mkdir()  # killed before the rename
    (tmp_path / ".final.x1y2.tmp").mkdir()  # killed while writing final/
    assert complete_checkpoints(tmp_path) == done
    removed = remove_incomplete(tmp_path)
    assert sorted(p.name for p in removed) == [".final.x1y2.tmp", ".step-000008.tmp", "step-000006"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000004",
    ]


def test_prune_keeps_last_and_best(tmp_path):
    paths = [_fake_checkpoint(tmp_path, s) for s in (1, 2, 3, 4, 5)]
    removed = prune_checkpoints(tmp_path, keep_last=2, keep=paths[1])
    assert [p.name for p in removed] == ["step-000001", "step-000003"]
    assert complete_checkpoints(tmp_path) == [paths[1], paths[3], paths[4]]
    point_best(tmp_path, paths[1])
    point_best(tmp_path, paths[3])  # replaced atomically
    assert (tmp_path / "best").readlink().as_posix() == "checkpoints/step-000004"


def test_checkpoint_contents_and_retention(tmp_path, tiny, one_thread):
    scores = iter([5.0, 1.0, 4.0, 3.0, 2.0, 6.0])  # best (lowest) at step 2
    result = tiny["run"](
        tmp_path,
        max_steps=6,
        save_every=1,
        keep_last=2,
        eval_every=1,
        eval_data=tiny["dataset"](n=4, seed=1),
        eval_fn=lambda model: {"score": next(scores)},
        metric="score",
        tok=tiny["tokenizer"](),
        config_yaml="seed: 0\n",
    )
    names = [p.name for p in complete_checkpoints(tmp_path)]
    assert names == ["step-000002", "step-000005", "step-000006"]
    assert (tmp_path / "best").resolve() == (tmp_path / "checkpoints" / "step-000002").resolve()
    assert result.best_checkpoint.name == "step-000002" and result.best_metric == 1.0

    checkpoint = result.last_checkpoint
    assert json.loads((checkpoint / COMPLETE_MARKER).read_text()) == {"step": 6}
    assert (checkpoint / "config.yaml").read_text() == "seed: 0\n"
    training_state = sorted(p.name for p in (checkpoint / "training_state").iterdir())
    assert training_state == ["optimizer.bin", "random_states_0.pkl", "scheduler.bin", "state.json"]
    state = json.loads((checkpoint / "training_state" / "state.json").read_text())
    assert state["step"] == 6 and state["best_step"] == 2 and state["best_metric"] == 1.0
    assert {"epoch", "batches_done", "tokens", "elapsed_s", "last_eval"} <= state.keys()

    # final/ and every checkpoint load as plain Transformers directories with their tokenizer
    for directory in (result.final_dir, checkpoint):
        model = GPT2LMHeadModel.from_pretrained(directory)
        assert model.config.n_layer == 2
        assert AutoTokenizer.from_pretrained(directory)("w5 w7")["input_ids"] == [5, 7]
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers
    assert not list((tmp_path / "checkpoints").glob(".*"))


def test_resume_rules(tmp_path, tiny, one_thread):
    tiny["run"](tmp_path, max_steps=2, save_every=1)
    with pytest.raises(UserError, match="already holds checkpoints"):
        tiny["run"](tmp_path, max_steps=2, resume=False)
    with pytest.raises(UserError, match="global batch of 4 examples, this run has 8"):
        tiny["run"](tmp_path, max_steps=3, batch_size=8)
    # rerunning a finished run is a no-op resume that rewrites final/ with the same weights
    before = (tmp_path / "final" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "final")
    result = tiny["run"](tmp_path, max_steps=2)
    assert result.step == 2
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == before
