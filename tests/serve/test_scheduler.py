"""Batching and limits: how waiting jobs become batches, concurrent requests sharing one
generate call, a full queue (429), a client leaving mid-stream, timeouts, graceful stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from lmforge.generation import DecodingSettings, generate
from lmforge.serve.batch import Job, Sampling
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.scheduler import QueueFull, Scheduler

LONG = {"max_tokens": 400, "min_tokens": 400, "temperature": 0}  # seconds of work, no early eos


def fake_job(n: int = 1, sampling: Sampling | None = None) -> Job:
    return Job([5, 6], n, 4, [], sampling or Sampling(), False, lambda event: None)


def scheduler(**limits: Any) -> Scheduler:
    limits = {"max_batch_size": 4, "max_wait": 0.0, "max_queue": 8, **limits}
    return Scheduler(None, None, ServerMetrics(), **limits)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- batches


def test_a_batch_takes_the_oldest_jobs_group_as_far_as_rows_fit() -> None:
    queue = scheduler()
    hot = Sampling(do_sample=True, temperature=0.7)
    jobs = [fake_job(), fake_job(sampling=hot), fake_job(n=2), fake_job(n=2), fake_job()]
    queue.submit(jobs)
    # jobs[1] samples (another group); jobs[3] would make 5 rows, jobs[4] still fits
    assert queue._take() == [jobs[0], jobs[2], jobs[4]]
    assert queue._take() == [jobs[1]]  # the oldest is always in the next batch
    assert queue._take() == [jobs[3]]


def test_a_prompt_whose_n_is_more_than_the_batch_size_runs_whole() -> None:
    queue = scheduler(max_batch_size=1)
    jobs = [fake_job(n=3), fake_job()]
    queue.submit(jobs)
    assert queue._take() == [jobs[0]] and queue._take() == [jobs[1]]
    assert queue.depth == 0


def test_seeded_sampling_jobs_run_alone_and_greedy_ones_ignore_the_seed() -> None:
    queue = scheduler()
    seeded = Sampling(do_sample=True, seed=1)
    jobs = [fake_job(sampling=seeded), fake_job(sampling=seeded), fake_job(), fake_job()]
    queue.submit(jobs)
    assert [queue._take() for _ in range(3)] == [[jobs[0]], [jobs[1]], [jobs[2], jobs[3]]]


def test_at_first_a_job_waits_max_wait_for_others() -> None:
    queue = scheduler(max_wait=0.2)
    queue.submit([fake_job()])
    start = time.monotonic()
    assert len(queue._take()) == 1 and 0.19 <= time.monotonic() - start < 0.4
    queue._last_rows = 0  # as if nothing had run: the wait is max_wait
    queue.submit([fake_job()])
    threading.Timer(0.1, lambda: queue.submit([fake_job()])).start()
    start = time.monotonic()
    assert len(queue._take()) == 2 and 0.19 <= time.monotonic() - start < 0.4


def test_after_a_batch_of_k_rows_the_next_waits_for_k_up_to_a_tenth_of_its_time() -> None:
    queue = scheduler(max_wait=0.05)
    queue._last_rows, queue._last_seconds = 3, 6.0  # a batch of 3 rows took 6 s
    queue._free_since = time.monotonic()
    queue.submit([fake_job()])
    for delay in (0.1, 0.15):  # later than max_wait, sooner than 0.6 s
        threading.Timer(delay, lambda: queue.submit([fake_job()])).start()
    start = time.monotonic()
    assert len(queue._take()) == 3 and 0.19 <= time.monotonic() - start < 0.55
    queue._free_since = time.monotonic()  # nobody comes back: the wait ends at 0.6 s
    queue.submit([fake_job()])
    start = time.monotonic()
    assert len(queue._take()) == 1 and 0.59 <= time.monotonic() - start < 1.0
    queue._free_since = time.monotonic() - 1.0  # a quiet spell: back to max_wait
    queue.submit([fake_job()])
    start = time.monotonic()
    assert len(queue._take()) == 1 and time.monotonic() - start < 0.3


def test_a_full_batch_does_not_wait() -> None:
    queue = scheduler(max_wait=10.0)
    queue.submit([fake_job(n=2), fake_job(n=2)])
    start = time.monotonic()
    assert len(queue._take()) == 2 and time.monotonic() - start < 1


def test_a_full_queue_refuses_all_of_a_requests_jobs_and_cancel_frees_places() -> None:
    queue = scheduler(max_queue=3)
    first = [fake_job(), fake_job()]
    queue.submit(first)
    with pytest.raises(QueueFull) as full:
        queue.submit([fake_job(), fake_job()])
    assert full.value.retry_after >= 1 and queue.depth == 2
    queue.cancel(first)
    assert queue.depth == 0 and all(job.cancelled.is_set() for job in first)
    queue.submit([fake_job(), fake_job(), fake_job()])


# --------------------------------------------------------------------------- over HTTP


def test_concurrent_requests_share_one_batch_and_get_their_own_answers(serve, loaded) -> None:
    prompts = ["hello", "we are going to the park", "thank you", "good morning everyone"]
    model, tok = loaded["causal"]
    alone = [
        g[0].text
        for g in generate(model, tok, prompts, DecodingSettings(max_new_tokens=6), raw=True)
    ]
    with serve("causal", model_name="m", max_batch_size=4, max_wait_ms=5000) as server:
        client = server.client()

        def ask(prompt: str, stream: bool) -> str:
            answer = client.completions.create(
                model="m", prompt=prompt, max_tokens=6, temperature=0, stream=stream
            )
            chunks = list(answer) if stream else [answer]
            return "".join(c.choices[0].text for c in chunks)

        together: dict[int, str] = {}
        threads = [
            threading.Thread(
                target=lambda i=i: together.__setitem__(i, ask(prompts[i], i % 2 == 1))
            )
            for i in range(len(prompts))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [together[i] for i in range(len(prompts))] == alone
        # four requests, two of them streams, filled the batch within max_wait: one call (the
        # worker counts a batch after its last token is handed out, so give it a moment)
        deadline = time.monotonic() + 10
        while server.metrics.batches.value() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.metrics.batches.value() == 1
        assert server.metrics.batch_rows.value() == len(prompts)


def test_queue_full_is_429_and_a_client_leaving_mid_stream_frees_its_place(serve) -> None:
    with serve("causal", model_name="m", max_batch_size=1, max_queue=1, max_wait_ms=0) as server:
        metrics = server.metrics
        body = {"model": "m", "prompt": "we are going to the park", "stream": True, **LONG}
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as held:
            lines = held.iter_lines()  # kept: dropping the iterator would close the stream
            assert next(lines).startswith("data: ")  # generating now: the batch is full
            waiting: dict[str, Any] = {}
            queued = threading.Thread(
                target=lambda: waiting.setdefault(
                    "response", server.post("/v1/completions", {"model": "m", "prompt": "x"})
                )
            )
            queued.start()
            server.wait_for(lambda: metrics.queue_depth.current == 1)
            refused = server.post("/v1/completions", {"model": "m", "prompt": "y"})
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")
            with pytest.raises(openai.RateLimitError):
                server.client().completions.create(model="m", prompt="z")
        # the stream is closed: its generation stops and the queued request gets the model
        queued.join(30)
        assert waiting["response"].status_code == 200
        assert metrics.cancelled.value() == 1
        server.wait_for(lambda: metrics.running.current == 0)
        generated = metrics.completion_tokens.value()
        assert generated < 400 + 16  # the held request stopped long before its 400 tokens
        time.sleep(0.2)
        assert metrics.completion_tokens.value() == generated  # and nothing runs on


def test_a_request_past_its_timeout_is_stopped_with_504(serve) -> None:
    with serve("causal", model_name="m", request_timeout=0.3) as server:
        response = server.post("/v1/completions", {"model": "m", "prompt": "hi", **LONG})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "timeout"
        with pytest.raises(openai.APIError, match="--request-timeout"):
            list(
                server.client().completions.create(
                    model="m", prompt="hi", stream=True, max_tokens=400, extra_body=LONG
                )
            )
        assert server.metrics.cancelled.value() == 2
        server.wait_for(lambda: server.metrics.running.current == 0)


def test_a_graceful_stop_lets_the_request_in_flight_finish(serve) -> None:
    with serve("seq2seq", model_name="m") as server:
        result: dict[str, Any] = {}
        body = {"model": "m", "prompt": "hi", "max_tokens": 60, "min_tokens": 60}
        request = threading.Thread(
            target=lambda: result.setdefault("response", server.post("/v1/completions", body))
        )
        request.start()
        server.wait_for(lambda: server.metrics.running.current > 0)
        server.stop()
        request.join(30)
        assert result["response"].status_code == 200
        assert result["response"].json()["usage"]["completion_tokens"] == 60
        assert not server.thread.is_alive()
        with pytest.raises(httpx.ConnectError):
            server.get("/health")
