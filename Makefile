# AstrID: `make run` runs the quick end-to-end study, `make test` the whole test suite.
# Both create the virtual environment in .venv and install the project when needed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.astrid-installed
PRESET ?= quick

.PHONY: setup run test lint bench clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (AstrID)" >/dev/null
	@touch $(STAMP)

run: setup
	$(VENV)/bin/astrid run $(PRESET)

test: setup
	$(VENV)/bin/ruff check astrid tests benchmarks
	MLFLOW_TRACKING_URI=sqlite:///$$(mktemp -d)/mlflow.db $(PY) -m pytest --nbval-lax tests notebooks

lint: setup
	$(VENV)/bin/ruff check astrid tests benchmarks

bench: setup
	$(PY) benchmarks/bench_simulate.py
	$(PY) benchmarks/bench_model.py
