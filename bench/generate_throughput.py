"""Generation throughput: lmforge's batched generation against a per-example generate loop.

    .venv/bin/python bench/generate_throughput.py --json generate_throughput.json

Both sides decode the same inputs with the same model and the same settings (greedy by
default, ``--num-beams`` for beam search), in one process on the CPU:

* ``lmforge``: :func:`lmforge.generation.generate`, inputs sorted by length and generated
  ``--batch-size`` at a time (seq2seq pads on the right);
* ``loop``: ``model.generate`` called once per input, as a script without batching does.

Both encode inputs with :func:`lmforge.generation.encode_prompt`, so the prompts are the same
tokens. ``min_new_tokens = max_new_tokens`` makes every sequence exactly ``--max-new-tokens``
long on both sides (an untrained model would otherwise stop at random places); the generated
tokens are also counted (up to and including eos) and must agree. Tokens per second are
generated tokens over wall-clock seconds, set-up (tokenizer, model) excluded. The number of
inputs whose outputs agree between the two sides is reported as a sanity check: greedy
outputs should be identical up to rare ties broken differently by batched arithmetic.

The model is T5 ``--preset`` (default ``small``) built from scratch with random weights and
a byte-level BPE tokenizer trained on the inputs: throughput does not depend on what the
weights have learned. Data: by default the first ``--inputs`` documented functions of the
standard library (harvested as ``lmforge data harvest python`` does), rendered with the
code-comment template; ``--data FILE.jsonl`` reads a ``source`` field instead.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from lmforge.config import ModelConfig, TemplateConfig
from lmforge.data.harvest.python import harvest_python
from lmforge.data.loading import load_path
from lmforge.data.templates import render_source
from lmforge.errors import UserError
from lmforge.fsutil import refuse_to_overwrite, write_json_atomic
from lmforge.generation import DecodingSettings, encode_prompt, generate
from lmforge.models import build_model
from lmforge.tokenizers import train_tokenizer

GOAL = 5.0  # the target: batched generation at least 5x the per-example loop


def harvested_sources(count: int) -> list[str]:
    """Code-comment inputs for the first ``count`` documented stdlib functions."""
    stdlib = sysconfig.get_paths()["stdlib"]
    rows, _ = harvest_python([stdlib], workers=1)  # files are read lazily, as rows are taken
    taken = list(itertools.islice(rows, count))
    if len(taken) < count:
        raise UserError(f"only {len(taken)} functions harvested from {stdlib}; lower --inputs")
    template = TemplateConfig()
    return [render_source("code-comment", row, template) for row in taken]


def jsonl_sources(path: str, count: int) -> list[str]:
    rows = load_path(path, format="jsonl")
    if "source" not in rows.column_names:
        raise UserError(f"{path}: --data rows need a source field ({', '.join(rows.column_names)})")
    return list(rows["source"][:count])


def loop_generate(
    model: Any, tokenizer: Any, prompts: list[list[int]], settings: DecodingSettings
) -> tuple[list[str], int]:
    """The baseline: ``model.generate`` once per input; (texts, generated tokens)."""
    texts, tokens = [], 0
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                **settings.generate_kwargs(),
            )
            new = out[0, 1:].tolist()  # after the decoder start token
            end = new.index(eos) + 1 if eos in new else len(new)
            tokens += end
            texts.append(tokenizer.decode(new[:end], skip_special_tokens=True))
    return texts, tokens


def padding_waste(lengths: list[int], batch_size: int) -> dict[str, float]:
    """Pad share of the encoder input, batches sorted by length (lmforge) or in input order."""

    def waste(ordered: list[int]) -> float:
        batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
        padded = sum(max(b) * len(b) for b in batches)
        return 1 - sum(ordered) / padded

    return {"sorted": waste(sorted(lengths, reverse=True)), "input_order": waste(lengths)}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=500, help="inputs to generate for")
    parser.add_argument("--data", help="JSONL with a source field (default: stdlib harvest)")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-source-length", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side (median)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    return parser.parse_args(argv)


def timed(run: Any, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls of ``run`` and the last call's result."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.json is not None:
        refuse_to_overwrite(args.json, args.overwrite)
    torch.set_num_threads(args.threads)
    sources = jsonl_sources(args.data, args.inputs) if args.data else harvested_sources(args.inputs)
    tokenizer = train_tokenizer(sources, kind="bpe", vocab_size=args.vocab_size, seed=args.seed)
    model = build_model(
        ModelConfig(family="t5", preset=args.preset), tokenizer, "seq2seq_sft", seed=args.seed
    ).eval()
    settings = DecodingSettings(
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )
    prompts = [encode_prompt(model, tokenizer, s, args.max_source_length) for s in sources]
    lengths = [len(p) for p in prompts]
    print(
        f"{len(sources)} inputs, {sum(lengths)} prompt tokens (median {statistics.median(lengths)},"
        f" max {max(lengths)}), T5 {args.preset}, {args.threads} threads",
        file=sys.stderr,
    )

    def batched() -> list[list[Any]]:
        return generate(
            model,
            tokenizer,
            sources,
            settings,
            batch_size=args.batch_size,
            max_source_length=args.max_source_length,
        )

    batched_seconds, groups = timed(batched, args.repeats)
    batched_tokens = sum(g[0].completion_tokens for g in groups)
    print(f"lmforge: {batched_seconds:.1f} s", file=sys.stderr)
    loop_seconds, (loop_texts, loop_tokens) = timed(
        lambda: loop_generate(model, tokenizer, prompts, settings), args.repeats
    )
    print(f"loop: {loop_seconds:.1f} s", file=sys.stderr)
    if batched_tokens != loop_tokens:
        raise RuntimeError(f"lmforge generated {batched_tokens} tokens, the loop {loop_tokens}")

    result = {
        "command": shlex.join(["python", "bench/generate_throughput.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "inputs": len(sources),
        "model": f"t5 {args.preset}",
        "vocab_size": len(tokenizer),
        "settings": settings.generate_kwargs(),
        "batch_size": args.batch_size,
        "prompt_tokens": sum(lengths),
        "generated_tokens": batched_tokens,
        "padding_waste": padding_waste(lengths, args.batch_size),
        "lmforge": {"seconds": batched_seconds, "tokens_per_s": batched_tokens / batched_seconds},
        "loop": {"seconds": loop_seconds, "tokens_per_s": loop_tokens / loop_seconds},
        "same_outputs": sum(g[0].text == t for g, t in zip(groups, loop_texts, strict=True)),
    }
    result["speedup"] = result["lmforge"]["tokens_per_s"] / result["loop"]["tokens_per_s"]
    result["goal_met"] = result["speedup"] >= GOAL
    print(json.dumps(result, indent=2))
    if args.json is not None:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
