from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmforge.config import DataSource
from lmforge.data.inspect import LengthStats, count_words, inspect_source

ROWS = [
    {"doc": "the cat sat on the mat", "tldr": "cat sat"},
    {"doc": "一只猫", "tldr": "猫"},
    {"doc": "a b c d e f g h", "tldr": "x y z"},
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "sum.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), "utf-8")
    return path


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "cat": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # "summarize:" -> "summarize", ":"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(
        tmp_path / "tok"
    )
    return tmp_path / "tok"


def test_count_words_counts_each_cjk_character() -> None:
    assert count_words("hello world 你好世界, ok") == 8
    assert count_words("") == 0


def test_inspect_source_measures_rendered_lengths(data: Path) -> None:
    source = DataSource(
        path=str(data), task="summarize", columns={"document": "doc", "summary": "tldr"}
    )

    report = inspect_source(source, max_length=6, show=2)

    assert report.rows == 3
    assert report.source == LengthStats(
        min=4, mean=pytest.approx(20 / 3), median=7.0, p95=8.8, max=9
    )
    assert report.target == LengthStats(min=1, mean=2.0, median=2.0, p95=pytest.approx(2.9), max=3)
    assert (report.truncated_source, report.truncated_target, report.truncated) == (2, 0, 2)
    assert report.examples == [
        ("summarize: the cat sat on the mat", "cat sat"),
        ("summarize: 一只猫", "猫"),
    ]


def test_inspect_source_counts_tokens_with_a_tokenizer(data: Path, tokenizer_dir: Path) -> None:
    source = DataSource(
        path=str(data), task="summarize", columns={"document": "doc", "summary": "tldr"}
    )

    report = inspect_source(source, tokenizer=tokenizer_dir)

    assert report.unit == f"tokens ({tokenizer_dir})"
    assert (report.source.min, report.source.max, report.target.max) == (3, 10, 3)
    assert report.truncated == 0


def test_cli_inspect_prints_the_numbers(cli, data: Path) -> None:
    result = cli(
        "data", "inspect", data, "--task", "summarize", "--column", "document=doc",
        "--column", "summary=tldr", "--max-length", "6", "--show", "1",
    )  # fmt: skip

    assert result.code == 0, result.err
    assert re.search(r"^rows: 3$", result.out, re.M)
    numbers = re.search(r"source\W+(\d+)\W+([\d.]+)\W+([\d.]+)\W+([\d.]+)\W+(\d+)", result.out)
    assert numbers and numbers.groups() == ("4", "6.7", "7.0", "8.8", "9")
    assert "max length 6 truncates 2 of 3 examples (source: 2, target: 0)" in result.out
    assert "summarize: the cat sat on the mat" in result.out
    assert "一只猫" not in result.out  # --show 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl"], "missing.jsonl does not exist"),
        (["DATA", "--column", "document"], "--column 'document': expected FIELD=COLUMN"),
        (["DATA", "--task", "poem"], "task: Input should be 'text'"),
        (["DATA", "--task", "summarize"], "needs the field 'document'"),
    ],
)
def test_cli_inspect_user_errors_exit_2(cli, data: Path, tmp_path: Path, args, message) -> None:
    args = [
        str(data) if a == "DATA" else str(tmp_path / a) if a.endswith(".jsonl") else a for a in args
    ]

    result = cli("data", "inspect", *args)

    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err
    assert result.err.count("lmforge: error:") == 1
