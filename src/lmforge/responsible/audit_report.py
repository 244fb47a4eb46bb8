"""The bias audit's outputs: results.json (everything), report.md (tables) and bias.png.

All three are written into a temporary directory that becomes ``--out`` only when complete
(:func:`lmforge.fsutil.atomic_dir`). The plot is drawn on matplotlib's Agg canvas without
pyplot: no display, no global figure state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from lmforge.fsutil import atomic_dir

PLOT = "bias.png"
DPI = 100


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _interval(ci: list[float] | None, percent: bool = True) -> str:
    if ci is None:
        return "n/a"
    if percent:
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _signed_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} pts"


NONE_MEASURED = 'No model could be measured here (see "Not measured" below).'


def likelihood_table(results: dict[str, Any]) -> str:
    rows = []
    for model in results["models"]:
        likelihood = model["likelihood"]
        if not likelihood["measured"]:
            continue
        for category, s in likelihood["categories"].items():
            rows.append(
                [
                    _escape(model["name"]),
                    category,
                    s["pairs"],
                    s["stereotyped_preferred"],
                    _percent(s["rate"]),
                    _interval(s["ci"]),
                    f"{s['mean_difference']:+.3f}",
                    _interval(s["mean_difference_ci"], percent=False),
                ]
            )
    if not rows:
        return NONE_MEASURED
    headers = ["model", "category", "pairs", "stereotyped preferred", "rate", "95% CI"]
    headers += ["mean LL difference (nats/token)", "95% CI"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def generation_table(results: dict[str, Any]) -> str:
    rows = []
    for model in results["models"]:
        generation = model["generation"]
        if not generation["measured"]:
            continue
        for category, s in generation["categories"].items():
            for d in s["differences"]:
                a, b = d["groups"]
                stats_a, stats_b = s["groups"][a][d["lexicon"]], s["groups"][b][d["lexicon"]]
                rows.append(
                    [
                        _escape(model["name"]),
                        category,
                        d["lexicon"],
                        f"{a}: {stats_a['with_word']}/{stats_a['generations']} = "
                        f"{_percent(stats_a['rate'])} {_interval(stats_a['ci'])}",
                        f"{b}: {stats_b['with_word']}/{stats_b['generations']} = "
                        f"{_percent(stats_b['rate'])} {_interval(stats_b['ci'])}",
                        _signed_percent(d["difference"]),
                        _interval(d["ci"]),
                    ]
                )
    if not rows:
        return NONE_MEASURED
    headers = ["model", "category", "lexicon", "group A", "group B", "A - B", "95% CI"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def render_markdown(results: dict[str, Any]) -> str:
    """report.md: what was measured, the two tables, what could not be measured, the plot."""
    settings, intervals, templates = results["settings"], results["intervals"], results["templates"]
    names = ", ".join(f"`{_escape(m['name'])}`" for m in results["models"])
    sources = []
    if templates.get("builtin", True):
        sources.append("lmforge's templates")
    sources.append("lmforge's lexicons")
    if templates.get("user_templates"):
        sources.append(f"templates from `{templates['user_templates']}`")
    if templates.get("user_lexicons"):
        sources.append(f"lexicons from `{templates['user_lexicons']}`")
    lines = [
        "# Bias audit",
        "",
        f"Models: {names}. Inputs: {', '.join(sources) or 'none'}"
        f" ({', '.join(templates.get('languages', []))}): {templates['pairs']} minimal pairs, "
        f"{templates['prompt_pairs']} prompt pairs x {settings['samples']} samples "
        f"(temperature {settings['temperature']}, top-p {settings['top_p']}, at most "
        f"{settings['max_new_tokens']} new tokens, seed {settings['seed']}). "
        f"lmforge {results['lmforge_version']}.",
        "",
        "## Likelihood of minimal pairs (CrowS-Pairs style)",
        "",
        "How often the model gives the stereotyped side of a minimal pair the higher "
        "log-likelihood (50% is no preference), and the mean log-likelihood difference, "
        "stereotyped minus anti-stereotyped, in nats per token (above 0 leans to the stereotype). "
        f"Intervals: {intervals['rate']} for the rate, {intervals['mean_difference']} for the "
        f"mean; {100 * intervals['confidence']:.0f}%.",
        "",
        likelihood_table(results),
        "",
        *[
            f"- `{_escape(m['name'])}` scored by {m['likelihood']['score']}."
            for m in results["models"]
            if m["likelihood"]["measured"] and "score" in m["likelihood"]
        ],
        "",
        "## Lexicon words in generations",
        "",
        "Share of sampled continuations that use at least one word of each lexicon, per group "
        "(used/generations = rate [CI]), and the difference between the groups in percentage "
        f"points. Intervals: {intervals['rate']} per group, {intervals['difference']} for the "
        "difference.",
        "",
        generation_table(results),
        "",
    ]
    missing = [
        f"- `{_escape(m['name'])}`, {part}: {m[part]['reason']}"
        for m in results["models"]
        for part in ("likelihood", "generation")
        if not m[part]["measured"]
    ]
    if missing:
        lines += ["## Not measured", "", *missing, ""]
    lines += [f"![bias audit plot]({PLOT})", ""]
    return "\n".join(lines)


def _series(
    ax: Any,
    keys: list[Any],
    found: dict[Any, tuple[float, list[float]]],
    i: int,
    models: int,
    label: str,
) -> None:
    """One model's points (value, [low, high]) at the x positions of the keys it has, shifted
    so several models' points sit side by side."""
    offset = (i - (models - 1) / 2) * 0.8 / models
    placed = [(k + offset, *found[key]) for k, key in enumerate(keys) if key in found]
    if not placed:
        return
    xs, values, cis = zip(*placed, strict=True)
    below = [v - ci[0] for v, ci in zip(values, cis, strict=True)]
    above = [ci[1] - v for v, ci in zip(values, cis, strict=True)]
    ax.errorbar(xs, values, yerr=[below, above], fmt="o", capsize=4, color=f"C{i}", label=label)


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: the stereotyped-preferred rate per category with its interval (0.5 dashed).
    Right: the generation rate difference per category and lexicon (0 dashed). One colour
    per model."""
    fig = Figure(figsize=(12.0, 5.0), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    models = results["models"]
    rates = [
        {c: (s["rate"], s["ci"]) for c, s in m["likelihood"]["categories"].items()}
        if m["likelihood"]["measured"]
        else {}
        for m in models
    ]
    differences = [
        {
            (c, d["lexicon"], *d["groups"]): (d["difference"], d["ci"])
            for c, s in m["generation"]["categories"].items()
            for d in s["differences"]
            if d["difference"] is not None
        }
        if m["generation"]["measured"]
        else {}
        for m in models
    ]
    categories = list(dict.fromkeys(c for found in rates for c in found))
    keys = list(dict.fromkeys(key for found in differences for key in found))
    for i, model in enumerate(models):
        _series(left, categories, rates[i], i, len(models), model["name"])
        _series(right, keys, differences[i], i, len(models), model["name"])

    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set_xticks(range(len(categories)), categories)
    left.set_xlim(-0.5, max(1, len(categories)) - 0.5)
    left.set_ylim(-0.03, 1.03)  # points at 0 and 1 stay whole
    left.set_ylabel("stereotyped side more likely (rate)")
    left.set_title("minimal pairs")
    right.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    labels = [f"{c}/{lexicon}\n{a} - {b}" for c, lexicon, a, b in keys]
    right.set_xticks(range(len(keys)), labels, rotation=30, ha="right", fontsize=8)
    right.set_xlim(-0.5, max(1, len(keys)) - 0.5)
    right.set_ylim(-1.05, 1.05)
    right.set_ylabel("difference in lexicon-word rate")
    right.set_title("generations")
    for ax, shown in ((left, categories), (right, keys)):
        if not shown:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    handles = {}  # one legend entry per model, whichever panel it has points in
    for ax in (left, right):
        handles.update({label: h for h, label in zip(*ax.get_legend_handles_labels(), strict=True)})
    if handles:
        fig.legend(
            handles.values(), handles.keys(), loc="outside lower center", ncols=4, fontsize=8
        )
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI)


def write_report(results: dict[str, Any], out: Path, *, overwrite: bool = False) -> None:
    """results.json, report.md and bias.png, atomically, into ``out``."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "results.json").write_text(
            json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "report.md").write_text(render_markdown(results), encoding="utf-8")
        plot(results, tmp / PLOT)
