"""bench/train_throughput.py: its measuring pieces and its errors (the benchmark itself runs
for minutes; its figures are in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from lmforge.errors import UserError

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FlopPerToken:
    """Counts 1 FLOP per source token and 10 per target token (stand-in for FlopsCounter)."""

    def batch_flops(self, batch: dict[str, torch.Tensor]) -> int:
        mask = batch.get("attention_mask")
        source = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        return source + 10 * int((batch["labels"] != -100).sum())


def batch(source: list[int], target: list[int]) -> dict[str, torch.Tensor]:
    """A padded batch: source lengths -> attention_mask, target lengths -> labels (-100 pad)."""
    width, depth = max(source), max(target)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in source])
    labels = torch.tensor([[5] * n + [-100] * (depth - n) for n in target])
    return {"input_ids": torch.ones_like(mask), "attention_mask": mask, "labels": labels}


def test_step_clock_times_every_optimizer_step_while_open(bench: ModuleType) -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    with bench.StepClock() as clock:
        for _ in range(2):
            weight.grad = torch.ones(3)
            optimizer.step()
    optimizer.step()  # after the clock closed: not counted
    assert len(clock.times) == len(clock.cpu_times) == 2
    assert clock.times[0] <= clock.times[1]


def test_recording_collator_keeps_batches_in_order_and_passes_set_epoch(bench) -> None:
    epochs: list[int] = []

    class Collate:
        def set_epoch(self, epoch: int) -> None:
            epochs.append(epoch)

        def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
            return {"n": len(features)}

    recorder = bench.RecordingCollator(Collate())
    recorder.set_epoch(3)
    assert [recorder([{}] * n)["n"] for n in (2, 1)] == [2, 1]
    assert recorder.batches == [{"n": 2}, {"n": 1}] and epochs == [3]


def test_measure_counts_the_non_padding_tokens_of_the_timed_steps_only(bench) -> None:
    clock = bench.StepClock()
    clock.times = [10.0, 11.0, 13.0, 16.0]
    clock.cpu_times = [0.0, 0.0, 0.0, 10.0 * torch.get_num_threads()]
    recorder = bench.RecordingCollator(lambda features: features)
    warm = batch([50, 50], [9, 9])
    timed = [batch([3, 1], [2, 2]), batch([4, 4], [1, 3]), batch([2], [2])]
    recorder.batches = [warm, *timed, batch([7], [7])]  # the last was fetched ahead, not trained
    got = bench.measure("x", clock, recorder, warmup=1, steps=3, counter=FlopPerToken())
    assert got["seconds"] == 6.0  # end of step 1 -> end of step 4
    assert got["source_tokens"] == 3 + 1 + 4 + 4 + 2
    assert got["target_tokens"] == 2 + 2 + 1 + 3 + 2
    assert got["padded_tokens"] == (2 * 3 + 2 * 2) + (2 * 4 + 2 * 3) + (2 + 2)
    assert got["flops"] == 14 + 10 * 10
    assert got["padded_flops"] == (6 + 8 + 2) + 10 * (4 + 6 + 2)  # padding counted too
    assert got["cpu_share"] == pytest.approx(10 / 6)

    summary = bench.summarise("x", [got, {**got, "seconds": 12.0}], steps=3, peak=500.0)
    assert summary["seconds"] == 9.0  # the median of the repeats
    assert summary["tokens_per_s"] == pytest.approx((14 + 10) / 9.0)
    assert summary["padding"] == pytest.approx(1 - 24 / 28)
    assert summary["mfu"] == pytest.approx(114 / (9.0 * 500.0))
    assert summary["mfu_with_padding"] == pytest.approx(136 / (9.0 * 500.0))

    with pytest.raises(RuntimeError, match="x: 4 optimizer steps"):
        bench.measure("x", clock, recorder, warmup=2, steps=3, counter=FlopPerToken())


def test_data_without_a_target_field_names_the_file_and_field(bench, tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"source": "def f(): pass", "summary": "Do f."}) + "\n")
    with pytest.raises(
        UserError, match=r"pairs\.jsonl: .*missing target \(fields: source, summary\)"
    ):
        bench.jsonl_pairs(str(path))


def test_an_existing_json_output_needs_overwrite(bench, tmp_path) -> None:
    out = tmp_path / "figures.json"
    out.write_text("{}")
    with pytest.raises(UserError, match="figures.json exists; pass --overwrite"):
        bench.main(["--json", str(out)])
    assert out.read_text() == "{}"


def test_flags_below_one_are_refused(bench, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--steps", "0"])
    assert exit_info.value.code == 2
    assert "--steps must be 1 or more" in capsys.readouterr().err
