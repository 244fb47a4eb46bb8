"""metrics.jsonl, TensorBoard events and compute.json of a run."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lmforge.training.logging import RunLogger, read_metrics


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    result = tiny["run"](
        run_dir, max_steps=6, log_every=2, eval_every=3, eval_data=tiny["dataset"](n=6, seed=1)
    )
    torch.set_num_threads(threads)
    return run_dir, result


def test_metrics_jsonl(finished_run):
    run_dir, _ = finished_run
    rows = read_metrics(run_dir)
    assert [(r["event"], r["step"]) for r in rows] == [
        ("train", 2),
        ("eval", 3),
        ("train", 4),
        ("train", 6),
        ("eval", 6),
    ]
    train = [r for r in rows if r["event"] == "train"]
    for row in train:
        assert {
            "loss",
            "lr",
            "tokens",
            "target_tokens",
            "tokens_per_s",
            "elapsed",
            "grad_norm",
            "mfu",
        } <= row.keys()
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
    assert train[0]["tokens"] < train[1]["tokens"] < train[2]["tokens"]  # cumulative
    evals = [r for r in rows if r["event"] == "eval"]
    assert all(
        r["eval_ppl"] == pytest.approx(2.718281828 ** r["eval_loss"], rel=1e-6) for r in evals
    )


def test_tensorboard_has_the_same_numbers(finished_run):
    run_dir, _ = finished_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    logged = [r["eval_loss"] for r in read_metrics(run_dir) if r["event"] == "eval"]
    assert [e.value for e in events.Scalars("eval/loss")] == pytest.approx(logged, rel=1e-6)
    assert {"train/lr", "train/tokens_per_s", "eval/ppl"} <= set(events.Tags()["scalars"])


def test_compute_json(finished_run):
    run_dir, result = finished_run
    compute = json.loads((run_dir / "compute.json").read_text())
    assert compute == result.compute
    last = [r for r in read_metrics(run_dir) if r["event"] == "train"][-1]
    assert compute["steps"] == 6
    assert (compute["tokens"], compute["target_tokens"]) == (last["tokens"], last["target_tokens"])
    # tiny GPT-2: n_layer 2, d 32, vocab 100, 64 positions; embeddings are lookups, the tied
    # output head is a matmul: N = all params - wte - wpe + lm_head = all - 64*32
    assert compute["matmul_params"] == compute["params"] - 64 * 32
    assert compute["train_flops"] > 6 * compute["matmul_params"] * compute["tokens"]
    assert compute["peak_flops_per_s_per_device"] == 1e10  # the seeded cache was used
    expected_mfu = compute["train_flops"] / (compute["train_step_seconds"] * 1e10)
    assert compute["mfu"] == pytest.approx(expected_mfu, rel=1e-2)
    assert compute["wall_seconds"] >= compute["train_step_seconds"] > 0
    assert "PaLM" in compute["flops_formula"]


def test_resume_cuts_metrics_back(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"event": "train", "step": 1}\n{"event": "train", "step": 2}\n{"event": "tr'
    )
    logger = RunLogger(tmp_path, enabled=True, start_step=1, max_steps=4)
    logger.log("train", {"step": 2, "loss": 1.0, "lr": 0.1, "tokens_per_s": 5.0})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert read_metrics(tmp_path)[-1]["loss"] == 1.0
