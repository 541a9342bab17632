# Two entry points that work on a fresh machine: `make demo` and `make test`.
# torch==2.13.0 is installed first (a CPU build on this project's machines); pyproject.toml
# asks only torch>=2.4 so users with CUDA keep their own build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/toolkit demo --out demo-run

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check toolkit train export tests

clean:
	rm -rf $(VENV) demo-run runs .pytest_cache
