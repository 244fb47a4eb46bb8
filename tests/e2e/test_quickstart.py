"""`lmforge quickstart` end to end at the `test` preset: every stage on this machine's own
Python standard library (and its translation catalogs, when it has some), in seconds."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ARTEFACTS = [
    "plan.json",
    "data/python.jsonl",
    "data/pretrain.jsonl",
    "data/tasks/counts.json",
    "data/tasks/harvested.json",
    "tokenizer/tokenizer.json",
    "pretrain/final/model.safetensors",
    "pretrain/compute.json",
    "pretrain/metrics.jsonl",
    "finetune/final/model.safetensors",
    "finetune/final/lmforge.json",
    "finetune/compute.json",
    "finetune-scratch/final/model.safetensors",
    "eval/metrics.json",
    "report.md",
    "report.html",
    "eval.yaml",
    "plots/loss-pretrain.png",
    "plots/loss-finetune.png",
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def summary_table(report: str) -> dict[tuple[str, str], tuple[float, float, float, str]]:
    """(task, metric) -> (pretrained, scratch, baseline, verdict) from report.md's table."""
    section = report.split("## Held-out scores", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"-?\d+\.\d\d", cells[2]):
            rows[cells[0], cells[1]] = (*map(float, cells[2:5]), cells[5])
    return rows


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from lmforge.cli.main import main

    out = tmp_path_factory.mktemp("qs") / "run"
    args = ["quickstart", "--preset", "test", "--out", str(out), "--seed", "3"]
    return out, args, main


def test_every_artefact_and_the_report_agrees_with_metrics_json(quickstart, cli) -> None:
    out, args, _ = quickstart
    result = cli(*args)
    assert result.code == 0, result.err
    for rel in ARTEFACTS:
        assert (out / rel).is_file(), rel
    metrics = json.loads((out / "eval/metrics.json").read_text())
    tasks = list(metrics["tasks"])
    assert {"code-comment", "code-generate", "code-complete"} <= set(tasks)
    for task in tasks:
        assert (out / f"plots/metrics-{task}.png").is_file()
        assert png_size(out / f"plots/metrics-{task}.png") == (800, 450)
        predictions = (out / f"eval/{task}.jsonl").read_text().splitlines()
        assert len(predictions) == metrics["examples"][task] == 6
        first = json.loads(predictions[0])
        assert {"source", "reference", "baseline", "pretrained + fine-tuned"} <= set(first)

    table = summary_table((out / "report.md").read_text())
    expected = {
        (task, name): tuple(
            round(systems[s][name]["score"], 2)
            for s in ("pretrained + fine-tuned", "fine-tuned from scratch", "baseline")
        )
        for task, systems in metrics["tasks"].items()
        for name in systems["baseline"]
    }
    assert {k: v[:3] for k, v in table.items()} == expected
    for (task, name), (ours, _, base, verdict) in table.items():
        assert metrics["beats_baseline"][task][name] == (verdict == "beats baseline")
        assert (ours > base) == metrics["beats_baseline"][task][name]
    # the input-use control: both models on every task, and the report shows the same numbers
    uses = metrics["input_use"]
    assert set(uses) == set(tasks)
    report = (out / "report.md").read_text()
    for task, systems in uses.items():
        assert set(systems) == {"pretrained + fine-tuned", "fine-tuned from scratch"}
        for system, use in systems.items():
            assert use["gap"] == pytest.approx(use["shuffled_nll"] - use["matched_nll"])
            cells = f"| {task} | {system} | {use['matched_nll']:.3f} | {use['shuffled_nll']:.3f} |"
            assert cells in report
    if (os.cpu_count() or 1) >= 2:  # from-scratch fine-tuning ran in a second process
        said = " ".join(result.err.split())  # rich wraps long lines
        assert "finetune-scratch" in said and "in parallel)" in said
        assert (out / "logs/finetune-scratch.log").is_file()
    html = (out / "report.html").read_text()
    assert '<img alt="code-comment" src="plots/metrics-code-comment.png"' in html
    assert "plots/loss-finetune.png" in html
    # the summary on stdout and the next commands
    assert "code-comment" in result.out and "rougeL" in result.out
    said = result.out.replace("\n", "")
    assert f"lmforge generate {out / 'finetune' / 'final'} --task code-comment" in said
    # the printed command decodes as the evaluation did (the test preset's plan)
    decoding = {"no-repeat-ngram-size": "3", "repetition-penalty": "1.3"}
    words = " ".join(result.out.split())  # rich wraps at spaces, long paths anywhere
    assert all(f"--{k} {v}" in words for k, v in decoding.items()), words
    from lmforge.config import load_config
    from lmforge.evaluation import EvalConfig

    follow_up = load_config(out / "eval.yaml", EvalConfig)  # the printed next step is valid
    assert [m.path for m in follow_up.models][0] == str(out / "finetune" / "final")
    assert sorted(d.task for d in follow_up.data) == sorted(tasks)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["seed"] == 3 and plan["preset"] == "test"
    pretrain = yaml.safe_load((out / "pretrain" / "config.yaml").read_text())
    assert pretrain["objective"]["name"] == "span_corruption"
    assert pretrain["objective"]["span_targets"] == "text"  # the plan's pretrain_targets
    for run in ("pretrain", "finetune", "finetune-scratch"):
        compute = json.loads((out / run / "compute.json").read_text())
        assert compute["steps"] == plan["pretrain_steps" if run == "pretrain" else "finetune_steps"]


def test_the_same_command_resumes_and_reproduces(quickstart, cli) -> None:
    out, args, _ = quickstart
    before = (out / "eval/metrics.json").read_bytes()
    harvest_line = re.search(r"Harvested [^.]*\.", (out / "report.md").read_text()).group(0)
    again = cli(*args)  # everything done: every stage is kept
    assert again.code == 0, again.err
    # the kept tasks stage reports the harvest's row counts without reading it again
    assert re.search(r"Harvested [^.]*\.", (out / "report.md").read_text()).group(0) == (
        harvest_line
    )
    harvested = json.loads((out / "data/tasks/harvested.json").read_text())
    assert harvested["python"] == sum(1 for _ in open(out / "data/python.jsonl"))
    assert again.err.count("kept") >= 8
    assert "evaluate: kept" in " ".join(again.err.split())
    # lose the fine-tuned model and the evaluation: they are redone, to the same numbers
    shutil.rmtree(out / "finetune")
    shutil.rmtree(out / "eval")
    redone = cli(*args)
    assert redone.code == 0, redone.err
    assert "kept" in redone.err and "finetune: 4 steps" in redone.err
    assert (out / "eval/metrics.json").read_bytes() == before


def test_another_plan_in_the_same_directory_is_refused(quickstart, cli) -> None:
    out, args, _ = quickstart
    result = cli(*args[:-2], "--seed", "4")
    assert result.code == 2
    assert "another plan" in result.err and "seed" in result.err
    assert "Traceback" not in result.err


def test_unknown_preset_is_one_line(cli, tmp_path) -> None:
    result = cli("quickstart", "--preset", "huge", "--out", str(tmp_path / "q"))
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "lmforge: error: unknown --preset 'huge'; choose from laptop, small, base, test"
    ]
    assert not (tmp_path / "q").exists()
