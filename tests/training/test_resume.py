"""A run killed with SIGKILL and resumed ends bitwise identical to an uninterrupted run."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lmforge.training.checkpoint import COMPLETE_MARKER

# 12 steps of 4 examples over 16 examples: 3 epochs; dropout on, so torch RNG state matters
ARGS = ["--max-steps", "12", "--save-every", "3", "--eval-every", "4", "--dropout", "0.1"]


def _train_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["event"] == "train"]


def _wait_for(path: Path, child: multiprocessing.Process, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert child.is_alive(), f"the run ended before {path} appeared"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


@pytest.mark.slow
def test_killed_twice_and_resumed_equals_uninterrupted(tmp_path, tiny, one_thread, capsys):
    reference = tmp_path / "reference"
    tiny["main"]([str(reference), *ARGS])

    run = tmp_path / "run"
    # Each killed run is a child process started by fork: the same call as the script's
    # command line, without paying the interpreter and import start-up again.
    fork = multiprocessing.get_context("fork")

    # Kill 1: from outside, as soon as the step-3 checkpoint is complete (batches are slowed
    # down so the run is still early in its 12 steps).
    child = fork.Process(target=tiny["main"], args=([str(run), *ARGS, "--slow", "0.5"],))
    child.start()
    _wait_for(run / "checkpoints" / "step-000003" / COMPLETE_MARKER, child)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    assert not (run / "final").exists()

    # Kill 2: the resumed run kills itself when it first meets example 0 in epoch 2 (steps 9-12),
    # in the middle of a step.
    flag = tmp_path / "died"
    die = ["--die-at", "0:2", "--die-flag", str(flag)]
    child = fork.Process(target=tiny["main"], args=([str(run), *ARGS, *die],))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    assert flag.exists() and not (run / "final").exists()

    # Leftovers of a save killed halfway must be ignored and cleaned up.
    checkpoints = run / "checkpoints"
    newest = sorted(checkpoints.glob("step-*"))[-1]
    shutil.copytree(newest, checkpoints / ".step-000011.tmp")
    shutil.copytree(newest, checkpoints / "step-000011")
    (checkpoints / "step-000011" / COMPLETE_MARKER).unlink()

    # The last resume runs to the end in this process.
    capsys.readouterr()
    tiny["main"]([str(run), *ARGS])
    assert "resuming from" in capsys.readouterr().err
    assert not (checkpoints / ".step-000011.tmp").exists()
    assert not (checkpoints / "step-000011").exists()

    expected = load_file(reference / "final" / "model.safetensors")
    got = load_file(run / "final" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert tensor.equal(got[name]), name
    # metrics.jsonl was cut back at each resume: the same 12 losses, in order, no duplicates
    assert _train_losses(run) == _train_losses(reference)
    state = json.loads((checkpoints / "step-000012" / "training_state" / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batches_done"]) == (12, 2, 4)
