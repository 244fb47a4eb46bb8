"""A tiny OpenAI-compatible server on 127.0.0.1 whose answers and failures a test controls.

Loaded by the tests with ``runpy`` (it is not a test module). It speaks the minimal shapes of
``POST /v1/chat/completions``, ``POST /v1/completions`` (with ``echo`` + ``logprobs``: every
character of the prompt is one token of log-probability ``LOGPROB``) and ``GET /v1/models``,
records every request, and counts how many are in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOGPROB = -1.0


class FakeOpenAI:
    """``answer(prompt) -> text``; ``failures`` is a list of (status, headers) for the first
    requests; ``always`` fails every request with that status; ``delay`` seconds per answer."""

    def __init__(
        self,
        answer: Callable[[str], str] = lambda prompt: prompt,
        *,
        failures: list[tuple[int, dict[str, str]]] | None = None,
        always: tuple[int, dict[str, str]] | None = None,
        delay: float = 0.0,
        logprobs: bool = True,
        ignore_n: bool = False,
    ) -> None:
        self.answer = answer
        self.ignore_n = ignore_n
        self.failures = list(failures or [])
        self.always = always
        self.delay = delay
        self.logprobs = logprobs
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def generation_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    # ------------------------------------------------------------------ responses

    def _reply(
        self, path: str, body: dict[str, Any], authorization: str | None
    ) -> tuple[int, dict[str, str], dict]:
        with self._lock:
            failure = self.failures.pop(0) if self.failures else self.always
        if failure is not None:
            status, headers = failure
            # like a careless server, a 401 repeats the credentials it was sent
            said = f" for {authorization}" if status == 401 else ""
            return status, headers, {"error": {"message": f"fake failure {status}{said}"}}
        n = 1 if self.ignore_n else body.get("n", 1)
        if path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
            text = self.answer(prompt)
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
                for i in range(n)
            ]
            kind = "chat.completion"
        elif path.endswith("/completions"):
            prompt = body["prompt"]
            if body.get("echo"):
                if not self.logprobs:
                    return 400, {}, {"error": {"message": "echo is not supported"}}
                return 200, {}, self._echo(prompt, body)
            text = self.answer(prompt)
            choices = [
                {"index": i, "text": text, "finish_reason": "stop", "logprobs": None}
                for i in range(n)
            ]
            kind = "text_completion"
        else:
            return 404, {}, {"error": {"message": f"no route {path}"}}
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": n * len(text),
            "total_tokens": len(prompt) + n * len(text),
        }
        return (
            200,
            {},
            {
                "id": "fake",
                "object": kind,
                "created": 0,
                "model": body["model"],
                "choices": choices,
                "usage": usage,
            },
        )

    def _echo(self, prompt: str, body: dict[str, Any]) -> dict[str, Any]:
        tokens = [*prompt, "x"]  # the prompt, one token per character, then 1 generated
        logprobs = {
            "tokens": tokens,
            "token_logprobs": [None] + [LOGPROB] * (len(tokens) - 1),
            "top_logprobs": None,
            "text_offset": list(range(len(tokens))),
        }
        return {
            "id": "fake",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "text": prompt + "x", "finish_reason": "length", "logprobs": logprobs}
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": 1,
                "total_tokens": len(prompt) + 1,
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, headers: dict[str, str], payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.requests.append({"method": "GET", "path": self.path, "time": time.time()})
                self._send(200, {}, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    fake.requests.append(
                        {
                            "method": "POST",
                            "path": self.path,
                            "body": body,
                            "authorization": self.headers.get("Authorization"),
                            "time": time.time(),
                        }
                    )
                try:
                    time.sleep(fake.delay)
                    self._send(*fake._reply(self.path, body, self.headers.get("Authorization")))
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
