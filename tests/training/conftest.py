"""Fixtures for the training tests: the tiny models/data/script of tiny_run.py."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
import torch

TINY_RUN = Path(__file__).with_name("tiny_run.py")


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    """The namespace of tiny_run.py: gpt2(), t5(), bert(), dataset(), Collator, run(), main()."""
    return runpy.run_path(str(TINY_RUN))


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and reproducibly across processes) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
