"""``lmforge report``: a real training run and a real evaluation run, rendered; the numbers in
report.md are those of compute.json, metrics.jsonl and metrics.json."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from lmforge.config import validate
from lmforge.evaluation import EvalConfig, evaluate
from lmforge.reports.run_report import compute_section, format_number, write_run_report
from lmforge.training.logging import read_metrics

TESTS = Path(__file__).parents[1]
TINY_RUN = runpy.run_path(str(TESTS / "training" / "tiny_run.py"))
TINY = runpy.run_path(str(TESTS / "backends" / "tiny_models.py"))
FAKE = runpy.run_path(str(TESTS / "backends" / "fake_openai.py"))


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """A 6-step tiny GPT-2 run, evaluated at steps 3 and 6, at 50 W per device."""
    run_dir = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMFORGE_POWER_WATTS", "50")
        patch.delenv("LMFORGE_GRID_GCO2_PER_KWH", raising=False)
        TINY_RUN["run"](
            run_dir,
            max_steps=6,
            log_every=2,
            eval_every=3,
            eval_data=TINY_RUN["dataset"](n=6, seed=1),
        )
    torch.set_num_threads(threads)
    return run_dir


def _table(markdown: str) -> dict[str, str]:
    """First column -> second column of every two-column Markdown table row."""
    cells = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return {c[0].strip(): c[1].strip() for c in cells if len(c) >= 2}


def _number(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


def test_training_report_numbers_equal_compute_json_and_metrics(training_run):
    report = write_run_report(training_run)
    assert report.out_dir == training_run / "report"
    compute = json.loads((training_run / "compute.json").read_text())
    energy = compute["energy"]
    markdown = report.markdown.read_text(encoding="utf-8")
    table = _table(markdown)
    assert table["tokens"] == f"{compute['tokens']:,}"
    assert table["optimizer steps"] == "6"
    assert _number(table["wall time"]) == pytest.approx(compute["wall_seconds"], abs=0.05)
    assert _number(table["training FLOPs"]) == pytest.approx(compute["train_flops"], rel=1e-3)
    assert table["MFU (model FLOPs utilisation)"] == f"{100 * compute['mfu']:.2f} %"
    assert _number(table["power per device (W)"]) == energy["power_watts_per_device"] == 50.0
    assert _number(table["energy (kWh)"]) == pytest.approx(energy["energy_kwh"], rel=1e-3)
    assert _number(table["grid carbon intensity (gCO2e/kWh)"]) == 481.0
    assert _number(table["emissions (gCO2e)"]) == pytest.approx(energy["co2_g"], rel=1e-3)
    assert "environment (LMFORGE_POWER_WATTS)" in markdown and "Ember" in markdown
    # metrics: the last eval's loss and the last train log, as metrics.jsonl has them
    rows = read_metrics(training_run)
    last_eval = [r for r in rows if r["event"] == "eval"][-1]
    eval_row = next(line for line in markdown.splitlines() if line.startswith("| eval_loss"))
    cells = [c.strip() for c in eval_row.strip("|").split("|")]
    assert cells[1:3] == [format_number(last_eval["eval_loss"]), "6"]
    last_train = [r for r in rows if r["event"] == "train"][-1]
    assert _number(table["train loss (mean since the previous log)"]) == pytest.approx(
        last_train["loss"], rel=1e-3
    )
    assert report.plots == [report.out_dir / "loss.png"]
    assert imread(report.plots[0]).shape[:2] == (450, 800)
    page = report.html.read_text(encoding="utf-8")
    assert '<img alt="train and eval loss" src="loss.png"' in page and "<table>" in page


def test_cli_report_writes_once_then_needs_overwrite(training_run, tmp_path, cli):
    out = tmp_path / "r"
    first = cli("report", training_run, "--out", out)
    assert first.code == 0, first.err
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    again = cli("report", training_run, "--out", out)
    assert again.code == 2 and len(again.err.splitlines()) == 1 and "--overwrite" in again.err
    assert cli("report", training_run, "--out", out, "--overwrite").code == 0
    inside = cli("report", training_run, "--out", training_run)
    assert inside.code == 2 and "would replace the run directory" in inside.err


def test_cli_report_errors_are_one_line(tmp_path, cli):
    missing = cli("report", tmp_path / "nope")
    assert missing.code == 2
    assert missing.err.splitlines() == [
        f"lmforge: error: run directory {tmp_path / 'nope'} does not exist"
    ]
    (tmp_path / "empty").mkdir()
    empty = cli("report", tmp_path / "empty")
    assert empty.code == 2 and "not an lmforge run directory" in empty.err
    assert not (tmp_path / "empty" / "report").exists()


def test_evaluation_report_shows_scores_and_compute_per_model(tmp_path):
    tok = TINY["tokenizer"]()
    model_dir = TINY["save_model"](tmp_path / "gpt2", "gpt2", tok, {"tasks": [], "seed": 7})
    data = TINY["translation_file"](tmp_path / "zh.jsonl")
    with FAKE["FakeOpenAI"](lambda prompt: "今天天气很好") as server:
        cfg = validate(
            EvalConfig,
            {
                "run_dir": str(tmp_path / "eval"),
                "models": [
                    {"name": "tiny", "path": str(model_dir)},
                    {"name": "remote", "base_url": server.url, "model": "m", "api_key_env": None},
                ],
                "data": [
                    {
                        "path": str(data),
                        "task": "translate",
                        "columns": {"source": "en", "target": "zh"},
                        "evaluate_on": "all",
                    }
                ],
                "metrics": ["bleu", "chrf"],
                "decoding": {"max_new_tokens": 3},
                "max_examples": 2,
            },
        )
        result = evaluate(cfg)
    local = result.metrics["results"]["tiny"]["zh"]["compute"]
    remote = result.metrics["results"]["remote"]["zh"]["compute"]
    assert local["tokens"] == local["prompt_tokens"] + local["completion_tokens"] > 0
    assert local["flops"] == 2 * local["matmul_params"] * local["tokens"]
    assert local["energy"]["energy_kwh"] > 0
    assert remote["flops"] is None and remote["energy"] is None
    report = write_run_report(result.run_dir)
    markdown = report.markdown.read_text(encoding="utf-8")
    assert "# Evaluation report" in markdown and "![scores on zh](scores-zh.png)" in markdown
    tiny_row = next(line for line in markdown.splitlines() if line.startswith("| tiny | zh |"))
    cells = [c.strip() for c in tiny_row.strip("|").split("|")]
    assert cells[2] == format_number(local["tokens"])
    assert cells[4] == format_number(local["flops"])
    assert cells[5] == format_number(local["energy"]["energy_kwh"])
    remote_row = next(line for line in markdown.splitlines() if line.startswith("| remote | zh |"))
    assert remote_row.count("n/a") == 3  # FLOPs, energy, CO2 of someone else's hardware
    assert imread(report.out_dir / "scores-zh.png").shape[:2] == (450, 800)


def test_compute_section_of_a_remote_evaluation_says_what_is_missing():
    text = compute_section(
        {"tokens": 12, "wall_seconds": 75.0, "flops": None, "energy": None}, title="Remote"
    )
    assert text.startswith("## Remote")
    table = _table(text)
    assert table["tokens"] == "12" and table["wall time"] == "75.0 s (0:01:15)"
    assert table["inference FLOPs"] == "n/a"
    assert "remote endpoint's hardware is unknown" in text
