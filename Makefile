# The README's commands. Each one first runs scripts/setup.sh, which is quick when nothing changed.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lab bench lint

setup:
	@scripts/setup.sh

## Every probe headlessly on the embedded default models; writes results/index.html.
demo: setup
	$(BIN)/workbench demo --out results

## The test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -q

## JupyterLab on the notebooks.
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## Benchmarks: each prints ratios against a reference measured in the same run.
bench: setup
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy
