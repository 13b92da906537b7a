"""Tests that read ../shared: skipped with one reason in a lone clone, a failed run where CI requires them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.items import MissingDataError, load_items
from tests.conftest import SHARED, SHARED_MISSING

TESTS = Path(__file__).resolve().parent
SHARED_BENCHMARKS = SHARED / "benchmarks"
READS_SHARED = """
import pytest

@pytest.mark.shared
def test_reads_shared():
    pass

def test_plain():
    pass
"""


def run_lone_clone(tmp_path: Path, require: bool) -> subprocess.CompletedProcess:
    """pytest in a project folder with this conftest and no ../shared beside it."""
    project = tmp_path / "lone" / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", project / "tests")
    (project / "tests" / "__init__.py").write_text("")
    (project / "tests" / "test_sample.py").write_text(READS_SHARED)
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    shared: reads ../shared\n")
    env = {k: v for k, v in os.environ.items() if k != "EDIT_REQUIRE_SHARED"}
    if require:
        env["EDIT_REQUIRE_SHARED"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_lone_clone_skips_shared_tests_with_one_reason(tmp_path):
    done = run_lone_clone(tmp_path, require=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout and SHARED_MISSING in done.stdout


def test_ci_refuses_to_skip_shared_tests(tmp_path):
    done = run_lone_clone(tmp_path, require=True)
    assert done.returncode != 0
    assert "EDIT_REQUIRE_SHARED" in done.stdout + done.stderr


def test_benchmarks_say_where_their_data_is_missing(tmp_path):
    with pytest.raises(MissingDataError, match="--data DIR"):
        load_items("editeval", folder=tmp_path)


def test_bench_commands_take_data_and_name_a_missing_folder(tmp_path):
    from editor.cli import app

    runner = CliRunner()
    for command in (["bench", "quality"], ["bench", "decode"]):
        result = runner.invoke(app, [*command, "--data", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert "benchmark data not found" in result.output and str(tmp_path) in result.output


@pytest.mark.shared
def test_data_folder_is_taken_as_given(tmp_path):
    shutil.copy(SHARED_BENCHMARKS / "editeval.jsonl", tmp_path)
    assert load_items("editeval", limit=1, folder=tmp_path)[0].task_id == "EditEval/0"
