"""``lmforge generate``: one input, --interactive, --input/--output, and its errors.

Each output is checked against the library's own generation for the input rendered with the
model card's template, so the CLI is shown to add nothing and lose nothing.
"""

from __future__ import annotations

import io
import json
import runpy
from pathlib import Path

import pytest

import lmforge.cli.generate  # noqa: F401  (registers `lmforge generate` on the app)
from lmforge.generation import DecodingSettings, generate
from lmforge.models import load_pretrained

TINY = runpy.run_path(str(Path(__file__).resolve().parents[1] / "backends" / "tiny_models.py"))
PREFIX = "w9 w8 "  # the card's template prefix, in the tokenizer's own words


def _model_dir(root: Path, family: str) -> Path:
    tokenizer = TINY["word_tokenizer"]()
    model = TINY["untrained"](family, tokenizer)  # outputs tell inputs apart
    path = root / family
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    card = {
        "tasks": [{"task": "summarize", "template": {"prefix": PREFIX}}],
        "max_source_length": 32,
    }
    (path / "lmforge.json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    return {family: _model_dir(root, family) for family in ("t5", "gpt2")}


def _expected(model_dir: Path, documents: list[str], **options) -> list[list[str]]:
    model, tokenizer = load_pretrained(model_dir)
    settings = DecodingSettings(max_new_tokens=8, **options)
    sources = [PREFIX + d for d in documents]
    groups = generate(model, tokenizer, sources, settings, max_source_length=32)
    return [[g.text for g in group] for group in groups]


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_one_text_prints_its_output(cli, model_dirs, family) -> None:
    result = cli("generate", model_dirs[family], "w1 w2 w3", "--max-new-tokens", "8")
    assert result.code == 0, result.err
    (expected,) = _expected(model_dirs[family], ["w1 w2 w3"])
    assert result.out == expected[0] + "\n"
    assert result.out.strip()  # non-empty, so the comparison means something
    other = cli("generate", model_dirs[family], "w4", "--max-new-tokens", "8")
    assert other.out != result.out


def test_several_outputs_are_numbered(cli, model_dirs) -> None:
    args = ("generate", model_dirs["t5"], "w1 w2", "--max-new-tokens", "8")
    result = cli(*args, "--num-beams", "3", "-n", "2")
    assert result.code == 0, result.err
    (beams,) = _expected(model_dirs["t5"], ["w1 w2"], num_beams=3, num_return_sequences=2)
    assert result.out == f"[1] {beams[0]}\n[2] {beams[1]}\n"


def test_stop_strings_cut_the_printed_output(cli, model_dirs) -> None:
    args = ("generate", model_dirs["gpt2"], "w1 w2", "--max-new-tokens", "8")
    (greedy,) = _expected(model_dirs["gpt2"], ["w1 w2"])
    stop = greedy[0].split()[-1]
    result = cli(*args, "--stop", stop, "--stop", "w39 w39 w39")
    assert result.code == 0, result.err
    assert result.out == greedy[0][: greedy[0].index(stop)] + "\n"


def test_interactive_answers_each_line_until_an_empty_one(cli, model_dirs, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("w1 w2\nw3\n\nw4\n"))
    result = cli("generate", model_dirs["gpt2"], "--interactive", "--max-new-tokens", "8")
    assert result.code == 0, result.err
    expected = _expected(model_dirs["gpt2"], ["w1 w2", "w3"])
    assert result.out == "".join(group[0] + "\n" for group in expected)

    monkeypatch.setattr("sys.stdin", io.StringIO("w3\nexit\nw4\n"))
    result = cli("generate", model_dirs["gpt2"], "-i", "--max-new-tokens", "8")
    assert result.out == expected[1][0] + "\n"


def test_dataset_predictions_keep_the_input_fields(cli, model_dirs, tmp_path) -> None:
    rows = [{"id": i, "body": body} for i, body in enumerate(["w1 w2", "w3", "w4 w5 w6"])]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pred.jsonl"
    args = ["generate", model_dirs["t5"], "--input", source, "--output", out]
    result = cli(*args, "--column", "document=body", "--max-new-tokens", "8", "--batch-size", "2")
    assert result.code == 0, result.err
    assert "wrote 3 predictions" in result.err
    written = [json.loads(line) for line in out.read_text().splitlines()]
    expected = _expected(model_dirs["t5"], [r["body"] for r in rows])
    assert written == [
        {**row, "prediction": group[0].strip()} for row, group in zip(rows, expected, strict=True)
    ]

    again = cli(*args, "--column", "document=body")
    assert again.code == 2
    assert (
        again.err.strip() == f"lmforge: error: {out} already exists; pass --overwrite to replace it"
    )

    sampled = ["--sample", "-n", "2", "--seed", "3", "--max-new-tokens", "8", "--overwrite"]
    csv = tmp_path / "in.csv"
    csv.write_text("document,id\nw1 w2,0\nw3,1\n")
    result = cli("generate", model_dirs["t5"], "--input", csv, "--output", out, *sampled)
    assert result.code == 0, result.err
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["predictions"]) for r in written] == [2, 2]
    assert all(r["prediction"] == r["predictions"][0] for r in written)
    assert written == [
        json.loads(line)
        for line in _rerun(cli, model_dirs["t5"], csv, tmp_path / "again.jsonl", sampled)
    ]


def _rerun(cli, model_dir: Path, source: Path, out: Path, options: list[str]) -> list[str]:
    """The same seeded command again: the same samples."""
    assert cli("generate", model_dir, "--input", source, "--output", out, *options).code == 0
    return out.read_text().splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-dir", "w1"], "missing-dir"),
        (["{t5}", "w1", "--num-beams", "0"], "num_beams must be at least 1"),
        (["{t5}", "w1", "--sample", "--top-p", "2"], r"top_p must be in (0, 1]"),
        (["{t5}", "w1", "--sample", "--temperature", "0"], "temperature must be > 0"),
        (["{t5}", "w1", "-n", "3"], "needs sampling (--sample)"),
        (["{t5}", "w1", "--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
        (["{t5}", "w1", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["{t5}"], "give exactly one of TEXT, --interactive or --input FILE"),
        (["{t5}", "w1", "--interactive"], "(got TEXT and --interactive)"),
        (["{t5}", "--input", "{tmp}/nope.jsonl", "--output", "{tmp}/o.jsonl"], "nope.jsonl"),
        (["{t5}", "--input", "{tmp}/in.jsonl"], "--input and --output go together"),
        (["{t5}", "--input", "{tmp}/in.jsonl", "--output", "{tmp}/o.jsonl"], "row 1: task"),
        (["{t5}", "w1", "--column", "document=x"], "--column maps columns of an --input"),
        (["{t5}", "w1", "--task", "nonsense"], "unknown task 'nonsense'"),
        (["{t5}", ""], "TEXT is empty"),
    ],
)
def test_mistakes_exit_2_with_one_line(cli, model_dirs, tmp_path, args, message) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "w1"}\n')
    filled = [a.format(t5=model_dirs["t5"], tmp=tmp_path) for a in args]
    result = cli("generate", *filled)
    assert result.code == 2
    assert result.err.startswith("lmforge: error: ")
    assert len(result.err.strip().splitlines()) == 1
    assert message in result.err
    assert not (tmp_path / "o.jsonl").exists()
