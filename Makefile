# Set-up is two commands on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC picks the torch to install; CI sets TORCH_SPEC=torch==2.13.0 (a CPU build on local disk).
PYTHON ?= python3
TORCH_SPEC ?= torch>=2.1,<3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo lint test test-long bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,mpi]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bdh demo

# the architecture (import-linter contracts in pyproject.toml, drawn in docs/architecture.md), lint and format
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --hypothesis-profile=ci

test-long: $(STAMP)
	$(PY) -m pytest -q --hypothesis-profile=long

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
