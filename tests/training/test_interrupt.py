"""Ctrl-C: the run finishes its step, checkpoints, exits 130; the same command resumes it."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file

from lmforge.training import compute
from lmforge.training.checkpoint import COMPLETE_MARKER
from lmforge.training.loop import GracefulInterrupt

MAX_STEPS = 12


@pytest.fixture(autouse=True)
def sigint_handled() -> Iterator[None]:
    """Python's Ctrl-C handler, as in a terminal, for these tests and the processes they fork:
    a test run started as a shell's background job (CI under ``&``) has SIGINT ignored."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _train_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    # the last line may be half-written while the run goes on
    rows = [json.loads(line) for line in lines if line.endswith("}")]
    return [r for r in rows if r["event"] == "train"]


def _config(tmp_path: Path, run_dir: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        words = "the cat sat on a mat and the dog ran to it".split()
        corpus.write_text(
            "\n".join(" ".join(words[(i + j) % len(words)] for j in range(9)) for i in range(60))
        )
    config = {
        "run_dir": str(run_dir),
        "seed": 1,
        "data": [{"path": str(corpus), "task": "text", "split": {"validation": 0, "test": 0}}],
        "tokenizer": {"vocab_size": 400, "min_frequency": 1},
        "model": {"family": "gpt2", "preset": "tiny", "dropout": 0.1},  # RNG state matters
        "objective": {"block_size": 16},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 4,
            "log_every": 1,
            "save_every": 1000,
            "precision": "fp32",
        },
    }
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.contextmanager
def _running(*processes: multiprocessing.Process) -> Iterator[None]:
    """Start the processes; whatever happens, none is left running afterwards."""
    for process in processes:
        process.start()
    try:
        yield
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()


def _wait_for_two_steps(run_dir: Path, *processes: multiprocessing.Process) -> None:
    deadline = time.monotonic() + 120
    while len(_train_rows(run_dir)) < 2:
        assert all(p.is_alive() for p in processes), "the run ended before two steps"
        assert time.monotonic() < deadline, "timed out waiting for two logged steps"
        time.sleep(0.005)


class _SlowCollator:
    """The run's collator, sleeping before each batch: keeps the run early while Ctrl-C lands."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def __call__(self, rows: list[dict[str, Any]]) -> Any:
        time.sleep(self.seconds)
        return self.inner(rows)

    def __getattr__(self, name: str) -> Any:  # set_epoch and the rest
        return getattr(self.inner, name)


def _pretrain_slowly(config: Path, stderr: Path) -> None:
    """``lmforge pretrain CONFIG`` in a forked child, its batches slowed down."""
    import lmforge.runs
    from lmforge.cli.main import main

    sys.stderr = open(stderr, "w", buffering=1)  # noqa: SIM115 (pytest's capture stays behind)

    train = lmforge.runs.train

    def slow_train(model: Any, tokenizer: Any, dataset: Any, collator: Any, **kw: Any) -> Any:
        return train(model, tokenizer, dataset, _SlowCollator(collator, 0.1), **kw)

    lmforge.runs.train = slow_train
    main(["pretrain", str(config)])


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "by"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_or_sigterm_checkpoints_exits_130_and_the_same_command_resumes(
    tmp_path, cli, monkeypatch, one_thread, signum, by
):
    monkeypatch.setattr(compute, "measure_matmul_peak", lambda device, dtype: 1e10)
    reference = tmp_path / "reference"
    assert cli("pretrain", _config(tmp_path, reference)).code == 0

    run = tmp_path / "run"
    config = _config(tmp_path, run)
    # A forked child runs the command (no second interpreter start-up); SIGINT is what a
    # terminal sends on Ctrl-C.
    stderr = tmp_path / "stderr.txt"
    fork = multiprocessing.get_context("fork")
    child = fork.Process(target=_pretrain_slowly, args=(config, stderr))
    with _running(child):
        _wait_for_two_steps(run, child)
        os.kill(child.pid, signum)
        child.join(60)
    assert child.exitcode == 130

    stopped = _train_rows(run)[-1]["step"]
    assert 2 <= stopped < MAX_STEPS
    checkpoint = run / "checkpoints" / f"step-{stopped:06d}"
    assert (checkpoint / COMPLETE_MARKER).exists()
    assert not (run / "final").exists()
    err = stderr.read_text().splitlines()
    assert err[-1] == "lmforge: interrupted"
    assert err[-2] == (
        f"lmforge: stopped at step {stopped} ({by}); checkpoint saved in {checkpoint}; "
        "run the same command again to resume"
    )

    resumed = cli("pretrain", config)
    assert resumed.code == 0, resumed.err
    # rich wraps long lines at the console width, even inside a path
    said = "".join(resumed.err.split())
    assert "".join(f"resuming from {checkpoint} (step {stopped})".split()) in said
    expected = load_file(reference / "final" / "model.safetensors")
    got = load_file(run / "final" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert tensor.equal(got[name]), name
    losses = [(r["step"], r["loss"]) for r in _train_rows(run)]
    assert losses == [(r["step"], r["loss"]) for r in _train_rows(reference)]


def _rank(tiny: dict[str, Any], rank: int, port: int, argv: list[str]) -> None:
    """One of two processes training together (the environment torchrun would give)."""
    from accelerate.state import PartialState

    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": 2, "LOCAL_WORLD_SIZE": 2}
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    PartialState._reset_state()  # the forked test process's single-process state
    try:
        tiny["main"](argv)
    except KeyboardInterrupt:
        sys.exit(130)


@pytest.mark.slow
def test_ctrl_c_on_one_process_stops_every_process_at_the_same_step(tmp_path, tiny, one_thread):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "ddp"
    argv = [str(run), "--max-steps", "40", "--batch-size", "2", "--save-every", "1000"]
    argv += ["--eval-every", "1000", "--slow", "0.05"]
    fork = multiprocessing.get_context("fork")
    ranks = [fork.Process(target=_rank, args=(tiny, r, port, argv)) for r in (0, 1)]
    with _running(*ranks):
        _wait_for_two_steps(run, *ranks)
        os.kill(ranks[1].pid, signal.SIGINT)  # only the second process hears it
        deadline = time.monotonic() + 60  # processes that disagree on the step would hang
        for process in ranks:
            process.join(max(0.0, deadline - time.monotonic()))
    assert [p.exitcode for p in ranks] == [130, 130]
    stopped = _train_rows(run)[-1]["step"]
    assert stopped < 40
    # the checkpoint is saved by both together, so both stopped after the same step
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == [f"step-{stopped:06d}"]
    state = checkpoints[0] / "training_state"
    assert (checkpoints[0] / COMPLETE_MARKER).exists()
    assert sorted(p.name for p in state.glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


def test_first_sigint_is_a_request_the_second_interrupts_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    with GracefulInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_first_sigterm_is_a_request_and_the_default_comes_back_for_the_second():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert interrupt.requested and interrupt.by == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second one ends it
    assert signal.getsignal(signal.SIGTERM) is before


def test_no_handler_outside_the_main_thread_or_where_sigint_is_ignored():
    before = signal.getsignal(signal.SIGINT)
    seen: list[Any] = []

    def in_thread() -> None:
        with GracefulInterrupt() as interrupt:
            seen.append(signal.getsignal(signal.SIGINT))
        seen.append(interrupt.requested)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert seen == [before, False]

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with GracefulInterrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
