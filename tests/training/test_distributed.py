"""Two CPU processes (torchrun, gloo) train to the same weights as one with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY_RUN = Path(__file__).with_name("tiny_run.py")
ARGS = ["--max-steps", "4", "--dropout", "0", "--eval-every", "2", "--save-every", "2"]
# Adam divides each gradient by its own scale, so the float noise of a gradient that is zero in
# exact arithmetic (attention key biases) becomes a full step; eps 1e-6 keeps such noise small.
ARGS += ["--lr", "1e-3", "--eps", "1e-6"]


def _rows(run_dir: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, tiny, one_thread):
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    done = subprocess.run(
        [*launch, str(TINY_RUN), str(ddp), *ARGS, "--batch-size", "2"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    single = tmp_path / "single"
    tiny["main"]([str(single), *ARGS, "--batch-size", "4"])

    expected = load_file(single / "final" / "model.safetensors")
    got = load_file(ddp / "final" / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=0, msg=name)
    for a, b in zip(_rows(ddp, "train"), _rows(single, "train"), strict=True):
        assert (a["step"], a["tokens"], a["target_tokens"]) == (
            b["step"],
            b["tokens"],
            b["target_tokens"],
        )
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # eval batches of 2 over 2 processes (one pads its last round) vs batches of 4 in one
    for a, b in zip(_rows(ddp, "eval"), _rows(single, "eval"), strict=True):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
    # only the main process writes: one rank's RNG file per checkpoint per process, one model
    state = ddp / "checkpoints" / "step-000004" / "training_state"
    assert sorted(p.name for p in state.glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    assert json.loads((ddp / "compute.json").read_text())["num_processes"] == 2
