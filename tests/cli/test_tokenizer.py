"""``lmforge tokenizer train``: exit codes, messages and a loadable output directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pytest

from lmforge.tokenizers import load_tokenizer


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep the Arrow files ``datasets`` builds out of ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("cache"))


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """(plain text file of 200 lines, JSONL file of 100 rows with a text and a label field)."""
    rng = random.Random(0)
    hanzi = [chr(0x4E00 + i) for i in range(100)]
    words = ["train", "model", "token", "data", "loss", "step", "eval", "模型", "数据"]
    lines = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(100)]
    lines += ["".join(rng.choice(hanzi) for _ in range(12)) for _ in range(100)]
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    with rows.open("w", encoding="utf-8") as handle:
        for i in range(100):
            row = {"text": f"def f{i}(x):\n\treturn x * {i}", "label": "labelonly"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return text, rows


def test_train_writes_a_loadable_tokenizer(cli, data: tuple[Path, Path], tmp_path: Path) -> None:
    text, rows = data
    out = tmp_path / "tok"
    result = cli(
        "tokenizer", "train", "--from", text, "--from", rows, "--field", "text",
        "--kind", "bpe", "--vocab-size", 400, "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "trained a bpe tokenizer on 300 texts" in result.out  # 200 lines + 100 "text" values
    assert "vocabulary: 400 tokens of the 400 asked for" in result.out
    assert "<pad>=0 </s>=1 <unk>=2 <s>=3 [CLS]=4 [SEP]=5 [MASK]=6" in result.out
    assert "<extra_id_0>=7 .. <extra_id_99>=106" in result.out
    assert f"wrote {out}" in result.out and "AutoTokenizer.from_pretrained" in result.out
    tokenizer = load_tokenizer(out)
    assert len(tokenizer) == 400
    sample = "def f7(x):\n\treturn 模型 数据"
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    assert "labelonly" not in tokenizer.get_vocab()  # --field text left the label column out


def test_unigram_with_a_seeded_sample(cli, data: tuple[Path, Path], tmp_path: Path) -> None:
    text, _ = data
    args = ["--from", text, "--kind", "unigram", "--vocab-size", 400, "--max-texts", 120]
    first = cli("tokenizer", "train", *args, "--seed", 3, "--out", tmp_path / "a")
    second = cli("tokenizer", "train", *args, "--seed", 3, "--out", tmp_path / "b")
    assert first.code == second.code == 0, first.err
    assert "on 120 texts (a random sample of 200 read)" in first.out
    a = (tmp_path / "a" / "tokenizer.json").read_bytes()
    assert a == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_existing_out_needs_overwrite(cli, data: tuple[Path, Path], tmp_path: Path) -> None:
    text, _ = data
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["tokenizer", "train", "--from", text, "--kind", "bpe", "--vocab-size", 400]
    result = cli(*args, "--out", out)
    assert result.code == 2
    assert (
        result.err.strip()
        == f"lmforge: error: {out} already exists; pass --overwrite to replace it"
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert cli(*args, "--out", out, "--overwrite").code == 0
    assert (out / "tokenizer.json").is_file() and not (out / "keep.txt").exists()


def test_missing_from_file_is_exit_2(cli, data: tuple[Path, Path], tmp_path: Path) -> None:
    text, _ = data
    missing = tmp_path / "nope.jsonl"
    result = cli(
        "tokenizer", "train", "--from", text, "--from", missing,
        "--kind", "bpe", "--vocab-size", 400, "--out", tmp_path / "tok",
    )  # fmt: skip
    assert result.code == 2
    assert result.err.strip() == f"lmforge: error: {missing} does not exist"
    assert not (tmp_path / "tok").exists()


def test_missing_field_is_exit_2(cli, data: tuple[Path, Path], tmp_path: Path) -> None:
    _, rows = data
    result = cli(
        "tokenizer", "train", "--from", rows, "--field", "body",
        "--kind", "bpe", "--vocab-size", 400, "--out", tmp_path / "tok",
    )  # fmt: skip
    assert result.code == 2
    assert "no column 'body'; columns: text, label" in result.err
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "wordpiece", "--vocab-size", "400"], "Invalid value for '--kind'"),
        (["--kind", "bpe", "--vocab-size", "100"], "vocab_size 100 is too small"),
    ],
)
def test_bad_arguments_are_exit_2(
    cli, data: tuple[Path, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    text, _ = data
    result = cli("tokenizer", "train", "--from", text, *args, "--out", tmp_path / "tok")
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "tok").exists()
