"""Attention maps: shapes that match the model, rows that are distributions, readable labels,
heatmap files of the promised size, and one-line errors."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from lmforge.explain import explain, token_texts
from lmforge.reports import fonts
from lmforge.reports.plots import DPI, heatmap_layout

TINY = runpy.run_path(str(Path(__file__).parent / "backends" / "tiny_models.py"))
CHINESE = "我喜欢读书"
MIXED = "good morning 大家早上好"
LATER_PIECE = re.compile(r"\[([2-9]|\d{2,})/\d+\]$")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    tok = TINY["tokenizer"]()
    return {
        "tok": tok,
        **{family: TINY["save_model"](root / family, family, tok) for family in ("t5", "gpt2")},
        "bert": TINY["save_model"](root / "bert", "bert", tok),
    }


def _joined(texts: list[str], labels: list[str]) -> str:
    """The text again: a character split over k tokens counts once (at its piece 1/k)."""
    return "".join(
        t for t, label in zip(texts, labels, strict=True) if not LATER_PIECE.search(label)
    )


def _png_size(path: Path) -> tuple[int, int]:
    height, width = imread(path).shape[:2]
    return width, height


def _check_rows_and_files(out: Path, summary: dict, arrays: np.lib.npyio.NpzFile) -> None:
    for name, info in summary["maps"].items():
        weights = arrays[name]
        shape = info["shape"]
        assert weights.shape == (shape["layers"], shape["heads"], shape["queries"], shape["keys"])
        assert weights.shape[2:] == (len(info["queries"]["ids"]), len(info["keys"]["ids"]))
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
        (width, height), _ = heatmap_layout(shape["queries"], shape["keys"])
        assert len(info["files"]) == 1 + shape["layers"] * (shape["heads"] + 1)
        for rel in info["files"]:
            assert _png_size(out / rel) == (round(width * DPI), round(height * DPI))
    index = (out / "index.html").read_text(encoding="utf-8")
    assert all(rel in index for info in summary["maps"].values() for rel in info["files"])
    assert "http" not in index and "<script" not in index  # nothing from the network


def test_seq2seq_maps_encoder_decoder_and_cross_attention_of_chinese_input(models, tmp_path):
    out = tmp_path / "t5"
    result = explain(models["t5"], MIXED, out, max_new_tokens=3)
    summary = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    arrays = np.load(out / "attentions.npz")
    assert sorted(arrays.files) == ["cross", "decoder_self", "encoder_self"]
    source = summary["maps"]["encoder_self"]["queries"]
    target = summary["maps"]["decoder_self"]["queries"]
    # tiny T5 preset: 2 layers of 2 heads in each stack; the encoder reads the input + </s>
    assert arrays["encoder_self"].shape[:2] == arrays["cross"].shape[:2] == (2, 2)
    assert source["ids"][-1] == models["tok"].eos_token_id
    assert arrays["cross"].shape[2:] == (len(target["ids"]), len(source["ids"]))
    assert target["ids"][0] == models["tok"].pad_token_id  # T5 decoding starts from pad
    assert 1 <= len(target["ids"]) <= 1 + 3
    # labels are text: the byte pieces of a Chinese character all show that character
    assert _joined(source["texts"], source["labels"]) == MIXED + "</s>"
    assert "Ġ" not in "".join(source["labels"]) and "␣m" in source["labels"]
    assert "大[1/2]" in source["labels"] and "大[2/2]" in source["labels"]
    assert result.kind == "seq2seq" and result.output is not None
    _check_rows_and_files(out, summary, arrays)


def test_causal_self_attention_spans_prompt_and_output_and_never_looks_ahead(models, tmp_path):
    out = tmp_path / "gpt2"
    result = explain(models["gpt2"], CHINESE, out, max_new_tokens=4)
    summary = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    arrays = np.load(out / "attentions.npz")
    weights = arrays["self"]
    prompt = models["tok"](CHINESE, add_special_tokens=False)["input_ids"]
    assert weights.shape[:2] == (2, 2)
    assert weights.shape[2] == weights.shape[3] == len(prompt) + 4  # no eos from a fresh model
    assert summary["maps"]["self"]["queries"]["ids"][: len(prompt)] == prompt
    assert np.all(np.triu(weights, k=1) == 0)  # causal: no attention to later tokens
    assert result.output == models["tok"].decode(
        summary["maps"]["self"]["queries"]["ids"][len(prompt) :], skip_special_tokens=True
    )
    _check_rows_and_files(out, summary, arrays)


def test_cli_explains_an_encoder_and_refuses_to_overwrite(models, tmp_path, cli):
    out = tmp_path / "bert"
    done = cli("explain", models["bert"], "the weather is nice", "--output", out)
    assert done.code == 0, done.err
    assert "index.html" in done.out and "self 2x2x" in done.out
    weights = np.load(out / "attentions.npz")["self"]
    assert not np.all(np.triu(weights, k=1) == 0)  # bidirectional: looks both ways
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    again = cli("explain", models["bert"], "hello", "--output", out)
    assert again.code == 2 and "--overwrite" in again.err and len(again.err.splitlines()) == 1


def test_a_missing_model_directory_is_one_line_and_exit_2(tmp_path, cli):
    result = cli("explain", tmp_path / "no-such-model", "hello", "--output", tmp_path / "out")
    assert result.code == 2
    assert result.err.splitlines() == [
        f"lmforge: error: model directory {tmp_path / 'no-such-model'} does not exist"
    ]
    assert not (tmp_path / "out").exists()


def test_empty_input_is_refused(models, tmp_path, cli):
    result = cli("explain", models["gpt2"], "  ", "--output", tmp_path / "out")
    assert result.code == 2 and "input text is empty" in result.err


def test_token_labels_are_readable_text(models):
    tok = models["tok"]
    text = "def add(a, b):\n    return 大家"
    tokens = token_texts(tok, tok(text, add_special_tokens=False)["input_ids"])
    assert len(tokens.labels) == len(tokens.ids)
    assert _joined(tokens.texts, tokens.labels) == text
    assert not any(sym in "".join(tokens.labels) for sym in ("Ġ", "Ċ", "\ufffd"))
    assert "↵" in "".join(tokens.labels) and "家[1/3]" in tokens.labels


def test_without_a_cjk_font_chinese_labels_are_escaped_with_one_warning(
    models, tmp_path, cli, monkeypatch
):
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    fonts._label_fonts.cache_clear()
    try:
        out = tmp_path / "escaped"
        result = cli("explain", models["gpt2"], CHINESE, "-o", out, "--max-new-tokens", "0")
    finally:
        fonts._label_fonts.cache_clear()
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("lmforge: warning:")]
    assert len(warnings) == 1 and "install-fonts.sh" in warnings[0]
    summary = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    assert summary["warnings"] == [warnings[0].removeprefix("lmforge: warning: ")]
    assert summary["maps"]["self"]["queries"]["labels"][0].startswith("我")  # data keeps text
