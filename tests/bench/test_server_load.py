"""bench/server_load.py: its clients, figures and report, against a stub server that answers
like ``lmforge serve`` (the benchmark itself runs for minutes; its figures are in
docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lmforge.errors import UserError

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "server_load.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("server_load", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Stub:
    """Answers completions after ``delay`` seconds with max_tokens tokens (``short`` fewer);
    records the most requests it held at once."""

    def __init__(self) -> None:
        self.delay, self.short, self.in_flight, self.most, self.prompts = 0.02, 0, 0, 0, []

    def app(self) -> Any:
        from fastapi import FastAPI
        from fastapi.responses import PlainTextResponse

        app = FastAPI()

        @app.get("/metrics")
        async def metrics() -> PlainTextResponse:  # as if every 2 requests shared a batch
            done = len(self.prompts)
            text = f"lmforge_batches_total {done // 2}\nlmforge_batch_sequences_total {done}\n"
            return PlainTextResponse(text)

        @app.post("/v1/completions")
        async def complete(body: dict[str, Any]) -> dict[str, Any]:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.prompts.append(body["prompt"])
            await asyncio.sleep(self.delay)
            self.in_flight -= 1
            return {"usage": {"completion_tokens": body["max_tokens"] - self.short}}

        return app


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    import uvicorn

    stub = Stub()
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(stub.app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield stub, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def test_percentiles_and_throughput_of_a_level(bench) -> None:
    figures = bench.summarize([1.0, 2.0, 3.0, 4.0, 5.0], tokens=80, seconds=4.0)
    assert figures["requests"] == 5 and figures["requests_per_s"] == 1.25
    assert figures["tokens_per_s"] == 20.0
    assert figures["p50_s"] == 3.0 and figures["p99_s"] == pytest.approx(4.96)


def test_clients_keep_that_many_requests_in_flight(bench, stub) -> None:
    server, url = stub
    level = asyncio.run(bench.drive(url, ["a", "b", "c"], clients=4, requests=12, max_tokens=5))
    assert level["requests"] == 12 and server.most == 4
    assert sorted(server.prompts) == sorted(["a", "b", "c"] * 4)  # prompts are cycled
    assert level["tokens_per_s"] == pytest.approx(60 / level["seconds"])


def test_an_answer_of_the_wrong_length_stops_the_benchmark(bench, stub) -> None:
    server, url = stub
    server.short = 1
    with pytest.raises(RuntimeError, match="4 tokens, not 5"):
        asyncio.run(bench.drive(url, ["a"], clients=1, requests=1, max_tokens=5))


def test_main_reports_each_mode_and_the_ratio(bench, stub, monkeypatch, tmp_path) -> None:
    server, url = stub

    @contextlib.contextmanager
    def start_server(model_dir: Path, batch_size: int, threads: int, wait: float) -> Iterator[str]:
        server.delay = 0.005 if batch_size > 1 else 0.02
        yield url

    monkeypatch.setattr(bench, "start_server", start_server)
    monkeypatch.setattr(bench, "save_model", lambda directory, *args: directory)
    monkeypatch.setattr(bench, "prompts_for", lambda args, harvested: ["p1", "p2"])
    out = tmp_path / "load.json"
    result = bench.main(["--levels", "1", "32", "--requests", "8", "--json", str(out)])
    on, off = result["results"]["batching on"], result["results"]["batching off"]
    assert set(on) == set(off) == {"1", "32"} and on["32"]["requests"] == 8
    assert on["32"]["mean_batch"] == 2
    for level in ("1", "32"):
        ratio = on[level]["tokens_per_s"] / off[level]["tokens_per_s"]
        assert result["tokens_per_s_ratio"][level] == ratio
    assert result["goal_met"] == (result["tokens_per_s_ratio"]["32"] >= 3)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    with pytest.raises(UserError, match="already exists"):
        bench.main(["--json", str(out)])


def test_levels_must_be_positive(bench) -> None:
    with pytest.raises(UserError, match="at least 1"):
        bench.parse_args(["--levels", "0"])
