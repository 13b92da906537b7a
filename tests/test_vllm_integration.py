"""A real vLLM server (the CPU build of `make vllm`) serving the 0.5B model (the default, the 1.5B, would take
several times longer on a CPU server), started and stopped here by bench/vllm_server.py: the grammar is
enforced on the server, edits go through it (the Editor and `edit batch`), and its greedy edits are compared
with local decoding of the same model from the same prompt.

Slow (the server needs minutes to start on 2 cores): `make vllm && .venv/bin/python -m pytest -q -m slow
tests/test_vllm_integration.py`. Skipped with the reason when .venv-vllm or the 0.5B model is missing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.items import load_items
from bench.vllm_server import VllmUnavailable, local_vllm, python
from decoding.server_client import ServerClient
from editor.propose import Editor

pytestmark = [pytest.mark.slow, pytest.mark.shared]
ITEMS = 3  # EditEval's first items: each is one edit per backend, tens of seconds on a CPU


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from decoding.model_loading import resolve
    from decoding.model_registry import ModelError

    try:
        python()
        model_dir = resolve("0.5b")
    except (VllmUnavailable, ModelError) as missing:
        pytest.skip(str(missing))
    with local_vllm(model_dir, log=tmp_path_factory.mktemp("vllm") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def items():
    return load_items("editeval", ITEMS)


def test_the_server_enforces_the_grammar(served):
    client = ServerClient(served)
    # the model would write anything but this when asked for a poem; the grammar admits only it
    done = client.complete("Write a short poem about the sea.", grammar='start: "print(42)  # ok"', max_tokens=32)
    assert done.text == "print(42)  # ok"
    assert done.finish_reason == "stop"
    client.check_grammar()  # what `edit --server` does before its first constrained request


def test_server_greedy_edits_match_local_greedy_decoding(served, items):
    remote = Editor("0.5b", server=served, max_retries=0)
    local = Editor("0.5b", max_retries=0)
    for item in items:
        for fmt in ("apply_patch", "whole"):  # a grammar, and none
            on_server = remote.edit(item.code, item.instruction, format=fmt, path="item.py", language="python")
            here = local.edit(item.code, item.instruction, format=fmt, path="item.py", language="python")
            assert on_server.edit_text == here.edit_text, (item.task_id, fmt)
            assert on_server.ok == here.ok and on_server.diff == here.diff


def test_edit_batch_through_the_server(served, items, tmp_path, monkeypatch):
    from editor.cli import app

    monkeypatch.chdir(tmp_path)
    for i, item in enumerate(items):
        (tmp_path / f"item{i}.py").write_text(item.code)
    tasks = "".join(json.dumps({"file": f"item{i}.py", "instruction": item.instruction, "format": "apply_patch"}) + "\n"
                    for i, item in enumerate(items))
    (tmp_path / "tasks.jsonl").write_text(tasks)
    result = CliRunner().invoke(app, ["batch", "tasks.jsonl", "--server", served, "--concurrency", "3",
                                      "--out", "results.jsonl", "--max-retries", "0"])
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [row["file"] for row in rows] == [f"item{i}.py" for i in range(len(items))], result.output
    assert all(row["status"] in ("proposed", "rejected") for row in rows), rows  # no server error
    assert any(row["status"] == "proposed" for row in rows)
    assert all((tmp_path / f"item{i}.py").read_text() == item.code for i, item in enumerate(items))  # no --yes
