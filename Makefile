# l2sweep — `make help` lists the targets. Each target installs what it needs on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MNIST: this project's machines keep the four raw files in ../shared/data (read-only).
export L2SWEEP_DATA ?= $(if $(wildcard ../shared/data/MNIST/raw),$(abspath ../shared/data),$(CURDIR)/data)

.PHONY: help install test lint smoke ablation ablation-quick report bench clean

help: ## show this list
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-15s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install l2sweep with its dev tools (first use only)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install ## run the test suite on the CPU (a few minutes)
	$(BIN)/python -m pytest -q

lint: install ## ruff
	$(BIN)/ruff check .

smoke: install ## a one-minute sweep on a slice of real MNIST -> results/smoke/
	$(BIN)/l2sweep run experiment=smoke

ablation: install ## the full claim check (conf/experiment/ablation.yaml) -> results/ablation/
	$(BIN)/l2sweep run experiment=ablation

ablation-quick: install ## a smaller claim check for a 2-core CPU (< 30 min) -> results/ablation-quick/
	$(BIN)/l2sweep run experiment=ablation-quick

bench: install ## throughput: plain DataLoader loop vs l2sweep (pack sizes) -> bench.json
	$(BIN)/l2sweep bench

clean: ## remove caches (keeps .venv and results/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
