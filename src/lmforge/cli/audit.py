"""``lmforge audit bias MODEL...``: minimal-pair likelihoods and generation word rates per
demographic category, for one model or several side by side.

    lmforge audit bias runs/cda runs/base --out runs/bias-audit
    lmforge audit bias gpt-4o-mini --endpoint https://api.openai.com/v1 --mode chat
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lmforge.cli.evaluate import _key_env, _local, _remote
from lmforge.cli.main import app
from lmforge.config import validate

audit_app = typer.Typer(help="Audit models: bias across demographic groups.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _model_spec(item: str, endpoint: str | None, mode: str, api_key_env: str) -> dict[str, Any]:
    """A local ``[NAME=]DIR`` (a run directory means its final/), ``BASE_URL#MODEL``, or with
    ``--endpoint`` the endpoint's model name."""
    remote = {"mode": mode, "api_key_env": _key_env(api_key_env)}
    if endpoint is not None:
        return {"name": item, "base_url": endpoint, "model": item, **remote}
    if item.startswith(("http://", "https://")):
        base_url, model = _remote(item, "MODEL")
        return {"name": model, "base_url": base_url, "model": model, **remote}
    spec = _local(item)
    path = Path(spec["path"])
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        spec = {"name": spec.get("name", spec["path"]), "path": str(path / "final")}
    return spec


@audit_app.command("bias")
def bias(
    models: list[str] = typer.Argument(
        ...,
        metavar="MODEL...",
        help="[NAME=]DIR of a model or run directory, or BASE_URL#MODEL of an OpenAI-compatible "
        "API; with --endpoint, the endpoint's model names.",
    ),
    templates: Path | None = typer.Option(
        None, "--templates", help="Your templates (JSON Lines, the format of docs/bias.md)."
    ),
    lexicons: Path | None = typer.Option(
        None, "--lexicons", help="Your lexicons (JSON: lang -> name -> words), added to ours."
    ),
    builtin: bool = typer.Option(
        True, "--builtin/--no-builtin", help="Use lmforge's templates too (--templates adds)."
    ),
    lang: list[str] = typer.Option(
        [], "--lang", help="Only templates in this language: en or zh (repeatable; default both)."
    ),
    out: Path = typer.Option(Path("runs/bias-audit"), "--out", help="Directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling and of the bootstrap."),
    samples: int = typer.Option(10, "--samples", min=1, help="Continuations per prompt."),
    max_new_tokens: int = typer.Option(20, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Sample from this probability mass."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="BASE_URL of an OpenAI-compatible API serving every MODEL."
    ),
    mode: str = typer.Option(
        "completions",
        "--mode",
        help="Remote API: completions (log-likelihoods where echo+logprobs work) or chat.",
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="Variable holding the remote API key (none)."
    ),
) -> None:
    """Compare what models do with prompts that differ only in a demographic term.

    Writes report.md, results.json and bias.png to --out: per category, how often the
    stereotyped side of a minimal pair is more likely (with a Wilson interval), and how the
    rate of lexicon words in sampled continuations differs between groups."""
    from lmforge.evaluation import ModelSpec
    from lmforge.responsible.audit import AuditSettings, audit_bias

    specs = [
        validate(ModelSpec, _model_spec(item, endpoint, mode, api_key_env), f"MODEL {item}")
        for item in models
    ]
    settings = AuditSettings(
        seed=seed,
        samples=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
    )
    result = audit_bias(
        specs,
        out,
        templates_file=templates,
        lexicons_file=lexicons,
        builtin=builtin,
        languages=lang or ["en", "zh"],
        settings=settings,
        overwrite=overwrite,
        progress=lambda message: typer.echo(message, err=True),
    )
    for model in result.results["models"]:
        likelihood = model["likelihood"]
        if likelihood["measured"]:
            for category, s in likelihood["categories"].items():
                low, high = s["ci"]
                typer.echo(
                    f"{model['name']}  {category}: stereotyped side more likely in "
                    f"{s['stereotyped_preferred']}/{s['pairs']} pairs = {100 * s['rate']:.1f}% "
                    f"(95% CI {100 * low:.1f}-{100 * high:.1f})"
                )
        else:
            typer.echo(f"{model['name']}  likelihood not measured: {likelihood['reason']}")
    typer.echo(f"report: {result.out_dir / 'report.md'}")
