# l2sweep — `make help` lists the targets. Each target installs what it needs on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MNIST: this project's machines keep the four raw files in ../shared/data (read-only).
export L2SWEEP_DATA ?= $(if $(wildcard ../shared/data/MNIST/raw),$(abspath ../shared/data),$(CURDIR)/data)

.PHONY: help install test lint smoke ablation controls claim-check overview ablation-quick ablation-quick-12 report bench bench-launchers device-kit clean

help: ## show this list
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install l2sweep with its dev tools (first use only)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# pytest-xdist workers: one per core plus one, at most 5 (each keeps to one core or a share of
# them: tests/conftest.py). The SLURM tests share one worker, which mostly waits on SLURM's time
# limits; the extra worker uses that idle core time. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n + 1 < 5 ? n + 1 : 5 )))

test: install ## run the test suite on the CPU, a worker per core, with a real single-node SLURM where it can start (a few minutes)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

lint: install ## ruff
	$(BIN)/ruff check .

smoke: install ## a one-minute sweep on a slice of real MNIST -> results/smoke/
	$(BIN)/l2sweep run experiment=smoke

ablation: install ## the main grid of the claim check (250 runs: conf/experiment/ablation.yaml) -> results/ablation/
	$(BIN)/l2sweep run experiment=ablation

# The controls (README "The claim check: what runs"): each regime its own results folder (own Holm family and
# verdicts); decay values chosen on the pilot's VALIDATION accuracy (pilot seeds 100-102, never the
# control's 0-9). The default context's baselines are the main grid's own runs where it has them
# (the same run ids: the same config, the same run), copied into each default-context folder.
DEFAULT_CONTEXT_CONTROLS := controls-decay controls-scope controls-literal

controls: install ## the controls of the claim check -> results/controls-*/
	for name in $(DEFAULT_CONTEXT_CONTROLS); do \
	  mkdir -p results/$$name/runs && cp -n results/ablation/runs/baseline-s*-*.json results/$$name/runs/ 2>/dev/null; \
	done; true
	$(BIN)/l2sweep run experiment=controls-decay-pilot
	for scope in conv all; do \
	  $(BIN)/l2sweep run experiment=controls-decay scope=$$scope \
	    alpha=$$($(BIN)/python scripts/choose_decay.py results/controls-decay-pilot --scope $$scope) || exit $$?; \
	done
	$(BIN)/l2sweep run experiment=controls-scope
	$(BIN)/l2sweep run experiment=controls-literal
	$(BIN)/l2sweep run experiment=controls-dropout
	$(BIN)/l2sweep run experiment=controls-small-data
	$(BIN)/l2sweep run experiment=controls-epochs

claim-check: ablation controls ## the whole claim check: the main grid, then the controls
	$(MAKE) overview

# the claim check's folders with evidence (the decay pilot only chooses decay values: not evidence)
CLAIM_CHECK_FOLDERS := ablation controls-decay controls-scope controls-literal controls-dropout controls-small-data controls-epochs

overview: install ## the claim check at a glance (no training): a row per folder and regime -> results/claim-check.md
	$(BIN)/l2sweep overview $(addprefix results/,$(CLAIM_CHECK_FOLDERS)) --out results/claim-check.md

ablation-quick: install ## a smaller claim check for a 2-core CPU (< 30 min) -> results/ablation-quick/
	$(BIN)/l2sweep run experiment=ablation-quick

ablation-quick-12: install ## ablation-quick with 12 seeds (36 runs, ~70 min on 2 cores) -> results/ablation-quick-12/
	$(BIN)/l2sweep run experiment=ablation-quick seeds=12 name=ablation-quick-12

bench: install ## throughput: plain DataLoader loop vs l2sweep (pack sizes) -> bench.json
	$(BIN)/l2sweep bench

bench-launchers: install ## a study: launcher=local (a worker per core) against one process, on real MNIST (needs every core free; benchmarks/)
	bash benchmarks/bench_launchers.sh

# For a lent GPU machine (device tool), whose image lacks these pure-Python packages and MNIST:
# carry .devsite and .devdata and run scripts/device_check.sh there (docs/performance.md).
DEVSITE_PACKAGES := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 submitit==1.5.4

device-kit: install ## .devsite/ + .devdata/ for scripts/device_check.sh on a lent GPU machine
	rm -rf .devsite .devdata
	$(BIN)/python -m pip install --quiet --no-deps --target .devsite $(DEVSITE_PACKAGES)
	mkdir -p .devdata
	for f in $(L2SWEEP_DATA)/MNIST/raw/*-ubyte; do gzip -c "$$f" > .devdata/$$(basename "$$f").gz; done
	du -sh .devsite .devdata

clean: ## remove caches (keeps .venv and results/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
