# lmforge: the two set-up commands are `make quickstart` and `make test`.
# Both create .venv when it is missing and are quick when it is already there.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch. Elsewhere, install the torch build you want into .venv first:
# the Makefile keeps whatever torch is already there.
TORCH_SPEC ?= torch==2.13.0
MINUTES ?= 10
SEED ?= 42
OUT ?= runs/quickstart

.PHONY: quickstart test install install-dev lint format clean-venv bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e .
	@bash scripts/install-fonts.sh
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev]"
	@bash scripts/install-browser.sh
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

quickstart: install
	$(VENV)/bin/lmforge quickstart --out $(OUT) --minutes $(MINUTES) --seed $(SEED)

test: install-dev
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install-dev
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean-venv:
	rm -rf $(VENV)
