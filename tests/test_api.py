"""The Python API: LM.new / from_pretrained, fit, generate, save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge import LM
from lmforge.errors import UserError
from lmforge.tokenizers import train_tokenizer


def rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    ops = [("add", "+", "Add"), ("mul", "*", "Multiply by")]
    out = []
    for i in range(offset, offset + n):
        name, op, verb = ops[i % 2]
        out.append(
            {"code": f"def {name}_{i}(x):\n    return x {op} {i}", "docstring": f"{verb} {i}."}
        )
    return out


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r["code"] for r in rows(200)] + [r["docstring"] for r in rows(200)]
    return train_tokenizer(texts, kind="bpe", vocab_size=400)


def test_fit_generate_save_reload(tmp_path: Path, tokenizer) -> None:
    lm = LM.new(tokenizer, family="t5", preset="tiny", seed=3)
    result = lm.fit(
        rows(64),
        rows(16, offset=100),
        task="code-comment",
        run_dir=tmp_path / "run",
        max_steps=30,
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        eval_every=10,
        log_every=5,
    )
    assert result.step == 30
    assert result.final_dir == tmp_path / "run" / "final"
    losses = [
        json.loads(line)["eval_loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "eval_loss" in line
    ]
    assert losses[-1] < losses[0]
    assert lm.task == "code-comment"

    text = lm.generate("def add_7(x):\n    return x + 7", max_new_tokens=8)
    assert isinstance(text, str)
    batch = lm.generate(
        [{"code": "def mul_3(x):\n    return x * 3"}, "def add_1(x):\n    return x + 1"],
        max_new_tokens=8,
    )
    assert len(batch) == 2

    saved = lm.save(tmp_path / "model")
    assert (saved / "model.safetensors").is_file() and (saved / "lmforge.json").is_file()
    again = LM.from_pretrained(saved)
    assert again.task == "code-comment"
    assert again.generate("def add_7(x):\n    return x + 7", max_new_tokens=8) == text
    with pytest.raises(UserError, match="already exists"):
        lm.save(tmp_path / "model")


def test_fit_reads_files_and_causal_models_answer_without_prompt(tmp_path: Path, tokenizer):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows(32)) + "\n", encoding="utf-8")
    lm = LM.new(tokenizer, family="gpt2", preset="tiny")
    result = lm.fit(
        str(data), task="code-comment", run_dir=tmp_path / "r", max_steps=4, batch_size=8
    )
    assert result.step == 4
    prompt = "def add_7(x):\n    return x + 7"
    out = lm.generate(prompt, max_new_tokens=5)
    assert prompt not in out


def test_fit_rejects_unknown_settings_and_bad_data(tmp_path: Path, tokenizer) -> None:
    lm = LM.new(tokenizer, family="t5", preset="tiny")
    with pytest.raises(UserError, match="unknown setting 'max_step'; did you mean 'max_steps'"):
        lm.fit(rows(8), task="code-comment", run_dir=tmp_path / "a", max_step=3)
    with pytest.raises(UserError, match="non-empty list of dicts"):
        lm.fit([], task="code-comment", run_dir=tmp_path / "b")
    with pytest.raises(UserError, match="field 'docstring'"):
        lm.fit([{"code": "x"}], task="code-comment", run_dir=tmp_path / "c", max_steps=1)
