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

.PHONY: setup demo test test-slow peers
setup: $(BIN)/edit

demo: setup
	$(BIN)/edit model install default
	$(BIN)/edit examples/report.py "Replace every print call with logger.info" --dry-run

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# `edit bench peers` runs llama.cpp in its own virtualenv. Built from source for AVX2 only: a native
# build died with an illegal instruction on a machine that advertises AVX-512 and AMX.
PEERS_VENV := .venv-peers
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
peers: $(PEERS_VENV)/bin/llama-ready

$(PEERS_VENV)/bin/llama-ready:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
		nice $(PEERS_VENV)/bin/pip install --no-binary llama-cpp-python '$(LLAMA_CPP_PYTHON)'
	touch $@
