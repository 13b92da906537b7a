# The two commands of the README: `make demo` (set up, install the default model, propose an edit)
# and `make test` (set up, run the tests). Both work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/edit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/edit

.PHONY: setup demo test test-slow
setup: $(BIN)/edit

demo: setup
	$(BIN)/edit model install default
	$(BIN)/edit examples/report.py "Replace every print call with logger.info" --dry-run

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow
