# Two entry points (see README): `make quickstart` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real MNIST shipped beside the checkout on this project's machines (or beside the checkout
# this one was cloned from: CI clones into a temporary folder); elsewhere the toolkit falls
# back to its cache directory and torchvision's downloader.
ORIGIN := $(shell git config --get remote.origin.url 2>/dev/null)
DATA_DIR ?= $(firstword $(wildcard ../shared/data/mnist $(if $(ORIGIN),$(ORIGIN)/../shared/data/mnist)))
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

.PHONY: setup quickstart test lint deepsparse-venv

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# train -> exact zeros per layer -> scipy bundle + compact ONNX -> footprint vs the bound
quickstart: setup
	$(BIN)/sparsify train recipes/quickstart.yaml --out runs/quickstart $(DATA_FLAG)
	$(BIN)/sparsify stats runs/quickstart
	$(BIN)/sparsify export runs/quickstart --format all --out runs/quickstart_export
	$(BIN)/sparsify footprint runs/quickstart --out runs/quickstart_footprint

test: setup
	SPARSIFY_TEST_DATA=$(abspath $(or $(DATA_DIR),data/mnist)) $(BIN)/python -m pytest -q --durations=25

lint: setup
	$(BIN)/ruff check sparsify tests tools

# optional: DeepSparse 1.8 as a peer in `sparsify bench --backends ... deepsparse`; it pins an
# old onnx and numpy, so it gets its own virtualenv (Python <= 3.11), found by the bench there
deepsparse-venv:
	$(PY) -m venv .venv-deepsparse
	.venv-deepsparse/bin/pip install -q --upgrade pip
	.venv-deepsparse/bin/pip install -q deepsparse==1.8.0
