"""Every shipped config loads, and begins with the exact command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmforge.config import RunConfig, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
EVAL_CONFIGS = sorted((CONFIGS / "eval").glob("*.yaml"))
ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))


def test_configs_exist() -> None:
    assert len(RUN_CONFIGS) >= 5


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_validates(path: Path) -> None:
    cfg = load_config(path, RunConfig)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    verb = "pretrain" if cfg.model.pretrained is None else "finetune"
    assert first == f"# lmforge {verb} configs/{path.relative_to(CONFIGS)}"


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_eval_config_validates(path: Path) -> None:
    from lmforge.evaluation import EvalConfig

    load_config(path, EvalConfig)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# lmforge eval run configs/{path.relative_to(CONFIGS)}"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_starts_with_its_command(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), f"{path} must begin with the command that runs it"
    assert str(path.relative_to(CONFIGS)) in text.splitlines()[0]
    assert isinstance(yaml.safe_load(text), dict)
