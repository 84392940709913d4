# audiokd: `make run` (set up, then the pipeline on the embedded data) and `make test` (set up, then tests).
VENV   := .venv
PYTHON ?= python3
PORT   ?= 5000
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test test-fast ui tracking-server lint format clean bench

# Reinstalled only when the pinned dependencies change; an existing .venv is reused.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## create .venv and install the project, pinned

run: setup ## dvc repro on the embedded default data, then the teacher vs student summary
	dvc repro
	audiokd summary reports/metrics.json

test: setup ## lint, then the whole test suite, the real end-to-end pipeline included
	ruff check src stages tests
	ruff format --check src stages tests
	pytest

test-fast: setup ## unit tests only (skips tests marked slow)
	pytest -m "not slow"

ui: setup ## MLflow UI on this project's store (http://127.0.0.1:$(PORT))
	mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root ./mlruns/artifacts \
		--host 127.0.0.1 --port $(PORT)

tracking-server: setup ## MLflow server on 127.0.0.1:$(PORT), PostgreSQL backend (started/installed on demand)
	PORT=$(PORT) python -m audiokd.server

lint: setup
	ruff check src stages tests
	ruff format --check src stages tests

format: setup
	ruff format src stages tests
	ruff check --fix src stages tests

clean: ## remove pipeline outputs (not the MLflow store, not .venv)
	rm -rf data/prepared data/features models/teacher models/student reports

bench: setup ## speed ratios measured in one run -> reports/bench.json (a few minutes)
	python benchmarks/bench.py
