from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.config import RunConfig, apply_overrides, dump_config, fill_defaults, load_config
from lmforge.errors import UserError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "data:\n  - path: a.jsonl\n    task: summarize\n"), RunConfig)
    assert cfg.data[0].task == "summarize"
    assert cfg.train.max_steps == 1000
    assert cfg.model.family == "t5"


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  - path: a.jsonl\ntrain:\n  max_stpes: 10\n")
    with pytest.raises(UserError) as exc:
        load_config(path, RunConfig)
    assert "train.max_stpes: unknown key; did you mean 'max_steps'?" in exc.value.message
    assert str(path) in exc.value.message


def test_all_problems_reported_at_once_with_types(tmp_path: Path) -> None:
    path = write(
        tmp_path, "data:\n  - path: a.jsonl\n    task: poetry\noptim:\n  lr: fast\nbogus: 1\n"
    )
    with pytest.raises(UserError) as exc:
        load_config(path, RunConfig)
    msg = exc.value.message
    assert "3 config problems" in msg
    assert "data.0.task" in msg and "'poetry'" in msg
    assert "optim.lr" in msg and "number" in msg
    assert "bogus: unknown key" in msg


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data: required key is missing"):
        load_config(write(tmp_path, "seed: 3\n"), RunConfig)


def test_set_overrides_parse_yaml_values(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  - path: a.jsonl\n")
    cfg = load_config(
        path,
        RunConfig,
        ["train.max_steps=7", "optim.lr=3e-4", "data.0.task=qa", "model.lora.enabled=true"],
    )
    assert cfg.train.max_steps == 7
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data[0].task == "qa"
    assert cfg.model.lora.enabled is True


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.max_steps", "expected KEY=VALUE"),
        ("data.5.path=x", "needs a list index below 1"),
        (".a=1", "dotted path"),
    ],
)
def test_bad_overrides(item: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        apply_overrides({"data": [{"path": "a"}]}, [item])


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  - path: [unclosed\n")
    with pytest.raises(UserError) as exc:
        load_config(path, RunConfig)
    assert f"{path}:" in exc.value.message and "invalid YAML" in exc.value.message


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", RunConfig)
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), RunConfig)


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "data:\n  - path: a.jsonl\nseed: 7\n"), RunConfig)
    again = load_config(write(tmp_path, dump_config(cfg)), RunConfig)
    assert again == cfg


def test_energy_section_defaults_to_the_environment_and_checks_its_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  - path: a.jsonl\n")
    cfg = load_config(path, RunConfig)
    assert (cfg.energy.power_watts, cfg.energy.grid_gco2_per_kwh) == (None, None)
    cfg = load_config(path, RunConfig, ["energy.power_watts=65", "energy.grid_gco2_per_kwh=0"])
    assert (cfg.energy.power_watts, cfg.energy.grid_gco2_per_kwh) == (65.0, 0.0)
    with pytest.raises(UserError) as exc:
        load_config(path, RunConfig, ["energy.power_watts=0", "energy.grid_gco2_per_kwh=-1"])
    assert "energy.power_watts: Input should be greater than 0 (got 0)" in exc.value.message
    assert "energy.grid_gco2_per_kwh: Input should be greater than or equal to 0" in (
        exc.value.message
    )


def test_fill_defaults_completes_sections_and_list_items_and_keeps_unknown_keys() -> None:
    old = {"data": [{"path": "a.jsonl"}], "optim": {"lr": 0.5}, "gone": 1}
    filled = fill_defaults(old, RunConfig)
    assert filled["optim"]["lr"] == 0.5 and filled["optim"]["betas"] == [0.9, 0.98]
    assert filled["data"][0]["split"]["validation"] == 0.05
    assert filled["energy"] == {"power_watts": None, "grid_gco2_per_kwh": None}
    assert filled.pop("gone") == 1
    known = {"data": old["data"], "optim": old["optim"]}
    assert filled == RunConfig.model_validate(known).model_dump(mode="json")
