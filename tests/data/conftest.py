"""Fixtures for the data tests: a private ``datasets`` cache per test."""

from __future__ import annotations

import datasets
import pytest


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep the Arrow files ``datasets`` builds out of ~/.cache and out of the test's data."""
    cache = tmp_path_factory.mktemp("hf-datasets-cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache
