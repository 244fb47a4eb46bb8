"""The FastAPI app: OpenAI's routes over the batching scheduler, metrics, runs and playground.

    GET  /                      the playground (static files in the package)
    GET  /health                liveness and queue depth (no key needed)
    GET  /metrics               Prometheus text (no key needed)
    GET  /v1/models             the one model served
    POST /v1/completions        text completion, streamed or not
    POST /v1/chat/completions   chat completion, streamed or not
    GET  /api/runs[/NAME]       the runs view's data

The completions and chat handlers are in :mod:`lmforge.serve.completions`; every error,
from any route, is OpenAI's error object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmforge.serve import runs
from lmforge.serve.completions import Completions, unknown_model
from lmforge.serve.limits import ServeOptions, key_matches
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.prompts import PromptEncoder
from lmforge.serve.scheduler import Scheduler
from lmforge.serve.schemas import APIError, models_body

STATIC_DIR = Path(__file__).parent / "static"
ROUTES = ("/v1/models", "/v1/completions", "/v1/chat/completions")
log = logging.getLogger("lmforge.serve")


def model_directory(path: str | Path) -> Path:
    """``path`` itself, or the ``final/`` model of a run directory."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        return path / "final"
    return path


def load_model(
    model_dir: Path, allow_pickle: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer to serve; an encoder (which cannot generate) is refused."""
    from lmforge.generation import load_generator

    return load_generator(model_dir, allow_pickle=allow_pickle)


def create_app(
    model_dir: str | Path,
    options: ServeOptions | None = None,
    *,
    runs_dir: str | Path = "runs",
    task: str | None = None,
    allow_pickle: bool = False,
) -> FastAPI:
    """The app serving the model in ``model_dir`` (or a run directory's ``final/``)."""
    options = options or ServeOptions()
    options.check()
    model_dir = model_directory(model_dir)
    model, tokenizer = load_model(model_dir, allow_pickle)
    encoder = PromptEncoder(
        model, tokenizer, model_dir, task=task, max_prompt_tokens=options.max_prompt_tokens
    )
    metrics = ServerMetrics()
    scheduler = Scheduler(
        model,
        tokenizer,
        metrics,
        max_batch_size=options.max_batch_size,
        max_wait=options.max_wait_ms / 1000,
        max_queue=options.max_queue,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        # uvicorn calls this after in-flight requests finished: the queue is empty by now
        await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="lmforge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler, app.state.metrics, app.state.encoder = scheduler, metrics, encoder
    app.state.options = options
    app.add_middleware(MeasureRequests, metrics=metrics)
    _error_handlers(app)
    generation = Completions(options, encoder, scheduler, metrics)
    created = int(time.time())
    bearer = HTTPBearer(auto_error=False)

    def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not options.api_keys:
            return
        if credentials is None:
            raise _unauthorized("missing API key: send the header `Authorization: Bearer KEY`")
        if not key_matches(credentials.credentials, options.api_keys):
            raise _unauthorized("incorrect API key")

    keyed = [Depends(require_key)]

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": options.model_name, "queue_depth": scheduler.depth}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=keyed)
    async def list_models() -> dict[str, Any]:
        return models_body(options.model_name, created)

    @app.get("/v1/models/{name}", dependencies=keyed)
    async def get_model(name: str) -> dict[str, Any]:
        if name != options.model_name:
            raise unknown_model(name, options.model_name)
        return models_body(options.model_name, created)["data"][0]

    @app.post("/v1/completions", dependencies=keyed)
    async def completions(request: Request) -> Any:
        return await generation.answer(request, "completion")

    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat_completions(request: Request) -> Any:
        return await generation.answer(request, "chat")

    runs_path = Path(runs_dir)

    @app.get("/api/runs", dependencies=keyed)
    async def list_runs() -> dict[str, Any]:
        return {
            "runs_dir": str(runs_path),
            "runs": await asyncio.to_thread(runs.list_runs, runs_path),
        }

    @app.get("/api/runs/{name}", dependencies=keyed)
    async def run_detail(name: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(runs.run_detail, runs_path, name)
        except runs.RunNotFound:
            raise APIError(
                404, f"no run {name!r} in {runs_path}", type="not_found_error", param="name"
            ) from None

    return app


# --------------------------------------------------------------------------- errors


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = (
            f"no route {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        error = APIError(exc.status_code, message, type=kind)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        error = APIError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return JSONResponse(error.body(), status_code=500)


class MeasureRequests:
    """ASGI middleware: counts /v1 requests by route and status and times each to the last
    byte of its response (a stream's whole length), for ``/metrics``."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        start = time.perf_counter()
        status = 500

        async def measured_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            self.metrics.requests.inc(route=route, status=str(status))
            self.metrics.latency.observe(time.perf_counter() - start, route=route)
