"""``lmforge serve``: mistakes are one line and exit 2 before anything listens; the real
command serves a run directory on a free port, answers curl-style requests, and stops on
SIGTERM after the request in flight."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory, tiny: Any, tokenizer: Any) -> Path:
    return tiny["save_model"](tmp_path_factory.mktemp("bert") / "bert", "bert", tokenizer)


def test_a_missing_model_directory_is_one_line(cli, tmp_path) -> None:
    result = cli("serve", tmp_path / "nothing")
    assert result.code == 2
    assert (
        result.err.strip()
        == f"lmforge: error: model directory {tmp_path / 'nothing'} does not exist"
    )


def test_an_encoder_cannot_be_served(cli, encoder_dir) -> None:
    result = cli("serve", encoder_dir)
    assert result.code == 2 and "encoder (masked LM), which cannot generate" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
        (["--request-timeout", "0"], "--request-timeout must be > 0"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--log-level", "loud"], "--log-level 'loud': choose one of critical, error"),
    ],
)
def test_bad_options_are_user_errors(cli, model_dirs, args, message) -> None:
    result = cli("serve", model_dirs["causal"], *args)
    assert result.code == 2 and message in result.err and len(result.err.splitlines()) == 1


def test_a_key_file_without_keys_is_refused(cli, model_dirs, tmp_path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# nothing yet\n", encoding="utf-8")
    result = cli("serve", model_dirs["causal"], "--api-key-file", keys)
    assert result.code == 2 and f"--api-key-file {keys} holds no key" in result.err


def test_a_port_in_use_is_a_user_error(cli, model_dirs) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli("serve", model_dirs["causal"], "--port", port)
    assert result.code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.err


@pytest.mark.slow
def test_serve_a_run_directory_then_stop_gracefully_on_sigterm(model_dirs, tmp_path) -> None:
    run = tmp_path / "runs" / "translate-demo"
    run.mkdir(parents=True)
    os.symlink(model_dirs["seq2seq"], run / "final")
    keys = tmp_path / "keys.txt"
    keys.write_text("secret\n", encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "lmforge", "serve", str(run), "--port", "0"]
    command += ["--api-key-file", str(keys), "--runs-dir", str(tmp_path / "runs")]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in server.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)$", line.strip()):
                url = found.group(1)
                break
        else:
            pytest.fail("the server did not start: " + "".join(lines))
        assert "serving translate-demo" in lines[-1]
        key = {"Authorization": "Bearer secret"}
        httpx_get = lambda path: httpx.get(url + path, headers=key, timeout=60)  # noqa: E731
        assert httpx_get("/health").json()["model"] == "translate-demo"
        assert httpx_get("/v1/models").json()["data"][0]["id"] == "translate-demo"
        assert httpx_get("/").headers["content-type"].startswith("text/html")
        body = {
            "model": "translate-demo",
            "messages": [{"role": "user", "content": "good morning"}],
            "max_tokens": 120,
            "min_tokens": 120,
        }
        answers: list[httpx.Response] = []
        flight = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{url}/v1/chat/completions", json=body, headers=key, timeout=120)
            )
        )
        flight.start()
        # wait until the request is being generated: by the clock, not by a count of polls,
        # which a loaded machine can spend before the request even reaches the server
        deadline = time.monotonic() + 60
        while "lmforge_running_sequences 1" not in httpx_get("/metrics").text:
            assert not answers, "the request finished before the server was seen running it"
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.005)
        server.send_signal(signal.SIGTERM)
        flight.join(120)
        assert answers and answers[0].status_code == 200
        assert answers[0].json()["usage"]["completion_tokens"] == 120
        assert server.wait(60) == 0
        assert "lmforge: stopped (SIGTERM)" in server.stderr.read()  # type: ignore[union-attr]
    finally:
        if server.poll() is None:
            server.kill()
