"""The completions and chat handlers: a request -> jobs for the scheduler -> an answer.

A handler reads and validates the body, encodes each prompt, queues one job per prompt and
waits for the worker's events (on the event loop: it never touches the model). Without
``stream`` it answers once every choice is done; with it, it sends each piece as a
Server-Sent Event as it arrives. A request that outlives ``--request-timeout``, or whose
client goes away, has its jobs cancelled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Literal

from fastapi import Request
from fastapi.sse import EventSourceResponse, format_sse_event

from lmforge.generation import Generation
from lmforge.serve.batch import Done, Event, Failed, Job, Piece, Sampling
from lmforge.serve.limits import ServeOptions
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.prompts import PromptEncoder
from lmforge.serve.scheduler import QueueFull, Scheduler
from lmforge.serve.schemas import (
    APIError,
    ChatCompletionRequest,
    ChunkMaker,
    CompletionRequest,
    Usage,
    chat_body,
    completion_body,
    new_id,
    parse_request,
)

MAX_STOPS = 4  # as OpenAI
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for completions


class Completions:
    """The completions and chat handlers: request -> jobs -> response or event stream."""

    def __init__(
        self,
        options: ServeOptions,
        encoder: PromptEncoder,
        scheduler: Scheduler,
        metrics: ServerMetrics,
    ) -> None:
        self.options, self.encoder = options, encoder
        self.scheduler, self.metrics = scheduler, metrics

    async def answer(self, request: Request, kind: Literal["completion", "chat"]) -> Any:
        raw = await read_body(request, self.options.max_body_bytes)
        schema = CompletionRequest if kind == "completion" else ChatCompletionRequest
        body = parse_request(schema, raw)
        if body.model != self.options.model_name:
            raise unknown_model(body.model, self.options.model_name)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        jobs = self._jobs(body, kind, partial(_deliver, loop, events))
        try:
            self.scheduler.submit(jobs)
        except QueueFull as full:
            raise APIError(
                429,
                f"the server is busy: its queue of {self.options.max_queue} prompts is full; "
                f"retry after {full.retry_after} s",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(full.retry_after)},
            ) from None
        self.metrics.prompt_tokens.inc(sum(len(job.prompt_ids) for job in jobs))
        deadline = loop.time() + self.options.request_timeout
        response_id, created = new_id(kind), int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            maker = ChunkMaker(kind, response_id, self.options.model_name, created, include_usage)
            return EventSourceResponse(
                self._stream(jobs, events, maker, deadline),
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        results = await self._collect(jobs, events, deadline)
        usage = _usage(jobs, results)
        make = completion_body if kind == "completion" else chat_body
        return make(response_id, self.options.model_name, results, usage, created)

    def _jobs(self, body: Any, kind: str, emit: Callable[[Event], None]) -> list[Job]:
        """One job per prompt, after every check on the request."""
        options = self.options
        n = body.n if body.n is not None else 1
        if n > options.max_n:
            raise APIError(
                400, f"n is {n}; this server allows at most {options.max_n} (--max-n)", param="n"
            )
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > MAX_STOPS or any(not s for s in stop):
            raise APIError(400, f"stop: give at most {MAX_STOPS} non-empty strings", param="stop")
        if kind == "chat":
            prompts = [self.encoder.chat_ids(body.messages)]
            wheres = ["messages"]
            requested = body.max_completion_tokens or body.max_tokens
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            default = self.encoder.room(prompts[0], options.max_tokens_cap)
        else:
            texts = _prompts(body.prompt)
            if len(texts) > options.max_queue:
                raise APIError(
                    400,
                    f"prompt: at most {options.max_queue} prompts per request (--max-queue)",
                    param="prompt",
                )
            wheres = [f"prompt {i}" if len(texts) > 1 else "prompt" for i in range(len(texts))]
            prompts = [
                self.encoder.completion_ids(t, w) for t, w in zip(texts, wheres, strict=True)
            ]
            requested, param = body.max_tokens, "max_tokens"
            default = min(DEFAULT_COMPLETION_TOKENS, options.max_tokens_cap)
        max_tokens = requested if requested is not None else default
        if max_tokens > options.max_tokens_cap:
            raise APIError(
                400,
                f"{param} is {max_tokens}; this server allows at most "
                f"{options.max_tokens_cap} (--max-tokens-cap)",
                param=param,
            )
        if body.min_tokens > max_tokens:
            raise APIError(
                400,
                f"min_tokens {body.min_tokens} is more than {param} {max_tokens}",
                param="min_tokens",
            )
        for ids, where in zip(prompts, wheres, strict=True):
            self.encoder.check_length(ids, max_tokens, where)
        temperature = 1.0 if body.temperature is None else body.temperature
        do_sample = temperature > 0
        sampling = Sampling(
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=body.top_p if do_sample and body.top_p is not None else 1.0,
            top_k=body.top_k if do_sample else 0,
            min_tokens=body.min_tokens,
            seed=body.seed if do_sample else None,
        )
        return [
            Job(ids, n, max_tokens, stop, sampling, bool(body.stream), emit, first_index=i * n)
            for i, ids in enumerate(prompts)
        ]

    async def _next(self, events: asyncio.Queue[Event], deadline: float) -> Event:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        return await asyncio.wait_for(events.get(), left)

    def _timed_out(self, jobs: list[Job]) -> APIError:
        self._cancel(jobs)
        return APIError(
            504,
            f"the request took longer than {self.options.request_timeout:g} s "
            "(--request-timeout) and was stopped",
            type="timeout_error",
            code="timeout",
        )

    def _cancel(self, jobs: list[Job]) -> None:
        self.scheduler.cancel(jobs)
        self.metrics.cancelled.inc()

    async def _collect(
        self, jobs: list[Job], events: asyncio.Queue[Event], deadline: float
    ) -> list[Generation]:
        total = sum(job.n for job in jobs)
        results: dict[int, Generation] = {}
        try:
            while len(results) < total:
                event = await self._next(events, deadline)
                if isinstance(event, Failed):
                    for job in jobs:  # over already: not a cancellation
                        job.cancelled.set()
                    raise APIError(500, event.message, type="server_error")
                if isinstance(event, Done):
                    results[event.index] = event.generation
        except TimeoutError:
            raise self._timed_out(jobs) from None
        finally:
            if len(results) < total and not all(j.cancelled.is_set() for j in jobs):
                self._cancel(jobs)
        return [results[i] for i in range(total)]

    async def _stream(
        self,
        jobs: list[Job],
        events: asyncio.Queue[Event],
        maker: ChunkMaker,
        deadline: float,
    ) -> AsyncIterator[bytes]:
        """The response's Server-Sent Events; leaving early (the client went away, a
        timeout) cancels the jobs, which frees their places and ends their rows."""
        total = sum(job.n for job in jobs)
        results: dict[int, Generation] = {}
        try:
            for index in range(total):
                if (start := maker.start(index)) is not None:
                    yield _sse(start)
            while len(results) < total:
                try:
                    event = await self._next(events, deadline)
                except TimeoutError:
                    yield _sse(self._timed_out(jobs).body())
                    return
                if isinstance(event, Failed):
                    for job in jobs:  # over already: not a cancellation
                        job.cancelled.set()
                    yield _sse(APIError(500, event.message, type="server_error").body())
                    return
                if isinstance(event, Piece):
                    yield _sse(maker.piece(event.index, event.text))
                elif isinstance(event, Done):
                    results[event.index] = event.generation
                    yield _sse(maker.piece(event.index, "", event.generation.finish_reason))
            if maker.include_usage:
                yield _sse(maker.usage(_usage(jobs, [results[i] for i in range(total)])))
            yield format_sse_event(data_str="[DONE]")
        finally:
            if len(results) < total and not all(j.cancelled.is_set() for j in jobs):
                self._cancel(jobs)


def _prompts(prompt: str | list[Any]) -> list[str | list[int]]:
    """OpenAI's four prompt shapes as a list of prompts (text or token ids)."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt: the list is empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [prompt]
    return list(prompt)


def _usage(jobs: list[Job], results: list[Generation]) -> Usage:
    """Prompt tokens count once per prompt however many choices it has, as at OpenAI."""
    return Usage(
        prompt_tokens=sum(len(job.prompt_ids) for job in jobs),
        completion_tokens=sum(g.completion_tokens for g in results),
    )


def _deliver(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[Event], event: Event) -> None:
    """Hand an event from the worker thread to the request's handler on the event loop."""
    try:
        loop.call_soon_threadsafe(events.put_nowait, event)
    except RuntimeError:  # the loop is closed: the server is gone, nobody is listening
        pass


def _sse(payload: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(payload, ensure_ascii=False))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 once it passes ``limit`` bytes.

    Read here rather than with FastAPI's ``max_body_size``, whose 413 is plain text: OpenAI
    clients expect the error object."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"the request body is larger than this server's limit of {limit} bytes (--max-body-bytes)",
        code="request_too_large",
    )


def unknown_model(name: str, served: str) -> APIError:
    return APIError(
        404,
        f"the model {name!r} does not exist; this server serves {served!r}",
        param="model",
        code="model_not_found",
    )
