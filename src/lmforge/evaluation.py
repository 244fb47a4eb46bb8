"""Evaluation runs: models x datasets x metrics -> predictions.jsonl, metrics.json, report.md.

What ``lmforge eval run CONFIG`` does, step by step:

1. load each dataset and take its test split, cut exactly as training cut it (the source's
   ``split`` settings and the run seed), or every row (``evaluate_on: all``);
2. for each model (a local directory or an OpenAI-compatible endpoint), render every example
   with the task template (a local model's own, from its card, when the data keeps the default),
   generate, and score the predictions with the task's metrics, each with its signature;
3. write the predictions, the scores (with counts, time and tokens) and a Markdown report
   into the run directory, which appears whole or not at all.

``evaluate_humaneval`` samples HumanEval completions from one model, runs them in the sandbox
and reports pass@k.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import datasets
from pydantic import Field, field_validator, model_validator

from lmforge.backends import Backend, LikelihoodUnavailable
from lmforge.config import DataSource, EnergyConfig, StrictModel, TemplateConfig, dump_config
from lmforge.data.loading import load_source
from lmforge.data.splits import split_dataset
from lmforge.data.templates import render_example
from lmforge.errors import UserError
from lmforge.fsutil import (
    atomic_dir,
    refuse_to_overwrite,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from lmforge.generation import DecodingSettings
from lmforge.metrics import METRICS, MetricResult, compute_metrics
from lmforge.metrics.pass_at_k import PassAtKReport

if TYPE_CHECKING:
    from lmforge.backends.openai_compat import OpenAICompatBackend

PERPLEXITY = "perplexity"
# What each task is scored with unless ``metrics`` says otherwise. Perplexity needs log-
# likelihoods, which not every backend has, so it is asked for explicitly (except for plain
# text, where nothing else applies).
DEFAULT_METRICS: dict[str, list[str]] = {
    "summarize": ["rouge", "bleu"],
    "code-comment": ["rouge", "bleu", "smoothed_bleu4"],
    "translate": ["bleu", "chrf", "rouge"],
    "code-complete": ["exact_match", "bleu"],
    "code-generate": ["exact_match", "bleu"],
    "qa": ["exact_match"],
    "write": ["rouge", "bleu"],
    "text": [PERPLEXITY],
}
# Template language names -> codes for BLEU's tokenizer; anything else is detected from the
# references (only Chinese, Japanese and Korean change the tokenizer).
LANGUAGE_CODES = {"chinese": "zh", "japanese": "ja", "korean": "ko", "english": "en"}
ROW_INDEX = "__lmforge_row__"


# --------------------------------------------------------------------------- config


class ModelSpec(StrictModel):
    """One model: a local directory (``path``) or an endpoint (``base_url`` + ``model``)."""

    name: str | None = None  # how tables and predictions name it; default: path or model
    path: str | None = None
    allow_pickle: bool = False
    base_url: str | None = None  # e.g. http://localhost:8000/v1
    model: str | None = None  # the endpoint's model name
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable holding the key; null: no key
    mode: Literal["chat", "completions"] = "chat"
    max_concurrency: int = Field(4, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout: float = Field(60.0, gt=0.0)  # seconds per request

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if (self.path is None) == (self.base_url is None):
            raise ValueError("give either path (a local model) or base_url + model (an endpoint)")
        if self.base_url is not None and not self.model:
            raise ValueError(f"base_url {self.base_url} needs model: the endpoint's model name")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path or str(self.model)


class EvalData(DataSource):
    """A dataset to evaluate on: a data source plus which of its rows to use."""

    name: str | None = None  # default: the file name without its suffix
    evaluate_on: Literal["test", "all"] = "test"  # test: the split training held out


class EvalConfig(StrictModel):
    """What ``lmforge eval run`` reads."""

    run_dir: str = "runs/eval"
    seed: int = 42  # must be the training run's seed for the same test split
    models: list[ModelSpec] = Field(min_length=1)
    data: list[EvalData] = Field(min_length=1)
    metrics: list[str] | None = None  # null: the task's defaults (DEFAULT_METRICS)
    decoding: DecodingSettings = Field(default_factory=DecodingSettings)
    max_examples: int | None = Field(None, ge=1)  # per dataset, the first N of the split
    batch_size: int = Field(16, ge=1)  # local models
    report_examples: int = Field(3, ge=0)  # examples shown side by side in report.md
    energy: EnergyConfig = Field(default_factory=EnergyConfig)  # each entry's compute estimate

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str] | None) -> list[str] | None:
        valid = [*METRICS, PERPLEXITY]
        for name in names or []:
            if name not in valid:
                raise ValueError(f"unknown metric {name!r}; choose from {', '.join(valid)}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        for what, names in (
            ("models", [m.label for m in self.models]),
            ("data", data_names(self.data)),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what}: the name {twice[0]!r} is used twice; set name:")
        for i, source in enumerate(self.data):
            if source.task == "text" and any(m != PERPLEXITY for m in self.metrics or []):
                raise ValueError(
                    f"data.{i} has task text: no references to compare with, so only "
                    "perplexity applies"
                )
        return self


def data_names(sources: Sequence[EvalData]) -> list[str]:
    return [s.name or Path(s.path.rstrip("/")).name.split(".")[0] for s in sources]


def make_backend(spec: ModelSpec, *, batch_size: int = 16, allow_encoder: bool = False) -> Backend:
    """The backend a model spec describes (a local model is loaded here); an encoder (masked
    LM) only with ``allow_encoder``, for callers that score rather than generate."""
    if spec.path is None:
        return _endpoint(spec)
    from lmforge.backends.local import LocalBackend

    return LocalBackend(
        spec.path,
        name=spec.label,
        batch_size=batch_size,
        allow_pickle=spec.allow_pickle,
        allow_encoder=allow_encoder,
    )


def _endpoint(spec: ModelSpec) -> OpenAICompatBackend:
    from lmforge.backends.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend(
        str(spec.base_url),
        str(spec.model),
        name=spec.label,
        api_key_env=spec.api_key_env,
        mode=spec.mode,
        max_concurrency=spec.max_concurrency,
        max_retries=spec.max_retries,
        timeout=spec.timeout,
    )


# --------------------------------------------------------------------------- data


@dataclass
class Examples:
    """The rows of one dataset that are evaluated, with stable ids."""

    name: str
    source: EvalData
    ids: list[str]
    rows: list[dict[str, Any]]


def load_examples(source: EvalData, name: str, seed: int, max_examples: int | None) -> Examples:
    """The test split (as training made it) or all rows; the first ``max_examples``."""
    rows = load_source(source)
    if not isinstance(rows, datasets.Dataset):
        raise UserError(f"{source.path}: evaluation needs a map-style dataset")
    rows = rows.add_column(ROW_INDEX, list(range(len(rows))))
    if source.evaluate_on == "test":
        total = len(rows)
        rows = split_dataset(rows, source.split, seed)["test"]
        if len(rows) == 0:
            raise UserError(
                f"{source.path}: the test split is empty (split.test={source.split.test} of "
                f"{total} rows); set evaluate_on: all, or a larger split.test"
            )
    if max_examples is not None and max_examples < len(rows):
        rows = rows.select(range(max_examples))
    records = rows.to_list()
    ids = [f"{name}:{record.pop(ROW_INDEX)}" for record in records]
    return Examples(name, source, ids, records)


def template_for(source: EvalData, backend: Backend) -> TemplateConfig:
    """The data's template, or the model's own from its card when the data keeps the default."""
    own = getattr(backend, "template_for", None)  # local models: the card's template
    if "template" not in source.model_fields_set and own is not None:
        return own(source.task) or source.template
    return source.template


def language_of(task: str, template: TemplateConfig) -> str | None:
    """The predictions' language code for BLEU, where the template says it (translation)."""
    if task != "translate":
        return None
    return LANGUAGE_CODES.get(template.target_lang.strip().lower())


# --------------------------------------------------------------------------- running


@dataclass
class EvalResult:
    """Where a run's outputs are and what metrics.json holds."""

    run_dir: Path
    metrics: dict[str, Any]  # the content of metrics.json
    rows: list[dict[str, Any]]  # the content of predictions.jsonl
    warnings: list[str] = field(default_factory=list)

    @property
    def predictions_path(self) -> Path:
        return self.run_dir / "predictions.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.md"

    def score(self, model: str, dataset: str, metric: str) -> float:
        return self.metrics["results"][model][dataset]["metrics"][metric]["score"]


def _model_info(spec: ModelSpec) -> dict[str, Any]:
    if spec.path is not None:
        return {"kind": "local", "path": spec.path}
    return {"kind": "remote", "base_url": spec.base_url, "model": spec.model, "mode": spec.mode}


def _score_one(
    backend: Backend, examples: Examples, names: list[str], cfg: EvalConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate and score one model on one dataset: its metrics.json entry and its rows."""
    task = examples.source.task
    template = template_for(examples.source, backend)
    pairs = [render_example(task, row, template) for row in examples.rows]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    text_metrics = [n for n in names if n != PERPLEXITY]
    prompt_before, completion_before = backend.usage.snapshot()
    start = time.perf_counter()
    predictions = (
        [outs[0].strip() for outs in backend.generate(sources, cfg.decoding)]
        if text_metrics
        else []
    )
    seconds = time.perf_counter() - start
    prompt_after, completion_after = backend.usage.snapshot()
    scores: dict[str, MetricResult] = {}
    if text_metrics:
        scores = compute_metrics(
            text_metrics, predictions, references, lang=language_of(task, template)
        )
    omitted: dict[str, str] = {}
    if PERPLEXITY in names:
        try:
            scores[PERPLEXITY] = backend.perplexity(sources if task == "text" else pairs)
        except LikelihoodUnavailable as exc:
            omitted[PERPLEXITY] = exc.message
    from lmforge.training.compute import inference_compute  # lazy: the package loads accelerate

    entry = {
        "examples": len(examples.rows),
        "seconds": round(seconds, 3),
        "prompt_tokens": prompt_after - prompt_before,
        "completion_tokens": completion_after - completion_before,
        "compute": inference_compute(
            _local_model(backend),
            prompt_tokens=prompt_after - prompt_before,
            completion_tokens=completion_after - completion_before,
            seconds=seconds,
            power_watts=cfg.energy.power_watts,
            grid_gco2_per_kwh=cfg.energy.grid_gco2_per_kwh,
        ),
        "template": template.model_dump(mode="json"),
        "metrics": {
            name: {k: v for k, v in result.to_dict().items() if k != "per_example"}
            for name, result in scores.items()
        },
        "omitted": omitted,
    }
    rows = []
    for i, (example_id, row) in enumerate(zip(examples.ids, examples.rows, strict=True)):
        record: dict[str, Any] = {
            "id": example_id,
            "dataset": examples.name,
            "task": task,
            "model": backend.name,
            "source": sources[i],
            "reference": references[i],
            "prediction": predictions[i] if predictions else None,
            "scores": {
                name: result.per_example[i]
                for name, result in scores.items()
                if result.per_example is not None
            },
        }
        if "provenance" in row:
            record["provenance"] = row["provenance"]
        rows.append(record)
    return entry, rows


def _check_energy(energy: EnergyConfig) -> None:
    """Resolve the energy figures now, so a bad LMFORGE_POWER_WATTS or
    LMFORGE_GRID_GCO2_PER_KWH fails before minutes of generation rather than after."""
    from lmforge.training.compute import energy_settings  # lazy: the package loads accelerate

    # the device type only picks the default power, which is always valid
    energy_settings("cpu", energy.power_watts, energy.grid_gco2_per_kwh)


def _local_model(backend: Backend) -> Any:
    """The torch model behind a local backend; None for an endpoint (size and hardware unknown)."""
    from lmforge.backends.local import LocalBackend

    return backend.model if isinstance(backend, LocalBackend) else None


def _seed_warning(backend: Backend, examples: Examples, seed: int) -> str | None:
    card_seed = getattr(backend, "card", {}).get("seed")
    source = examples.source
    if source.evaluate_on == "test" and source.split.seed is None and card_seed is not None:
        if card_seed != seed:
            return (
                f"model {backend.name} was trained with seed {card_seed} but {examples.name} "
                f"is split with seed {seed}: its test split may hold training rows; set seed: "
                f"{card_seed}"
            )
    return None


def evaluate(
    cfg: EvalConfig, *, overwrite: bool = False, progress: Callable[[str], None] | None = None
) -> EvalResult:
    """Run every model on every dataset and write the run directory ``cfg.run_dir``."""
    run_dir = Path(cfg.run_dir)
    refuse_to_overwrite(run_dir, overwrite)
    cfg.decoding.check()
    _check_energy(cfg.energy)
    say = progress or (lambda message: None)
    names = data_names(cfg.data)
    sets = [
        load_examples(s, n, cfg.seed, cfg.max_examples)
        for s, n in zip(cfg.data, names, strict=True)
    ]
    results: dict[str, dict[str, Any]] = {}
    rows_by_dataset: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    warnings: list[str] = []
    # Reach every endpoint before spending minutes on local models: a wrong URL fails first.
    endpoints = {spec.label: _endpoint(spec) for spec in cfg.models if spec.base_url is not None}
    try:
        for endpoint in endpoints.values():
            endpoint.connect()
        for spec in cfg.models:
            say(f"loading {spec.label}")
            backend = endpoints.get(spec.label) or make_backend(spec, batch_size=cfg.batch_size)
            try:
                notes = backend.unsupported(cfg.decoding)
                warnings += [f"model {backend.name}: {note}" for note in notes]
                results[backend.name] = {}
                for examples in sets:
                    metric_names = cfg.metrics or DEFAULT_METRICS[examples.source.task]
                    say(f"{backend.name} on {examples.name}: {len(examples.rows)} examples")
                    warning = _seed_warning(backend, examples, cfg.seed)
                    if warning:
                        warnings.append(warning)
                    entry, rows = _score_one(backend, examples, metric_names, cfg)
                    results[backend.name][examples.name] = entry
                    rows_by_dataset[examples.name] += rows
            finally:
                backend.close()
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
    order = {spec.label: i for i, spec in enumerate(cfg.models)}
    rows = [
        row
        for name in names
        for row in sorted(
            rows_by_dataset[name],
            key=lambda r: (int(r["id"].rsplit(":", 1)[1]), order[r["model"]]),
        )
    ]
    metrics = {
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "models": {spec.label: _model_info(spec) for spec in cfg.models},
        "datasets": {
            e.name: {
                "path": e.source.path,
                "task": e.source.task,
                "evaluate_on": e.source.evaluate_on,
                "examples": len(e.rows),
            }
            for e in sets
        },
        "results": results,
        "warnings": warnings,
    }
    from lmforge.reports.markdown import eval_report

    with atomic_dir(run_dir, overwrite=overwrite) as tmp:
        write_text_atomic(tmp / "config.yaml", dump_config(cfg))
        write_jsonl_atomic(tmp / "predictions.jsonl", rows)
        write_json_atomic(tmp / "metrics.json", metrics)
        write_text_atomic(tmp / "report.md", eval_report(metrics, rows, cfg.report_examples))
    return EvalResult(run_dir, metrics, rows, warnings)


# --------------------------------------------------------------------------- HumanEval


@dataclass
class HumanEvalRun:
    """A HumanEval run's outputs: samples, per-sample results, pass@k."""

    out_dir: Path
    pass_at_k: PassAtKReport
    metrics: dict[str, Any]  # the content of metrics.json
    warnings: list[str]

    @property
    def samples_path(self) -> Path:
        return self.out_dir / "samples.jsonl"

    @property
    def results_path(self) -> Path:
        return self.out_dir / "samples.jsonl_results.jsonl"


def evaluate_humaneval(
    spec: ModelSpec,
    out_dir: str | Path,
    *,
    n: int = 1,
    temperature: float = 0.2,
    top_p: float = 0.95,
    ks: Sequence[int] = (1, 10),
    limit: int | None = None,
    max_new_tokens: int = 384,
    seed: int = 42,
    timeout: float = 3.0,
    batch_size: int = 16,
    problems_path: str | Path | None = None,
    overwrite: bool = False,
    energy: EnergyConfig | None = None,
) -> HumanEvalRun:
    """Sample ``n`` completions per HumanEval problem (the first ``limit``), run their tests
    in the sandbox and report pass@k. Prompts go to the model raw, with no task template, and
    completions are cut at the Codex stop sequences. ``temperature`` 0 decodes greedily.
    ``energy`` sets the power and grid figures of the compute estimate (None: environment or
    defaults)."""
    from lmforge import humaneval
    from lmforge.sandbox import isolation

    out_dir = Path(out_dir)
    refuse_to_overwrite(out_dir, overwrite)
    if n < 1:
        raise UserError(f"--n (samples per problem) must be at least 1, got {n}")
    if n > 1 and temperature <= 0:
        raise UserError(f"--n {n} samples per problem need sampling: set --temperature above 0")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"k for pass@k must be a positive integer, got {k!r}")
    settings = DecodingSettings(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=top_p,
        seed=seed,
    )
    settings.check()
    energy = energy or EnergyConfig()
    _check_energy(energy)
    problems = humaneval.load_problems(problems_path)
    if limit is not None:
        problems = dict(list(problems.items())[:limit])
    warnings = list(isolation().warnings)
    if spec.base_url is not None and spec.mode == "chat":
        warnings.append(
            "HumanEval expects a raw code completion; chat models answer in prose and markdown "
            "that fail the tests: use mode completions where the endpoint offers it"
        )
    backend = make_backend(spec, batch_size=batch_size)
    try:
        warnings += backend.unsupported(settings)
        prompts = [problem["prompt"] for problem in problems.values()]
        start = time.perf_counter()
        completions = backend.generate(
            prompts, settings, n, stop=humaneval.CODEX_STOP_SEQUENCES, raw=True
        )
        seconds = time.perf_counter() - start
        prompt_tokens, completion_tokens = backend.usage.snapshot()
        from lmforge.training.compute import inference_compute

        compute = inference_compute(
            _local_model(backend),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            seconds=seconds,
            power_watts=energy.power_watts,
            grid_gco2_per_kwh=energy.grid_gco2_per_kwh,
        )
    finally:
        backend.close()
    samples = [
        {"task_id": task_id, "completion": completion}
        for task_id, group in zip(problems, completions, strict=True)
        for completion in group
    ]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        humaneval.write_samples(tmp / "samples.jsonl", samples)
        result = humaneval.evaluate_samples(
            tmp / "samples.jsonl", problems, k=list(ks), timeout=timeout
        )
        metrics = {
            "model": {"name": spec.label, **_model_info(spec)},
            "problems": len(problems),
            "samples_per_problem": n,
            "decoding": {"temperature": temperature, "top_p": top_p, "seed": seed},
            "seconds": round(seconds, 3),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "compute": compute,
            "metrics": {
                name: {k: v for k, v in r.to_dict().items() if k != "per_example"}
                for name, r in result.pass_at_k.scores.items()
            },
            "omitted": result.pass_at_k.omitted,
            "warnings": warnings,
        }
        write_json_atomic(tmp / "metrics.json", metrics)
    return HumanEvalRun(out_dir, result.pass_at_k, metrics, warnings)


__all__ = [
    "DEFAULT_METRICS",
    "EvalConfig",
    "EvalData",
    "EvalResult",
    "HumanEvalRun",
    "ModelSpec",
    "evaluate",
    "evaluate_humaneval",
    "make_backend",
]
