"""The main job on the embedded default: knowledge harvested from this machine.

Stages, each skipped when its output is already in ``out`` (so the same command resumes, and
a training stage interrupted by Ctrl-C continues from its last checkpoint):

1. harvest Python functions + docstrings (the standard library and a seeded sample of
   site-packages files) and, where translation catalogs are installed, English -> Chinese
   (zh_CN) pairs; build the labelled tasks, split by source file / catalog;
2. train a byte-level BPE tokenizer on the training split's text;
3. pretrain a small T5 with span corruption on the training split's code and text;
4. fine-tune it on the mixture of tasks; fine-tune the same architecture from scratch on
   the same mixture for the same steps (what pretraining contributed);
5. evaluate both and the heuristic baselines on the same held-out examples;
6. write the report (Markdown, HTML, PNG plots) into ``out``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.harvest import write_harvest
from lmforge.errors import UserError
from lmforge.fsutil import iter_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from lmforge.quickstart.plan import Plan, make_plan
from lmforge.quickstart.tasks import TASKS

Report = Callable[[str], None]
PYTHON_FILE = "data/python.jsonl"
TRANSLATION_FILE = "data/translate-zh.jsonl"
PLAN_FILE = "plan.json"
METRICS_FILE = "metrics.json"
SYSTEMS = ("pretrained + fine-tuned", "fine-tuned from scratch", "baseline")


@dataclass
class QuickstartResult:
    out: Path
    plan: Plan
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (stage, what, seconds)
    python_rows: int = 0
    translation_rows: int = 0
    tasks: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> split -> examples
    tokenizer_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None


class Stage:
    """Times a stage and records one line of what it did."""

    def __init__(self, result: QuickstartResult, name: str, report: Report) -> None:
        self.result, self.name, self.report = result, name, report

    def __enter__(self) -> Stage:
        self.start = time.perf_counter()
        self.what = ""
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            seconds = time.perf_counter() - self.start
            self.result.stages.append((self.name, self.what, seconds))
            self.report(f"[bold]{self.name}[/bold]: {self.what} ({seconds:.1f} s)")


# --------------------------------------------------------------------------- 1. data


def site_packages_sample(seed: int, limit: int | None) -> list[Path]:
    """The interpreter's stdlib, plus ``limit`` site-packages files chosen by a seeded hash
    (all of them when ``limit`` is None): the whole of site-packages takes a minute to parse."""
    from lmforge.data.harvest.python import default_python_paths, python_files
    from lmforge.data.splits import group_fraction
    from lmforge.quickstart.tasks import portable_path

    roots = default_python_paths()
    stdlib, others = roots[:1], roots[1:]
    if limit is None or not others:
        return roots
    files = python_files(others)
    chosen = sorted(files, key=lambda f: group_fraction(seed, portable_path(f)))[:limit]
    return stdlib + [Path(f) for f in sorted(chosen)]


def harvest(out: Path, plan: Plan, seed: int, result: QuickstartResult, report: Report) -> None:
    from lmforge.data.harvest.gettext import harvest_gettext
    from lmforge.data.harvest.python import harvest_python

    python_path, zh_path = out / PYTHON_FILE, out / TRANSLATION_FILE
    with Stage(result, "harvest python", report) as stage:
        if python_path.is_file():
            stage.what = f"kept {python_path}"
        else:
            report("harvesting Python functions and docstrings (stdlib and site-packages)...")
            rows, stats = harvest_python(site_packages_sample(seed, plan.site_packages_files))
            count = write_harvest(rows, python_path)
            if count == 0:
                raise UserError("no documented Python functions were found on this machine")
            stage.what = f"{count} functions from {stats.files_scanned} files -> {python_path}"
    with Stage(result, "harvest gettext", report) as stage:
        done = out / "data" / "translate-zh.done"
        if done.is_file():
            stage.what = f"kept {zh_path if zh_path.is_file() else 'no catalogs'}"
        else:
            report("harvesting English -> Chinese pairs from installed translation catalogs...")
            rows, stats = harvest_gettext("zh_CN")
            count = write_harvest(rows, zh_path)
            stage.what = (
                f"{count} pairs from {stats.files_scanned} catalogs -> {zh_path}"
                if count
                else "no zh_CN translation catalogs installed: translation is skipped"
            )
            done.write_text(f"{count}\n", encoding="utf-8")


def build_task_files(
    out: Path, plan: Plan, seed: int, result: QuickstartResult, report: Report
) -> None:
    from lmforge.quickstart.tasks import build_tasks, pretraining_texts

    tasks_dir = out / "data" / "tasks"
    harvested = tasks_dir / "harvested.json"  # rows the tasks were built from, for the report
    with Stage(result, "tasks", report) as stage:
        if (tasks_dir / "counts.json").is_file() and harvested.is_file():
            result.tasks = json.loads((tasks_dir / "counts.json").read_text(encoding="utf-8"))
            rows = json.loads(harvested.read_text(encoding="utf-8"))
            result.python_rows, result.translation_rows = rows["python"], rows["translation"]
            stage.what = f"kept {tasks_dir}"
            return
        python_rows = list(iter_jsonl(out / PYTHON_FILE))
        zh = out / TRANSLATION_FILE
        zh_rows = list(iter_jsonl(zh)) if zh.is_file() else []
        result.python_rows, result.translation_rows = len(python_rows), len(zh_rows)
        tasks = build_tasks(python_rows, zh_rows, seed)
        counts: dict[str, dict[str, int]] = {}
        for task, splits in tasks.items():
            if not splits["train"] or not splits["test"]:
                continue  # e.g. no translation catalogs installed
            counts[task] = {split: len(rows) for split, rows in splits.items()}
            random.Random(seed).shuffle(splits["train"])  # so that the first N are a sample
            for split, rows in splits.items():
                write_jsonl_atomic(tasks_dir / task / f"{split}.jsonl", rows)
        texts = list(pretraining_texts(python_rows, zh_rows, seed))
        random.Random(seed).shuffle(texts)
        sample = [{"text": t} for t in texts[: plan.pretrain_texts] if t.strip()]
        write_jsonl_atomic(out / "data" / "pretrain.jsonl", sample)
        write_json_atomic(harvested, {"python": len(python_rows), "translation": len(zh_rows)})
        write_json_atomic(tasks_dir / "counts.json", counts)  # last: marks the stage done
        result.tasks = counts
        stage.what = ", ".join(
            f"{t} {c['train']}/{c['validation']}/{c['test']}" for t, c in counts.items()
        )
        stage.what += " (train/validation/test)"


# --------------------------------------------------------------------------- 2-4. training


def tokenizer(out: Path, plan: Plan, seed: int, result: QuickstartResult, report: Report) -> None:
    from lmforge.data.loading import iter_texts
    from lmforge.tokenizers import save_tokenizer, train_tokenizer

    directory = out / "tokenizer"
    with Stage(result, "tokenizer", report) as stage:
        if (directory / "tokenizer.json").is_file():
            stage.what = f"kept {directory}"
        else:
            report("training a byte-level BPE tokenizer on the training split's text...")
            texts = iter_texts(out / "data" / "pretrain.jsonl", ["text"])
            trained = train_tokenizer(
                texts,
                kind="bpe",
                vocab_size=plan.vocab_size,
                max_texts=plan.tokenizer_texts,
                seed=seed,
            )
            save_tokenizer(trained, directory)
            stage.what = f"vocabulary of {len(trained)} tokens -> {directory}"
    result.tokenizer_dir = directory


def _train_block(plan: Plan, steps: int, batch_size: int, stage: str) -> dict[str, Any]:
    return {
        "max_steps": steps,
        "max_minutes": plan.stage_minutes(stage),
        "batch_size": batch_size,
        "eval_every": max(1, steps // 4),
        "eval_batches": 4,
        "save_every": max(1, steps // 8),
        "keep_last": 1,
        "log_every": max(1, min(10, steps // 10)),
    }


def pretrain_config(out: Path, plan: Plan, seed: int) -> dict[str, Any]:
    return {
        "run_dir": str(out / "pretrain"),
        "seed": seed,
        "data": [
            {
                "path": str(out / "data" / "pretrain.jsonl"),
                "task": "text",
                "split": {"validation": 0.02, "test": 0.0},
            }
        ],
        "tokenizer": {"path": str(out / "tokenizer")},
        "model": {
            "family": "t5",
            "preset": plan.model_preset,
            "overrides": plan.model_overrides,
            "dropout": plan.dropout,
        },
        "objective": {
            "name": "span_corruption",
            "block_size": plan.block_size,
            "span_targets": plan.pretrain_targets,
        },
        "optim": {"lr": plan.pretrain_lr, "warmup_steps": plan.warmup_steps},
        "train": _train_block(plan, plan.pretrain_steps, plan.pretrain_batch_size, "pretrain"),
    }


def finetune_config(
    out: Path, plan: Plan, seed: int, tasks: list[str], *, pretrained: bool
) -> dict[str, Any]:
    name = "finetune" if pretrained else "finetune-scratch"
    model: dict[str, Any] = (
        {"pretrained": str(out / "pretrain" / "final")}
        if pretrained
        else {
            "family": "t5",
            "preset": plan.model_preset,
            "overrides": plan.model_overrides,
            "dropout": plan.dropout,
        }
    )
    no_split = {"validation": 0.0, "test": 0.0}
    tasks_dir = out / "data" / "tasks"
    return {
        "run_dir": str(out / name),
        "seed": seed,
        "data": [
            {
                "path": str(tasks_dir / task / "train.jsonl"),
                "task": task,
                "weight": plan.task_weights.get(task, 1.0),
                "max_rows": plan.train_examples_per_task,
                "split": no_split,
            }
            for task in tasks
        ],
        "validation": [
            {
                "path": str(tasks_dir / task / "validation.jsonl"),
                "task": task,
                "max_rows": 64,
                "split": no_split,
            }
            for task in tasks
        ],
        "tokenizer": {"path": str(out / "tokenizer")},
        "model": model,
        "objective": {
            "max_source_length": plan.max_source_length,
            "max_target_length": plan.max_target_length,
        },
        "optim": {"lr": plan.finetune_lr, "warmup_steps": plan.warmup_steps},
        "train": _train_block(plan, plan.finetune_steps, plan.finetune_batch_size, name),
    }


STAGE_RESULT = "quickstart-stage.txt"


def _done(run_dir: Path) -> bool:
    return (run_dir / "final" / "lmforge.json").is_file() and (run_dir / "compute.json").is_file()


def _train(config: dict[str, Any], stage_kind: str) -> str:
    """Train one stage; returns what it did, also left in the run directory."""
    from lmforge.config import RunConfig
    from lmforge.runs import run_training

    trained = run_training(RunConfig.model_validate(config), stage_kind)  # type: ignore[arg-type]
    loss = trained.eval_metrics.get("eval_loss", float("nan"))
    what = (
        f"{trained.step} steps ({trained.stopped_because}), eval loss {loss:.3f} "
        f"-> {trained.final_dir}"
    )
    write_text_atomic(Path(config["run_dir"]) / STAGE_RESULT, what)
    return what


def train_stage(
    name: str, config: dict[str, Any], stage_kind: str, result: QuickstartResult, report: Report
) -> None:
    run_dir = Path(config["run_dir"])
    with Stage(result, name, report) as stage:
        if _done(run_dir):
            stage.what = f"kept {run_dir / 'final'}"
            return
        report(f"{name}: {config['train']['max_steps']} steps -> {run_dir}")
        stage.what = _train(config, stage_kind)


def _train_in_child(config: dict[str, Any], stage_kind: str, log: str, threads: int) -> None:
    """A training stage in a second process (spawned), its output into ``log``."""
    import contextlib

    import datasets
    import torch

    torch.set_num_threads(threads)
    datasets.disable_progress_bars()
    stop_with_parent()
    with (
        open(log, "a", encoding="utf-8") as handle,
        contextlib.redirect_stdout(handle),
        contextlib.redirect_stderr(handle),
    ):
        try:
            _train(config, stage_kind)
        except KeyboardInterrupt:  # stopped and checkpointed; the log says so, not a traceback
            sys.exit(130)


def stop_with_parent() -> None:
    """In a spawned child, from its main thread: when the main process ends, however it ends,
    stop this one as Ctrl-C would (the training loop checkpoints at the end of its step, so the
    same command resumes it). A daemon child is stopped only when its parent exits normally: a
    SIGTERM or SIGKILL to the main process would leave it training on, into a directory the
    next run trains in too. A child of a shell's background job inherits SIGINT ignored; it
    gets Python's handler back, so the loop's graceful stop works here too (no terminal sends
    Ctrl-C to a background job, so nothing else changes)."""
    import multiprocessing
    import signal
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        parent.join()  # waits on the parent's sentinel: returns once it has exited
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


class Background:
    """A training stage running beside the main process's stages, one CPU thread each.

    Small models use two threads poorly (the matrices are too small to split well), so on a
    2-core CPU the fine-tuning from scratch, which needs nothing from pretraining, runs in a
    second process while the main one pretrains and fine-tunes: about 1.5x the steps for the
    same wall time. The child stops with the main process, however that ends (Ctrl-C, a
    SIGTERM, a crash: :func:`stop_with_parent`), and its checkpoints let the same command
    resume it.
    """

    def __init__(self, name: str, config: dict[str, Any], stage_kind: str, report: Report) -> None:
        import multiprocessing

        self.name, self.run_dir, self.report = name, Path(config["run_dir"]), report
        self.log = self.run_dir.parent / "logs" / f"{name}.log"  # the run dir is the loop's
        self.log.parent.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")  # the parent holds torch's threads
        self.process = context.Process(
            target=_train_in_child, args=(config, stage_kind, str(self.log), 1), daemon=True
        )
        self.start = time.perf_counter()
        self.process.start()
        report(
            f"{name}: {config['train']['max_steps']} steps in a second process -> {self.run_dir} "
            f"(progress in {self.log})"
        )

    def join(self, result: QuickstartResult) -> None:
        self.process.join()
        if self.process.exitcode != 0 or not _done(self.run_dir):
            raise RuntimeError(
                f"{self.name} failed (exit code {self.process.exitcode}); see {self.log}"
            )
        what = (self.run_dir / STAGE_RESULT).read_text(encoding="utf-8")
        seconds = time.perf_counter() - self.start
        result.stages.append((self.name, what + " (in parallel)", seconds))
        self.report(f"[bold]{self.name}[/bold]: {what} ({seconds:.1f} s, in parallel)")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_in_parallel(plan: Plan) -> bool:
    """Two training processes of one thread each: on a CPU with at least 2 cores."""
    import torch

    return plan.parallel and not torch.cuda.is_available() and (os.cpu_count() or 1) >= 2


# --------------------------------------------------------------------------- the whole job


def run_quickstart(
    out: str | Path,
    *,
    minutes: float | None,
    seed: int,
    report: Report,
    preset: str = "laptop",
    overrides: list[str] | None = None,
) -> QuickstartResult:
    """Run every stage into ``out``; stages already done there are kept.

    The plan (``plan.json``) is fixed on the first run: resuming with another preset or
    budget is refused rather than mixing two recipes in one directory.
    """
    import datasets
    import transformers

    from lmforge.quickstart.evaluate import evaluate_all
    from lmforge.quickstart.report import write_report

    # one line per stage and the training progress bars; not a bar per datasets.map call
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" at every load
    out = Path(out)
    plan = make_plan(preset, minutes, overrides)
    _check_plan(out, plan, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / PLAN_FILE, {"seed": seed, **plan.to_dict()})
    result = QuickstartResult(out, plan)
    start = time.perf_counter()
    harvest(out, plan, seed, result, report)
    build_task_files(out, plan, seed, result, report)
    tasks = [task for task in TASKS if task in result.tasks]
    if not tasks:
        raise UserError("the harvest gave no task with both training and test examples")
    tokenizer(out, plan, seed, result, report)
    scratch = finetune_config(out, plan, seed, tasks, pretrained=False)
    background = None
    if run_in_parallel(plan) and not _done(Path(scratch["run_dir"])):
        background = Background("finetune-scratch", scratch, "finetune", report)
    with torch_threads(1 if background else None):
        train_stage("pretrain", pretrain_config(out, plan, seed), "pretrain", result, report)
        config = finetune_config(out, plan, seed, tasks, pretrained=True)
        train_stage("finetune", config, "finetune", result, report)
    if background is not None:
        background.join(result)
    else:
        train_stage("finetune-scratch", scratch, "finetune", result, report)
    with Stage(result, "evaluate", report) as stage:
        saved = out / "eval" / "metrics.json"
        models = [out / run / "final" / "lmforge.json" for run in ("finetune", "finetune-scratch")]
        if saved.is_file() and all(saved.stat().st_mtime >= m.stat().st_mtime for m in models):
            result.metrics = json.loads(saved.read_text(encoding="utf-8"))
            stage.what = f"kept {saved}"  # newer than both models it scores
        else:
            report(
                f"evaluating both models and the baselines on {plan.eval_examples} examples "
                "per task"
            )
            result.metrics = evaluate_all(out, plan, seed, tasks)
            stage.what = f"{len(tasks)} tasks -> {out / 'eval'}"
    with Stage(result, "report", report) as stage:
        result.report = write_report(out, result, time.perf_counter() - start)
        write_eval_config(out, plan, seed, tasks)
        stage.what = f"{result.report} and {result.report.with_suffix('.html')}"
    return result


EVAL_CONFIG = "eval.yaml"


def write_eval_config(out: Path, plan: Plan, seed: int, tasks: list[str]) -> Path:
    """``eval.yaml``: the next step, ``lmforge eval run`` on the quickstart's test files, ready
    for the user to add a remote OpenAI-compatible model beside the two local ones."""
    from lmforge.config import dump_config
    from lmforge.evaluation import EvalConfig

    cfg = EvalConfig.model_validate(
        {
            "run_dir": str(out / "eval-run"),
            "seed": seed,
            "models": [
                {"name": "pretrained", "path": str(out / "finetune" / "final")},
                {"name": "scratch", "path": str(out / "finetune-scratch" / "final")},
            ],
            "data": [
                {
                    "name": task,
                    "path": str(out / "data" / "tasks" / task / "test.jsonl"),
                    "task": task,
                    "evaluate_on": "all",
                }
                for task in tasks
            ],
            "decoding": {"max_new_tokens": max(plan.max_new_tokens.values())},
            "max_examples": plan.eval_examples,
        }
    )
    header = (
        f"# lmforge eval run {out / EVAL_CONFIG}\n"
        "# The quickstart's two fine-tuned models on its held-out test files. To compare a\n"
        "# remote OpenAI-compatible model on the same examples, add to models:\n"
        "#   - {name: remote, base_url: http://localhost:8000/v1, model: MODEL_NAME}\n"
    )
    path = out / EVAL_CONFIG
    write_text_atomic(path, header + dump_config(cfg))
    return path


def _check_plan(out: Path, plan: Plan, seed: int) -> None:
    saved = out / PLAN_FILE
    if not saved.is_file():
        return
    previous = json.loads(saved.read_text(encoding="utf-8"))
    current = json.loads(json.dumps({"seed": seed, **plan.to_dict()}))
    if previous != current:
        changed = sorted(k for k in current if previous.get(k) != current[k])
        raise UserError(
            f"{out} holds a quickstart with another plan (changed: {', '.join(changed)}); "
            "run the same command to resume it, or choose another --out"
        )
