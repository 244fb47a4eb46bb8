"""CDA inside a run: the counterfactual rows reach the collator the trainer batches with, in
the training split only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import lmforge.runs as runs
from lmforge.config import RunConfig

PAIRS = [
    ("He is her father.", "他是她的父亲。"),
    ("The man thanked his wife.", "男人感谢他的妻子。"),
    ("She met the king.", "她见了国王。"),
    ("My brother is tall.", "我的哥哥很高。"),
    ("The cat sleeps.", "猫在睡觉。"),
    ("It rains today.", "今天下雨。"),
]
COUNTERFACTUALS = [
    ("She is his mother.", "她是他的母亲。"),
    ("The woman thanked her husband.", "女人感谢她的丈夫。"),
    ("He met the queen.", "他见了女王。"),
    ("My sister is tall.", "我的姐姐很高。"),
]
VALIDATION = [("He is here.", "他在这里。"), ("The boy runs.", "男孩跑。")]


def _jsonl(path: Path, pairs: list[tuple[str, str]]) -> str:
    path.write_text(
        "".join(json.dumps({"en": en, "zh": zh}, ensure_ascii=False) + "\n" for en, zh in pairs),
        encoding="utf-8",
    )
    return str(path)


def _config(tmp_path: Path, cda: bool) -> RunConfig:
    source = {"task": "translate", "columns": {"source": "en", "target": "zh"}}
    return RunConfig.model_validate(
        {
            "run_dir": str(tmp_path / "run"),
            "seed": 3,
            "data": [
                {
                    "path": _jsonl(tmp_path / "train.jsonl", PAIRS),
                    **source,
                    "split": {"validation": 0.0, "test": 0.0},
                }
            ],
            "validation": [{"path": _jsonl(tmp_path / "valid.jsonl", VALIDATION), **source}],
            "tokenizer": {"vocab_size": 400, "min_frequency": 1},
            "model": {"family": "gpt2", "preset": "tiny"},
            "optim": {"lr": 1e-3, "warmup_steps": 0},
            # 10 rows in batches of 2: five steps are one epoch, every row batched once
            "train": {
                "max_steps": 5,
                "batch_size": 2,
                "precision": "fp32",
                "eval_every": 1000,
                "save_every": 1000,
            },
            "augment": {"cda": {"enabled": cda}},
        }
    )


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Wraps the trainer: records every example its collator batches and the eval set size."""
    record: dict[str, Any] = {"rows": []}
    real_train = runs.train

    def train(model, tokenizer, train_dataset, collator, **kwargs):
        def collate(rows: list[dict[str, Any]]) -> Any:
            for row in rows:
                record["rows"].append(tokenizer.decode(row["input_ids"], skip_special_tokens=True))
            return collator(rows)

        record["eval_rows"] = len(kwargs["eval_dataset"])
        return real_train(model, tokenizer, train_dataset, collate, **kwargs)

    monkeypatch.setattr(runs, "train", train)
    return record


def test_counterfactual_rows_reach_the_trainer(tmp_path: Path, seen: dict[str, Any]) -> None:
    result = runs.run_training(_config(tmp_path, cda=True), "finetune")

    assert result.step == 5
    # the collator also batches the final evaluation: the validation rows, never augmented
    assert seen["eval_rows"] == len(VALIDATION)
    evaluated = [row for row in seen["rows"] if any(en in row for en, _ in VALIDATION)]
    assert len(evaluated) == len(VALIDATION)
    assert not any("She is here." in row or "女孩跑。" in row for row in seen["rows"])
    trained = [row for row in seen["rows"] if row not in evaluated]
    assert len(trained) == 10  # 6 rows + 4 copies, each batched once in the epoch
    for en, zh in PAIRS + COUNTERFACTUALS:
        assert sum(en in row and zh in row for row in trained) == 1, (en, zh)
    summary = json.loads((tmp_path / "run" / runs.AUGMENT_FILE).read_text(encoding="utf-8"))
    assert summary["cda"][0]["train_rows"] == 10
    assert summary["cda"][0]["counterfactual_rows"] == 4


def test_without_cda_the_trainer_sees_the_data_as_given(tmp_path: Path) -> None:
    data = runs.load_run_data(_config(tmp_path, cda=False))
    pairs = zip(data.train[0]["source"], data.train[0]["target"], strict=True)
    assert sorted(pairs) == sorted(("translate English to Chinese: " + en, zh) for en, zh in PAIRS)
    assert data.counterfactual_rows == []


def test_a_misspelt_cda_key_is_named(tmp_path: Path) -> None:
    from lmforge.config import validate
    from lmforge.errors import UserError

    with pytest.raises(
        UserError, match=r"augment.cda.enabeld: unknown key; did you mean 'enabled'"
    ):
        validate(RunConfig, {"data": [{"path": "x"}], "augment": {"cda": {"enabeld": True}}})
