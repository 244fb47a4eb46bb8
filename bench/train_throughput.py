"""Training throughput: lmforge's training loop against transformers' Seq2SeqTrainer.

    .venv/bin/python bench/train_throughput.py --json train_throughput.json

Both sides train the same T5 (``ModelConfig(family="t5", preset="small")``, the same initial
weights) on the same tokenized (source, target) pairs with the same batch size, optimizer
settings (AdamW, lr, betas, eps, weight decay, gradient clipping), warmup-then-cosine schedule,
number of steps and precision (fp32), on the CPU, in one process. Three runs:

* ``lmforge``: ``lmforge.training.loop.train`` with the seq2seq_sft collator, defaults as
  shipped (``train.group_by_length: true``, batches grouped by source length, then target length);
* ``trainer``: ``Seq2SeqTrainer`` with its defaults (random batches, its default optimizer and
  data loader), ``DataCollatorForSeq2Seq`` as in transformers' run_summarization.py;
* ``trainer-grouped``: the same with ``train_sampling_strategy="group_by_length"`` (what
  ``group_by_length=True`` is called in transformers 5; it groups by source length).

Each run trains ``--warmup`` untimed steps, then ``--steps`` timed ones: from the end of
optimizer step W to the end of step W+N, taken by one global optimizer-step hook, so both sides
are timed the same way and every timed step includes its data loading and per-step overhead
(set-up and lmforge's final checkpoint are outside). The default N is 50 because a
length-grouped sampler (transformers' ``get_length_grouped_indices``, which lmforge uses too)
sorts megabatches of 50 batches longest first: a shorter window would see only the longest,
least padded batches and flatter grouping; 50 steps see the whole range of lengths.

Tokens are the non-padding tokens trained on: ``attention_mask`` sum of the source plus
``labels != -100`` of the target, recorded by a wrapper around each side's collator. MFU is the
FLOPs of those batches (lmforge's ``FlopsCounter``, non-padding tokens only) over the timed
seconds and the measured fp32 matmul peak of this machine (``peak_flops``). ``MFU+pad``
counts the FLOPs of every position the model computed, padding included: equal values mean
the two loops turn arithmetic into progress equally fast, so that any difference in tokens/s
comes from padding.

Data: by default the documented functions of the first ``--limit-files`` files of the standard
library (source = the code-comment template of the code, target = the docstring's summary);
``--data FILE.jsonl`` reads rows with ``source`` and ``target`` fields instead.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from lmforge.config import ModelConfig, ObjectiveConfig, OptimConfig, TemplateConfig, TrainConfig
from lmforge.data.harvest.python import harvest_python
from lmforge.data.loading import load_path
from lmforge.data.templates import render_source
from lmforge.errors import UserError
from lmforge.fsutil import write_json_atomic
from lmforge.models import build_model
from lmforge.objectives import get_objective
from lmforge.tokenizers import train_tokenizer
from lmforge.training.compute import PEAK_CACHE, FlopsCounter, measure_matmul_peak, peak_flops
from lmforge.training.loop import train

OBJECTIVE = "seq2seq_sft"
CPU = torch.device("cpu")
GOAL = 1.5  # the target: lmforge at least 1.5x Seq2SeqTrainer (default) in tokens/s
# run name -> the Trainer's train_sampling_strategy (None: lmforge)
RUNS = {"lmforge": None, "trainer": "random", "trainer-grouped": "group_by_length"}
MEGABATCH = 50  # batches that get_length_grouped_indices sorts together (at most)


# --------------------------------------------------------------------------- data


def harvested_pairs(limit_files: int) -> list[tuple[str, str]]:
    """(code-comment source, docstring summary) of the functions in the first stdlib files."""
    rows, _ = harvest_python([sysconfig.get_paths()["stdlib"]], limit_files=limit_files, workers=1)
    template = TemplateConfig()
    return [(render_source("code-comment", row, template), row["summary"]) for row in rows]


def jsonl_pairs(path: str) -> list[tuple[str, str]]:
    """(source, target) of every row of a JSONL file."""
    rows = load_path(path, format="jsonl")
    missing = [c for c in ("source", "target") if c not in rows.column_names]
    if missing:
        raise UserError(
            f"{path}: --data rows need the fields source and target; missing {', '.join(missing)} "
            f"(fields: {', '.join(rows.column_names)})"
        )
    return list(zip(rows["source"], rows["target"], strict=True))


# --------------------------------------------------------------------------- measuring


class RecordingCollator:
    """A collator that keeps every batch it makes, in order: batch i is trained at step i.

    (One micro-batch per step; a data loader that fetches ahead only adds batches at the end.)
    """

    def __init__(self, collate: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.collate = collate
        self.batches: list[Any] = []

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.collate, "set_epoch"):
            self.collate.set_epoch(epoch)

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.collate(features)
        self.batches.append(batch)
        return batch


class StepClock:
    """Wall and process CPU time at the end of every optimizer step, of any optimizer."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._handle: Any = None

    def _tick(self, *_: object) -> None:
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())  # all threads of this process

    def __enter__(self) -> StepClock:
        self._handle = register_optimizer_step_post_hook(self._tick)
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.remove()


def measure(
    name: str,
    clock: StepClock,
    recorder: RecordingCollator,
    *,
    warmup: int,
    steps: int,
    counter: FlopsCounter,
) -> dict[str, Any]:
    """Seconds, tokens and FLOPs of optimizer steps warmup+1 .. warmup+steps of one run."""
    if len(clock.times) != warmup + steps or len(recorder.batches) < warmup + steps:
        raise RuntimeError(
            f"{name}: {len(clock.times)} optimizer steps and {len(recorder.batches)} batches, "
            f"expected {warmup + steps}"
        )
    first, last = warmup - 1, warmup + steps - 1
    seconds = clock.times[last] - clock.times[first]
    timed = recorder.batches[warmup : warmup + steps]
    return {
        "seconds": seconds,
        # CPU seconds used / (wall seconds x threads): well below 1 means others took the CPUs
        "cpu_share": (clock.cpu_times[last] - clock.cpu_times[first])
        / (seconds * torch.get_num_threads()),
        "source_tokens": sum(int(b["attention_mask"].sum()) for b in timed),
        "target_tokens": sum(int((b["labels"] != -100).sum()) for b in timed),
        "padded_tokens": sum(b["input_ids"].numel() + b["labels"].numel() for b in timed),
        "flops": sum(counter.batch_flops(b) for b in timed),
        "padded_flops": sum(counter.batch_flops(every_position(b)) for b in timed),
    }


def every_position(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch as FlopsCounter would see it if padding were tokens too."""
    return {"input_ids": batch["input_ids"], "labels": torch.zeros_like(batch["labels"])}


def summarise(name: str, trials: list[dict[str, Any]], steps: int, peak: float) -> dict[str, Any]:
    """One run's figures over its repeats: the median time; the batches are the same in each."""
    seconds = statistics.median(t["seconds"] for t in trials)
    first = trials[0]
    tokens = first["source_tokens"] + first["target_tokens"]
    return {
        "run": name,
        "steps": steps,
        "seconds": seconds,
        "seconds_each_repeat": [t["seconds"] for t in trials],
        "cpu_share_each_repeat": [t["cpu_share"] for t in trials],
        "seconds_per_step": seconds / steps,
        "source_tokens": first["source_tokens"],
        "target_tokens": first["target_tokens"],
        "tokens": tokens,
        "padded_tokens": first["padded_tokens"],
        "padding": 1 - tokens / first["padded_tokens"],
        "tokens_per_s": tokens / seconds,
        "flops": first["flops"],
        "mfu": first["flops"] / (seconds * peak),
        "padded_flops": first["padded_flops"],
        "mfu_with_padding": first["padded_flops"] / (seconds * peak),
    }


# --------------------------------------------------------------------------- the runs


def run_lmforge(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: datasets.Dataset,
    args: argparse.Namespace,
    run_dir: Path,
    peak_file: Path,
) -> tuple[StepClock, RecordingCollator]:
    """Warm-up and timed steps of lmforge's loop, as ``lmforge finetune`` runs it."""
    objective = objective_config(args)
    spec = get_objective(OBJECTIVE)
    recorder = RecordingCollator(spec.collator(tokenizer, objective, args.seed, model.config))
    config = TrainConfig(
        max_steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        precision="fp32",
        save_every=10**9,  # only the final checkpoint, after the clock stops
    )
    run_dir.mkdir(parents=True)
    shutil.copy(peak_file, run_dir / PEAK_CACHE)  # the peak measured once, not per run
    with StepClock() as clock:
        train(
            model,
            tokenizer,
            dataset,
            recorder,
            run_dir=run_dir,
            optim=OptimConfig(),
            train=config,
            seed=args.seed,
        )
    return clock, recorder


def run_trainer(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: datasets.Dataset,
    args: argparse.Namespace,
    output_dir: Path,
    sampling: str,
) -> tuple[StepClock, RecordingCollator]:
    """Warm-up and timed steps of Seq2SeqTrainer: lmforge's hyperparameters, else defaults."""
    optim = OptimConfig()
    recorder = RecordingCollator(
        DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    )
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=optim.lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.betas[0],
        adam_beta2=optim.betas[1],
        adam_epsilon=optim.eps,
        max_grad_norm=optim.grad_clip,
        warmup_steps=optim.warmup_steps,
        lr_scheduler_type="cosine_with_min_lr",  # lmforge's cosine decay to min_lr_ratio
        lr_scheduler_kwargs={"min_lr_rate": optim.min_lr_ratio},
        train_sampling_strategy=sampling,
        seed=args.seed,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=recorder,
        processing_class=tokenizer,
    )
    with StepClock() as clock:
        trainer.train()
    return clock, recorder


def objective_config(args: argparse.Namespace) -> ObjectiveConfig:
    return ObjectiveConfig(
        name=OBJECTIVE,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length,
    )


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{'run':<16} {'s/step':>7} {'tokens':>7} {'padding':>8} {'tok/s':>7} "
        f"{'MFU':>6} {'MFU+pad':>8}  seconds (CPU share) of each repeat"
    )
    for r in report["results"]:
        each = " ".join(
            f"{s:.1f} ({c:.0%})"
            for s, c in zip(r["seconds_each_repeat"], r["cpu_share_each_repeat"], strict=True)
        )
        print(
            f"{r['run']:<16} {r['seconds_per_step']:>7.2f} {r['tokens']:>7} "
            f"{r['padding']:>8.1%} {r['tokens_per_s']:>7.0f} {r['mfu']:>6.1%} "
            f"{r['mfu_with_padding']:>8.1%}  {each}"
        )
    print(
        f"matmul peak (fp32, {report['threads']} threads): {report['peak_flops_per_s'] / 1e9:.1f} GFLOP/s"
    )
    print(
        f"lmforge / Seq2SeqTrainer default (random batches): "
        f"{report['ratio_vs_trainer']:.2f}x tokens/s (goal: {GOAL}x)"
    )
    print(
        f"lmforge / Seq2SeqTrainer group_by_length:          "
        f"{report['ratio_vs_trainer_grouped']:.2f}x tokens/s"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training tokens/s of lmforge against Seq2SeqTrainer on the same T5 and data."
    )
    parser.add_argument("--steps", type=int, default=MEGABATCH, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-source-length", type=int, default=256)
    parser.add_argument("--max-target-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side (median)")
    parser.add_argument("--data", help="JSONL with source and target fields (default: harvest)")
    parser.add_argument("--limit-files", type=int, default=300, help="stdlib files to harvest")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args(argv)
    for flag in ("steps", "warmup", "batch_size", "threads", "repeats", "limit_files"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be 1 or more")
    for flag in ("max_source_length", "max_target_length"):
        if getattr(args, flag) < 4:
            parser.error(f"--{flag.replace('_', '-')} must be 4 or more")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise UserError(f"{args.json} exists; pass --overwrite to replace it")
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    pairs = jsonl_pairs(args.data) if args.data else harvested_pairs(args.limit_files)
    if len(pairs) < args.batch_size:
        raise UserError(f"{len(pairs)} examples, fewer than one batch of {args.batch_size}")
    tokenizer = train_tokenizer(
        [text for pair in pairs for text in pair],
        kind="bpe",
        vocab_size=args.vocab_size,
        seed=args.seed,
    )
    rows = datasets.Dataset.from_dict(
        {"source": [s for s, _ in pairs], "target": [t for _, t in pairs]}
    )
    dataset = get_objective(OBJECTIVE).prepare(rows, tokenizer, objective_config(args), args.seed)
    initial = build_model(ModelConfig(family="t5", preset="small"), tokenizer, OBJECTIVE)
    counter = FlopsCounter.from_model(initial)
    print(
        f"{len(dataset)} examples, {counter.params / 1e6:.1f}M parameters, {args.threads} "
        f"threads, load average {load_at_start[0]:.2f}",
        file=sys.stderr,
    )
    if args.steps < MEGABATCH or len(dataset) < 4 * MEGABATCH * args.batch_size:
        print(
            f"note: grouped runs see whole megabatches only with --steps >= {MEGABATCH} and "
            f">= {4 * MEGABATCH * args.batch_size} examples; these figures favour grouping",
            file=sys.stderr,
        )

    trials: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        peak_dir = Path(tmp) / "peak"
        peak = peak_flops(peak_dir, CPU, "fp32")["flops_per_s"]["fp32"]
        names = list(RUNS)
        for repeat in range(args.repeats):
            # rotate the order, so a change in machine load does not fall on one side only
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                model, out = copy.deepcopy(initial), Path(tmp) / f"{name}-{repeat}"
                if RUNS[name] is None:
                    run = run_lmforge(model, tokenizer, dataset, args, out, peak_dir / PEAK_CACHE)
                else:
                    run = run_trainer(model, tokenizer, dataset, args, out, RUNS[name])
                trial = measure(name, *run, warmup=args.warmup, steps=args.steps, counter=counter)
                trials[name].append(trial)
                del model, run
        # the best of two measurements: a busy machine at the start would understate the peak
        peak = max(peak, measure_matmul_peak(CPU, torch.float32))

    for name, runs in trials.items():  # every repeat of a side trains on the same batches
        if len({(t["source_tokens"], t["target_tokens"]) for t in runs}) != 1:
            raise RuntimeError(f"{name}: the repeats trained on different batches")
    results = [summarise(name, trials[name], args.steps, peak) for name in RUNS]
    speed = {r["run"]: r["tokens_per_s"] for r in results}
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},  # 1, 5, 15 minutes
        "threads": args.threads,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "examples": len(dataset),
        "params": counter.params,
        "peak_flops_per_s": peak,
        "results": results,
        "ratio_vs_trainer": speed["lmforge"] / speed["trainer"],
        "ratio_vs_trainer_grouped": speed["lmforge"] / speed["trainer-grouped"],
        "goal": GOAL,
    }
    print_report(report)
    if args.json is not None:
        write_json_atomic(args.json, report)
    return report


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
