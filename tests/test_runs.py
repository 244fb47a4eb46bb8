"""From a RunConfig to a run: resuming older run directories, dropout and energy settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from torch import nn

from lmforge.config import ModelConfig, RunConfig, dump_config
from lmforge.errors import UserError
from lmforge.models import build_model
from lmforge.runs import RunData, _model_and_tokenizer, check_run_dir, run_training
from lmforge.tokenizers import train_tokenizer
from lmforge.training import compute
from lmforge.training.compute import GRID_ENV, POWER_ENV

GPT2_DROPOUT = ("resid_pdrop", "embd_pdrop", "attn_pdrop")


def saved_run(tmp_path: Path, cfg: RunConfig, drop: list[str]) -> Path:
    """A run directory whose config.yaml lacks the keys ``drop`` (dotted), as an older lmforge
    that did not have those fields would have written it."""
    data = yaml.safe_load(dump_config(cfg))
    for key in drop:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return run_dir


OLDER = ["energy", "optim.rdrop_alpha", "data.0.max_rows", "augment"]


def test_keys_missing_from_an_older_config_count_as_their_defaults(tmp_path: Path) -> None:
    cfg = RunConfig(data=[{"path": "a.jsonl"}])
    run_dir = saved_run(tmp_path, cfg, OLDER)
    check_run_dir(cfg, run_dir, overwrite=False)  # resumes: nothing changed


def test_a_missing_key_set_away_from_its_default_is_a_change(tmp_path: Path) -> None:
    cfg = RunConfig(data=[{"path": "a.jsonl"}])
    run_dir = saved_run(tmp_path, cfg, OLDER)
    changed = cfg.model_copy(deep=True)
    changed.optim.rdrop_alpha = 0.5
    changed.energy.power_watts = 65.0
    changed.train.max_steps = 7
    with pytest.raises(UserError) as exc:
        check_run_dir(changed, run_dir, overwrite=False)
    assert "(changed: energy.power_watts, optim.rdrop_alpha, train.max_steps)" in (
        exc.value.message
    )


def test_a_key_lmforge_no_longer_has_is_a_change(tmp_path: Path) -> None:
    cfg = RunConfig(data=[{"path": "a.jsonl"}])
    run_dir = saved_run(tmp_path, cfg, ["energy"])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["train"]["retired_knob"] = 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    with pytest.raises(UserError, match=r"\(changed: train\.retired_knob\)"):
        check_run_dir(cfg, run_dir, overwrite=False)


# --------------------------------------------------------------------------- a fine-tune


def rows(n: int) -> list[dict[str, str]]:
    return [{"document": f"the number {i} plus one", "summary": f"{i + 1}"} for i in range(n)]


@pytest.fixture
def pretrained(tmp_path: Path) -> Path:
    """A tiny GPT-2 checkpoint saved with dropout 0.1, and a summarize dataset."""
    texts = [f"{r['document']} {r['summary']}" for r in rows(64)]
    tokenizer = train_tokenizer(texts, kind="bpe", vocab_size=400, min_frequency=1)
    model = build_model(ModelConfig(family="gpt2", dropout=0.1), tokenizer, "causal_lm")
    model.save_pretrained(tmp_path / "pre")
    tokenizer.save_pretrained(tmp_path / "pre")
    with (tmp_path / "data.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows(32))
    return tmp_path / "pre"


def finetune_config(tmp_path: Path, pretrained: Path, **sections: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run_dir": str(tmp_path / "ft"),
            "data": [{"path": str(tmp_path / "data.jsonl"), "task": "summarize"}],
            "model": {"pretrained": str(pretrained), "dropout": 0.0},
            "objective": {"max_source_length": 16, "max_target_length": 8},
            "train": {"max_steps": 2, "batch_size": 4, "precision": "fp32", "log_every": 1},
            **sections,
        }
    )


def dropout_rates(model: nn.Module) -> set[float]:
    return {m.p for m in model.modules() if isinstance(m, nn.Dropout)}


def test_model_dropout_replaces_the_rates_of_a_pretrained_checkpoint(tmp_path, pretrained):
    cfg = finetune_config(tmp_path, pretrained)
    no_data = RunData([], [], [])
    model, _, _ = _model_and_tokenizer(cfg, "finetune", no_data, tmp_path / "ft")
    assert [getattr(model.config, name) for name in GPT2_DROPOUT] == [0.0, 0.0, 0.0]
    assert dropout_rates(model) == {0.0}
    # unset, the checkpoint's own rates stay
    cfg.model.dropout = None
    model, _, _ = _model_and_tokenizer(cfg, "finetune", no_data, tmp_path / "ft")
    assert [getattr(model.config, name) for name in GPT2_DROPOUT] == [0.1, 0.1, 0.1]
    assert dropout_rates(model) == {0.1}


def test_finetune_keeps_the_new_dropout_and_reports_the_configured_energy(
    tmp_path, pretrained, monkeypatch
):
    monkeypatch.setattr(compute, "measure_matmul_peak", lambda device, dtype: 1e10)
    monkeypatch.setenv(POWER_ENV, "99")  # the config beats the environment
    monkeypatch.delenv(GRID_ENV, raising=False)
    energy = {"power_watts": 65.0, "grid_gco2_per_kwh": 0.0}
    result = run_training(finetune_config(tmp_path, pretrained, energy=energy), "finetune")
    saved = json.loads((result.final_dir / "config.json").read_text())
    assert [saved[name] for name in GPT2_DROPOUT] == [0.0, 0.0, 0.0]
    report = json.loads((tmp_path / "ft" / "compute.json").read_text())["energy"]
    assert report["power_watts_per_device"] == 65.0
    assert report["power_source"] == "run config (energy.power_watts)"
    assert report["grid_gco2_per_kwh"] == 0.0 and report["co2_g"] == 0.0
    # seconds is rounded to the millisecond in the report
    assert report["energy_kwh"] == pytest.approx(65.0 * report["seconds"] / 3.6e6, abs=1e-8)


def test_a_bad_energy_environment_value_fails_before_training(tmp_path, pretrained, monkeypatch):
    monkeypatch.setenv(POWER_ENV, "lots")
    with pytest.raises(UserError, match=f"^{POWER_ENV}='lots': expected a number > 0"):
        run_training(finetune_config(tmp_path, pretrained), "finetune")
    assert not list((tmp_path / "ft").glob("checkpoints/step-*"))
    assert not (tmp_path / "ft" / "metrics.jsonl").exists()
