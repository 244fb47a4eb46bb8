"""Tiny saved models and a real uvicorn server on 127.0.0.1 for the serving tests.

``serve(kind, **options)`` (a fixture) runs a uvicorn server for the tiny model of ``kind``
("seq2seq", "causal") or a model directory, on a socket bound to a free loopback port in a
thread of the test process, and stops it as SIGTERM would (graceful) when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

TINY = Path(__file__).resolve().parents[1] / "backends" / "tiny_models.py"
CARD = {
    "objective": "seq2seq_sft",
    "tasks": [{"task": "translate", "template": {}}],
    "max_source_length": 64,
    "max_target_length": 32,
}


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    return runpy.run_path(str(TINY))


@pytest.fixture(scope="session")
def tokenizer(tiny: dict[str, Any]) -> Any:
    return tiny["tokenizer"]()


@pytest.fixture(scope="session")
def model_dirs(
    tmp_path_factory: pytest.TempPathFactory, tiny: dict[str, Any], tokenizer: Any
) -> dict[str, Path]:
    """``seq2seq``: a T5 fine-tuned (per its card) for translation; ``causal``: a GPT-2 with
    no card, served as plain text."""
    root = tmp_path_factory.mktemp("models")
    return {
        "seq2seq": tiny["save_model"](root / "t5", "t5", tokenizer, CARD),
        "causal": tiny["save_model"](root / "gpt2", "gpt2", tokenizer),
    }


@dataclass
class Server:
    url: str
    app: Any
    server: Any
    thread: threading.Thread

    @property
    def metrics(self) -> Any:
        return self.app.state.metrics

    def client(self, key: str = "none", **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    @staticmethod
    def wait_for(condition: Any, timeout: float = 20.0) -> None:
        """Poll ``condition()`` until it is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.005)


@contextlib.contextmanager
def running(app: Any) -> Iterator[Server]:
    """A real uvicorn server for ``app`` on a free loopback port, stopped gracefully after."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    handle = Server(f"http://127.0.0.1:{port}", app, server, thread)
    try:
        yield handle
    finally:
        handle.stop()


def make_app(model_dir: Path, **options: Any) -> Any:
    from lmforge.serve import ServeOptions, create_app

    runs_dir = options.pop("runs_dir", model_dir.parent / "no-runs")
    return create_app(model_dir, ServeOptions(**options), runs_dir=runs_dir)


@pytest.fixture(scope="session")
def serve(model_dirs: dict[str, Path]) -> Any:
    """``with serve("causal", max_queue=1) as server:`` a running server for that model."""

    @contextlib.contextmanager
    def start(model: str | Path, **options: Any) -> Iterator[Server]:
        path = model_dirs[model] if isinstance(model, str) else model
        with running(make_app(path, **options)) as server:
            yield server

    return start


@pytest.fixture(scope="session")
def loaded(model_dirs: dict[str, Path]) -> dict[str, tuple[Any, Any]]:
    """(model, tokenizer) of each model directory, loaded once."""
    from lmforge.models import load_pretrained

    return {kind: load_pretrained(path) for kind, path in model_dirs.items()}


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a real (tiny) training run, an evaluation run and a non-run folder."""
    root = tmp_path_factory.mktemp("runs")
    tiny_run = runpy.run_path(str(Path(__file__).resolve().parents[1] / "training" / "tiny_run.py"))
    tiny_run["run"](
        root / "tiny-gpt2", eval_data=tiny_run["dataset"](n=4, seed=1), eval_every=2, max_steps=4
    )
    evaluation = root / "eval-bleu"
    evaluation.mkdir()
    results = {"tiny": {"pairs": {"metrics": {"bleu": {"score": 12.5, "signature": "nrefs:1"}}}}}
    (evaluation / "metrics.json").write_text(json.dumps({"results": results}), encoding="utf-8")
    (root / "notes").mkdir()
    return root
