"""The quickstart's input-use control: does a model's loss depend on its source at all?"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from lmforge.quickstart.evaluate import input_use
from lmforge.quickstart.plan import PRESETS
from lmforge.quickstart.report import input_use_rows

TINY = runpy.run_path(str(Path(__file__).resolve().parents[1] / "backends" / "tiny_models.py"))
SOURCES = [source for source, _ in TINY["PAIRS"]]
REFERENCES = [target for _, target in TINY["PAIRS"]]


@pytest.fixture(scope="module")
def tok():
    return TINY["tokenizer"]()


def test_a_model_that_reads_its_source_has_a_gap(tok):
    model = TINY["untrained"]("t5", tok)
    use = input_use(model, tok, SOURCES, REFERENCES, PRESETS["test"])
    assert use["matched_nll"] > 0 and use["shuffled_nll"] > 0
    assert use["gap"] == pytest.approx(use["shuffled_nll"] - use["matched_nll"])
    assert abs(use["gap"]) > 1e-4


def test_a_decoder_cut_off_from_the_encoder_has_no_gap(tok):
    model = TINY["untrained"]("t5", tok)
    with torch.no_grad():  # cross-attention writes nothing: the source cannot matter
        for block in model.decoder.block:
            block.layer[1].EncDecAttention.o.weight.zero_()
    use = input_use(model, tok, SOURCES, REFERENCES, PRESETS["test"])
    assert use["gap"] == pytest.approx(0.0, abs=1e-6)
    rows = input_use_rows({"input_use": {"translate": {"m": use}}})
    assert rows == [
        (
            "translate",
            "m",
            f"{use['matched_nll']:.3f}",
            f"{use['shuffled_nll']:.3f}",
            f"{use['gap']:+.3f}",
            "ignores its input",
        )
    ]
