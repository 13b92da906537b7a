"""What the test modules share: the `single_thread` fixture, and the conformance and benchmark data in
../shared (beside the project in CI, absent from a lone clone).

A test that reads ../shared carries the `shared` marker. Without the folder it is skipped with one reason;
with EDIT_REQUIRE_SHARED=1 (set by .ci/run, where the folder is always there) a missing folder, or a
shared test that would be skipped anyway, stops the run instead. Model and tokenizer builders for tests
are in tests/tiny_models.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_MISSING = "conformance corpus not found at ../shared; see README"


def pytest_collection_modifyitems(config, items):
    required = os.environ.get("EDIT_REQUIRE_SHARED") == "1"
    present = SHARED.is_dir()
    for item in items:
        if item.get_closest_marker("shared") is None:
            continue
        if not present and required:
            raise pytest.UsageError(f"{SHARED_MISSING} (EDIT_REQUIRE_SHARED=1: every conformance test must run)")
        if not present:
            item.add_marker(pytest.mark.skip(reason=SHARED_MISSING))
        elif required and item.get_closest_marker("skip"):  # e.g. an empty parameter set: a corpus folder gone
            raise pytest.UsageError(f"{item.nodeid} reads ../shared but would be skipped: "
                                    f"{item.get_closest_marker('skip').kwargs.get('reason', '')}")


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread: two OpenMP threads on a loaded 2-core machine make each tiny forward ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def float32_whatever_the_cpu(monkeypatch):
    """`--quantize auto` (the Editor's default) loads bfloat16 on CPUs with AMX and float16 weights on other
    AVX2 CPUs: tests load float32 on every machine, so their exact outputs do not depend on the CPU. Tests
    of "auto" patch `has_amx` and `has_float16_product` themselves; the fixture's value holds the real ones."""
    from decoding import cpu_linear

    real = SimpleNamespace(has_amx=cpu_linear.has_amx, has_float16_product=cpu_linear.has_float16_product)
    monkeypatch.setattr(cpu_linear, "has_amx", lambda: False)
    monkeypatch.setattr(cpu_linear, "has_float16_product", lambda: False)
    return real


@pytest.fixture(autouse=True)
def edit_loads_in_process(monkeypatch):
    """`edit FILE INSTRUCTION` hands its request to a daemon that keeps the model loaded: CLI tests load
    theirs in the test's process (their `make_editor` patches depend on it). Daemon tests turn it back on."""
    monkeypatch.setenv("EDIT_KEEP_ALIVE", "0")
