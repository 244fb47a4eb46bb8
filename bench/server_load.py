"""Server load: ``lmforge serve`` with batching on against batching off, under concurrent clients.

    .venv/bin/python bench/server_load.py --json server_load.json

The same model is served twice, one server at a time, each as its own ``lmforge serve``
process on a free loopback port:

* ``batching on``: ``--max-batch-size 32`` (the default ``--batch-size``), ``--max-wait-ms 10``;
* ``batching off``: ``--max-batch-size 1``: one request per ``generate`` call, as a server
  without a batcher runs them.

Against each, ``C`` clients (``--levels``, default 1, 8 and 32) send ``/v1/completions``
requests back to back until ``--requests`` (default: 4 per client, at least 16) have been
answered: each client sends its next request as soon as its previous one is answered, so
``C`` requests are in flight at any time. Every request is greedy with ``max_tokens =
min_tokens = --max-tokens``, so every answer has exactly that many tokens on both sides (the
script checks the usage of every answer). Reported per level: requests/s and generated
tokens/s over the wall-clock time of the level, and the p50 / p99 latency of one request
(sent to last byte). The ratio is batching on over batching off, in tokens/s; the goal is at
least 3x at 32 clients.

The model is T5 ``--preset`` (default ``small``) with random weights and a byte-level BPE
tokenizer trained on the prompts, as in ``bench/generate_throughput.py``, whose prompts
(documented functions of the standard library, code-comment template) this script reuses.
The clients run in this process (asyncio + httpx); the server in another, with
``--threads`` torch threads (default 1: on a shared 2-core machine one thread per side is
steadier).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np

from lmforge.config import ModelConfig
from lmforge.errors import UserError
from lmforge.fsutil import refuse_to_overwrite, write_json_atomic
from lmforge.models import build_model
from lmforge.tokenizers import train_tokenizer

GOAL = 3.0  # the target: batching on at least 3x batching off in tokens/s, 32 clients
GOAL_CLIENTS = 32
MODEL_NAME = "bench"


def sibling(name: str) -> ModuleType:
    """Another script of bench/ as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 of request latencies (linear interpolation between samples)."""
    p50, p99 = np.percentile(np.asarray(latencies), [50, 99])
    return {"p50_s": float(p50), "p99_s": float(p99)}


def summarize(latencies: list[float], tokens: int, seconds: float) -> dict[str, Any]:
    """The figures of one level: throughput over its wall-clock time, latency percentiles."""
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "tokens_per_s": tokens / seconds,
        **percentiles(latencies),
    }


def batch_counts(url: str) -> tuple[float, float]:
    """(batches, sequences) the server has generated so far, from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = dict(re.findall(r"^(lmforge_batch(?:es|_sequences)_total) (\S+)$", text, re.M))
    return float(found["lmforge_batches_total"]), float(found["lmforge_batch_sequences_total"])


async def drive(url: str, prompts: list[str], clients: int, requests: int, max_tokens: int) -> dict:
    """``clients`` concurrent clients send ``requests`` completions back to back."""
    queue = itertools.cycle(prompts)
    sent = 0
    latencies: list[float] = []
    tokens = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent, tokens
        while sent < requests:
            sent += 1
            body = {
                "model": MODEL_NAME,
                "prompt": next(queue),
                "max_tokens": max_tokens,
                "min_tokens": max_tokens,
                "temperature": 0,
            }
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/completions", json=body)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()
            got = response.json()["usage"]["completion_tokens"]
            if got != max_tokens:
                raise RuntimeError(f"an answer had {got} tokens, not {max_tokens}")
            tokens += got

    async with httpx.AsyncClient(timeout=3600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return summarize(latencies, tokens, seconds)


@contextlib.contextmanager
def start_server(model_dir: Path, batch_size: int, threads: int, wait_ms: float) -> Iterator[str]:
    """``lmforge serve`` in its own process on a free port; yields its URL, stops it after."""
    command = [sys.executable, "-m", "lmforge", "serve", str(model_dir), "--port", "0"]
    command += ["--model-name", MODEL_NAME, "--max-batch-size", str(batch_size)]
    command += ["--max-wait-ms", str(wait_ms)]
    command += ["--max-queue", "1024", "--threads", str(threads), "--log-level", "warning"]
    command += ["--max-prompt-tokens", "4096", "--request-timeout", "3600"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in server.stderr:  # type: ignore[union-attr]
            if found := re.search(r" on (http://\S+)$", line.strip()):
                url = found.group(1)
                break
        if url is None:
            raise RuntimeError(f"lmforge serve did not start (exit {server.wait()})")
        for _ in range(600):  # the socket listens before the app has started
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def save_model(directory: Path, prompts: list[str], preset: str, vocab: int, seed: int) -> Path:
    tokenizer = train_tokenizer(prompts, kind="bpe", vocab_size=vocab, seed=seed)
    model = build_model(
        ModelConfig(family="t5", preset=preset), tokenizer, "seq2seq_sft", seed=seed
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="clients")
    parser.add_argument("--requests", type=int, help="per level (default: max(16, 4 x clients))")
    parser.add_argument("--inputs", type=int, default=64, help="distinct prompts, cycled")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    parser.add_argument("--batch-size", type=int, default=32, help="--max-batch-size when on")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="the server's, when on")
    parser.add_argument("--max-source-words", type=int, default=128, help="prompts cut to this")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args(argv)
    if min(args.levels) < 1 or (args.requests is not None and args.requests < 1):
        raise UserError("--levels and --requests must be at least 1")
    return args


def prompts_for(args: argparse.Namespace, harvested_sources: Any) -> list[str]:
    """The first ``--inputs`` stdlib code-comment prompts, cut to ``--max-source-words``
    whitespace-separated words so that no prompt dominates a batch's padding."""
    return [" ".join(s.split()[: args.max_source_words]) for s in harvested_sources(args.inputs)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.json is not None:
        refuse_to_overwrite(args.json, args.overwrite)
    generate_bench = sibling("generate_throughput")
    load_at_start = os.getloadavg()
    prompts = prompts_for(args, generate_bench.harvested_sources)
    modes = {"batching on": args.batch_size, "batching off": 1}
    figures: dict[str, dict[str, Any]] = {mode: {} for mode in modes}
    with tempfile.TemporaryDirectory(prefix="server-load-") as tmp:
        model_dir = save_model(
            Path(tmp) / "model", prompts, args.preset, args.vocab_size, args.seed
        )
        for mode, batch_size in modes.items():
            wait_ms = args.max_wait_ms if batch_size > 1 else 0
            with start_server(model_dir, batch_size, args.threads, wait_ms) as url:
                asyncio.run(drive(url, prompts, 1, 2, args.max_tokens))  # warm up, not timed
                for clients in args.levels:
                    requests = args.requests or max(16, 4 * clients)
                    batches, sequences = batch_counts(url)
                    level = asyncio.run(drive(url, prompts, clients, requests, args.max_tokens))
                    after = batch_counts(url)
                    level["mean_batch"] = (after[1] - sequences) / (after[0] - batches)
                    figures[mode][str(clients)] = level
                    print(
                        f"{mode:>12}, {clients:>3} clients: {level['tokens_per_s']:8.1f} tokens/s "
                        f"{level['requests_per_s']:6.2f} req/s  p50 {level['p50_s']:.2f} s  "
                        f"p99 {level['p99_s']:.2f} s  mean batch {level['mean_batch']:.1f}",
                        file=sys.stderr,
                    )
    ratios = {
        str(c): figures["batching on"][str(c)]["tokens_per_s"]
        / figures["batching off"][str(c)]["tokens_per_s"]
        for c in args.levels
    }
    result: dict[str, Any] = {
        "command": shlex.join(["python", "bench/server_load.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "machine": {
            **generate_bench.machine(),
            "load_average": {"start": load_at_start, "end": os.getloadavg()},
        },
        "model": f"t5 {args.preset}",
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "max_wait_ms": args.max_wait_ms,
        "server_threads": args.threads,
        "results": figures,
        "tokens_per_s_ratio": ratios,
    }
    if str(GOAL_CLIENTS) in ratios:
        result["goal_met"] = ratios[str(GOAL_CLIENTS)] >= GOAL
    print(json.dumps(result, indent=2))
    if args.json is not None:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
