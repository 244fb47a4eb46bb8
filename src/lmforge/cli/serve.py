"""``lmforge serve MODEL_DIR``: an OpenAI-compatible API and a web playground.

    lmforge serve runs/sum/final
    lmforge serve runs/sum --host 0.0.0.0 --port 8000 --api-key-file keys.txt

SIGTERM or Ctrl+C stops accepting connections, lets the requests in flight finish, then
exits with status 0. See docs/serving.md.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import typer

from lmforge.cli.main import app
from lmforge.errors import UserError

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@app.command("serve")
def serve(
    model_dir: Path = typer.Argument(
        ..., metavar="MODEL_DIR", help="A model directory, or a run directory (its final/)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port)."),
    model_name: str | None = typer.Option(
        None, "--model-name", help="The model id clients send (default: the run's name)."
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="Keys clients must send as `Authorization: Bearer KEY`, one per line "
        "(default: $LMFORGE_API_KEY, comma-separated; none: no key needed).",
    ),
    max_batch_size: int = typer.Option(
        16, "--max-batch-size", help="Sequences generated together (1: no batching)."
    ),
    max_wait_ms: float = typer.Option(
        10.0, "--max-wait-ms", help="Wait for more requests until none came for this long."
    ),
    max_queue: int = typer.Option(
        64, "--max-queue", help="Prompts that may wait; more are answered 429."
    ),
    max_body_bytes: int = typer.Option(
        1_000_000, "--max-body-bytes", help="Largest request body accepted (413 above)."
    ),
    max_prompt_tokens: int | None = typer.Option(
        None, "--max-prompt-tokens", help="Longest prompt (default: the fine-tuning length)."
    ),
    max_tokens_cap: int = typer.Option(
        512, "--max-tokens-cap", help="Largest max_tokens a request may ask for."
    ),
    max_n: int = typer.Option(8, "--max-n", help="Largest n (choices per prompt)."),
    request_timeout: float = typer.Option(
        300.0, "--request-timeout", help="Seconds before a request is stopped (504)."
    ),
    runs_dir: Path = typer.Option(
        Path("runs"), "--runs-dir", help="Run directories the playground's runs view lists."
    ),
    task: str | None = typer.Option(
        None, "--task", help="Task template for chat (default: the one the model was tuned on)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Load .bin/.pt weights (pickle can run code)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
) -> None:
    """Serve a seq2seq or causal model over OpenAI's API (/v1/completions,
    /v1/chat/completions, /v1/models), with /health, /metrics and a playground at /."""
    from lmforge.serve.app import model_directory
    from lmforge.serve.limits import ServeOptions, load_api_keys

    keys = load_api_keys(api_key_file)
    directory = model_directory(model_dir)
    options = ServeOptions(
        model_name=model_name or default_model_name(directory),
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        max_prompt_tokens=max_prompt_tokens,
        max_tokens_cap=max_tokens_cap,
        max_n=max_n,
        request_timeout=request_timeout,
        api_keys=keys,
    )
    options.check()
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    import torch
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    from lmforge.serve.app import create_app

    if log_level not in LOG_LEVELS:
        raise UserError(f"--log-level {log_level!r}: choose one of {', '.join(LOG_LEVELS)}")

    if threads is not None:
        torch.set_num_threads(threads)
    web_app = create_app(
        directory, options, runs_dir=runs_dir, task=task, allow_pickle=allow_pickle
    )
    try:
        sock = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    typer.echo(f"lmforge: serving {options.model_name} ({directory}) on {url}", err=True)
    typer.echo(f"lmforge: playground {url}/  API {url}/v1", err=True)
    if host not in LOOPBACK and not keys:
        typer.echo(
            f"lmforge: warning: listening on {host} with no API key; anyone who can reach it "
            "can use the model (see --api-key-file)",
            err=True,
        )
    server = uvicorn.Server(uvicorn.Config(web_app, log_level=log_level, lifespan="on"))
    # uvicorn handles SIGINT/SIGTERM while it runs (stop accepting, finish requests in flight,
    # shut down) and then raises the signal again; these handlers turn that into exit 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    print(f"lmforge: stopped ({signal.Signals(signum).name})", file=sys.stderr)
    sys.exit(0)


def default_model_name(model_dir: Path) -> str:
    """The run's name for ``RUN/final``, else the directory's own name."""
    path = Path(os.path.abspath(model_dir))  # not resolve(): final/ may be a symlink
    return path.parent.name if path.name == "final" else path.name
