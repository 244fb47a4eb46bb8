"""Evaluation runs: two tiny local models and one loopback endpoint on a small Chinese set."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest

from lmforge.config import dump_config, validate
from lmforge.data.loading import load_source
from lmforge.data.splits import split_dataset
from lmforge.errors import UserError
from lmforge.evaluation import EvalConfig, ModelSpec, evaluate, evaluate_humaneval
from lmforge.metrics import compute_metrics

HERE = Path(__file__).parent
TINY = runpy.run_path(str(HERE / "backends" / "tiny_models.py"))
FAKE = runpy.run_path(str(HERE / "backends" / "fake_openai.py"))
KEY = "sk-eval-77aa-SECRET"
PREFIX = "translate English to Chinese: "
CARD = {
    "tasks": [{"task": "translate", "template": {"prefix": "译: "}}],
    "max_source_length": 64,
    "seed": 42,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    tok = TINY["tokenizer"]()
    return {
        "t5": TINY["save_model"](root / "t5", "t5", tok, CARD),
        "gpt2": TINY["save_model"](root / "gpt2", "gpt2", tok, {"tasks": [], "seed": 7}),
        "data": TINY["translation_file"](root / "zh.jsonl"),
    }


@pytest.fixture
def reference_server(monkeypatch):
    """An endpoint that answers each rendered source with its exact reference."""
    monkeypatch.setenv("LMFORGE_EVAL_KEY", KEY)
    answers = {PREFIX + en: zh for en, zh in TINY["PAIRS"]}
    with FAKE["FakeOpenAI"](lambda prompt: answers.get(prompt, "")) as server:
        yield server


def config(setup, server, run_dir: Path, **extra) -> EvalConfig:
    raw = {
        "run_dir": str(run_dir),
        "models": [
            {"name": "t5", "path": str(setup["t5"])},
            {"name": "gpt2", "path": str(setup["gpt2"])},
            {
                "name": "remote",
                "base_url": server.url,
                "model": "fake",
                "api_key_env": "LMFORGE_EVAL_KEY",
            },
        ],
        "data": [
            {
                "path": str(setup["data"]),
                "task": "translate",
                "columns": {"source": "en", "target": "zh"},
                "split": {"validation": 0.2, "test": 0.4},
            }
        ],
        "metrics": ["bleu", "chrf", "rouge", "perplexity"],
        "decoding": {"max_new_tokens": 6},
        **extra,
    }
    return validate(EvalConfig, raw, "test")


def test_an_eval_run_writes_predictions_metrics_and_a_report(setup, reference_server, tmp_path):
    cfg = config(setup, reference_server, tmp_path / "run")
    result = evaluate(cfg)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "config.yaml",
        "metrics.json",
        "predictions.jsonl",
        "report.md",
    ]

    # the test split training would have held out, with its row numbers as ids
    source = cfg.data[0]
    expected = split_dataset(load_source(source), source.split, 42)["test"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * len(expected) == 12
    ids = list(dict.fromkeys(row["id"] for row in rows))
    assert [row["target"] for row in expected] == [
        next(r["reference"] for r in rows if r["id"] == i) for i in ids
    ]
    assert all(i.startswith("zh:") for i in ids)
    assert [row["model"] for row in rows[:3]] == ["t5", "gpt2", "remote"]
    by_model = {m: [r for r in rows if r["model"] == m] for m in ("t5", "gpt2", "remote")}
    # t5's card template, the data's default for the others
    assert all(r["source"].startswith("译: ") for r in by_model["t5"])
    assert all(r["source"].startswith(PREFIX) for r in by_model["gpt2"] + by_model["remote"])
    assert all(r["prediction"] == r["reference"] for r in by_model["remote"])
    assert set(rows[0]) == {
        "id",
        "dataset",
        "task",
        "model",
        "source",
        "reference",
        "prediction",
        "scores",
    }

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == result.metrics
    for model, model_rows in by_model.items():
        entry = metrics["results"][model]["zh"]
        assert entry["examples"] == 4
        assert entry["seconds"] >= 0 and entry["completion_tokens"] > 0
        again = compute_metrics(
            ["bleu", "chrf", "rouge"],
            [r["prediction"] for r in model_rows],
            [r["reference"] for r in model_rows],
            lang="zh",
        )
        for name, value in again.items():
            assert entry["metrics"][name]["score"] == pytest.approx(value.score)
            assert entry["metrics"][name]["signature"] == value.signature
        assert "tok:zh" in entry["metrics"]["bleu"]["signature"]
    remote = metrics["results"]["remote"]["zh"]
    assert remote["metrics"]["bleu"]["score"] == pytest.approx(100.0)
    assert remote["metrics"]["rougeL"]["score"] == pytest.approx(100.0)
    assert "perplexity" not in remote["metrics"]
    assert "chat/completions" in remote["omitted"]["perplexity"]
    t5_ppl = metrics["results"]["t5"]["zh"]["metrics"]["perplexity"]
    assert t5_ppl["score"] > 1 and t5_ppl["signature"].startswith("perplexity|kind:seq2seq")
    # gpt2's card was written with seed 7; the split with seed 42 may overlap its training rows
    assert metrics["warnings"] == [
        "model gpt2 was trained with seed 7 but zh is split with seed 42: its test split may "
        "hold training rows; set seed: 7"
    ]

    report = (run / "report.md").read_text()
    table = report.split("## zh")[1].split("Signatures:")[0]
    for model in ("t5", "gpt2", "remote"):
        assert f"| {model} " in table
    assert "| model   |   bleu |   chrf |   rouge1 |" in table
    assert "perplexity ↓" in table
    assert "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp" in report
    assert "- perplexity for remote:" in report
    assert report.count("#### zh:") == 3


def test_the_api_key_is_sent_but_never_written(setup, reference_server, tmp_path):
    cfg = config(setup, reference_server, tmp_path / "run", metrics=["bleu"])
    cfg.models = cfg.models[2:]
    evaluate(cfg)
    assert {r["authorization"] for r in reference_server.generation_requests()} == {f"Bearer {KEY}"}
    assert KEY not in dump_config(cfg)
    for path in (tmp_path / "run").rglob("*"):
        assert KEY not in path.read_text(encoding="utf-8"), path


def test_an_existing_run_is_kept_unless_overwrite(setup, reference_server, tmp_path):
    (tmp_path / "run").mkdir()
    cfg = config(setup, reference_server, tmp_path / "run")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        evaluate(cfg)
    assert reference_server.requests == []


def test_remote_perplexity_in_completions_mode(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_EVAL_KEY", KEY)
    with FAKE["FakeOpenAI"]() as server:
        cfg = config(setup, server, tmp_path / "run", metrics=["exact_match", "perplexity"])
        cfg.models = cfg.models[2:]
        cfg.models[0].mode = "completions"
        result = evaluate(cfg)
    ppl = result.metrics["results"]["remote"]["zh"]["metrics"]["perplexity"]
    assert ppl["score"] == pytest.approx(math.exp(-FAKE["LOGPROB"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"models": [{"path": "m", "base_url": "http://127.0.0.1:1/v1", "model": "x"}]},
            "models.0: Value error, give either path",
        ),
        ({"models": [{"base_url": "http://127.0.0.1:1/v1"}]}, "needs model"),
        ({"metrics": ["blue"]}, "unknown metric 'blue'; choose from bleu, chrf"),
        ({"models": [{"path": "a"}, {"path": "a"}]}, "models: the name 'a' is used twice"),
        ({"data": [{"path": "x.jsonl", "evaluate_on": "dev"}]}, "data.0.evaluate_on"),
        ({"data": [{"path": "x.jsonl"}], "metrics": ["bleu"]}, "data.0 has task text"),
        ({"decoding": {"num_beam": 2}}, "decoding.num_beam"),
    ],
)
def test_config_mistakes_are_one_clear_message(change, message):
    raw = {"models": [{"path": "m"}], "data": [{"path": "x.jsonl", "task": "qa"}], **change}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("|", r"\|")):
        validate(EvalConfig, raw, "eval.yaml")


def test_humaneval_with_an_endpoint_serving_canonical_solutions_passes_all(tmp_path):
    from lmforge.humaneval import load_problems

    problems = dict(list(load_problems().items())[:5])
    solutions = {
        p["prompt"]: p["canonical_solution"] + "\ndef unused():\n" for p in problems.values()
    }
    with FAKE["FakeOpenAI"](lambda prompt: solutions[prompt]) as server:
        spec = validate(
            ModelSpec,
            {"base_url": server.url, "model": "fake", "mode": "completions", "api_key_env": None},
        )
        result = evaluate_humaneval(spec, tmp_path / "he", limit=5, ks=(1, 10), temperature=0)
        assert server.generation_requests()[0]["authorization"] == "Bearer EMPTY"
    assert result.pass_at_k.scores["pass@1"].score == 100.0
    assert "fewer than 10 samples" in result.pass_at_k.omitted["pass@10"]
    samples = [json.loads(x) for x in result.samples_path.read_text().splitlines()]
    assert samples == [
        {"task_id": task_id, "completion": p["canonical_solution"]}
        for task_id, p in problems.items()
    ]
    assert result.results_path.is_file()
    metrics = json.loads((tmp_path / "he" / "metrics.json").read_text())
    assert metrics["metrics"]["pass@1"]["signature"].startswith("pass@k|k:1|n:1|problems:5")


def test_humaneval_with_a_local_causal_model_samples_n_per_problem(setup, tmp_path):
    spec = validate(ModelSpec, {"path": str(setup["gpt2"])})
    result = evaluate_humaneval(
        spec, tmp_path / "he", n=2, limit=2, ks=(1, 2), max_new_tokens=8, temperature=0.8
    )
    samples = [json.loads(x) for x in result.samples_path.read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2
    assert set(result.pass_at_k.scores) == {"pass@1", "pass@2"}
    again = evaluate_humaneval(
        spec, tmp_path / "he2", n=2, limit=2, ks=(1,), max_new_tokens=8, temperature=0.8
    )
    assert again.samples_path.read_text() == result.samples_path.read_text()
