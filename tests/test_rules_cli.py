"""`edit rules`, `edit hook-rules` and `edit hook-instruction` on a small sample repository."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from editor.cli import app

APP_PY = '''import logging

logger = logging.getLogger(__name__)


def greet(name):
    print("hello", name)
    return eval(name)


def farewell(name):
    print(
        "bye",
        name)
'''
FIXED_APP_PY = APP_PY.replace('print("hello"', 'logger.info("hello"').replace(
    'print(\n        "bye",\n        name)', 'logger.info("bye",\n    name)')

CLEAN_PY = "def add(a, b):\n    return a + b\n"

PRINT_RULE = '''id: no-print
language: python
rule:
  pattern: print($$$ARGS)
fix: logger.info($$$ARGS)
'''

EVAL_RULE = {"id": "no-eval", "language": "python", "message": "eval is unsafe",
             "rule": {"pattern": "eval($X)"}}


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / ".edit-rules").mkdir()
    (root / ".edit-rules" / "print.yml").write_text(PRINT_RULE)
    (root / "src" / "app.py").write_text(APP_PY)
    (root / "src" / "clean.py").write_text(CLEAN_PY)
    (root / "notes.md").write_text("print(x) in prose stays\n")
    return root


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(*args, env=None):
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def test_fix_rewrites_with_the_default_rules_folder_then_passes(repo):
    first = run("rules", "--root", str(repo), "--file", "src/*.py", "--file", "notes.md")
    assert first.exit_code == 1, first.output
    assert 'src/app.py:7:5: no-print: print("hello", name)' in first.output
    assert "src/app.py:12:5: no-print: print( ..." in first.output  # a multi-line match: its first line
    assert "fixed 1 file: src/app.py" in first.output
    assert (repo / "src" / "app.py").read_text() == FIXED_APP_PY
    assert (repo / "notes.md").read_text() == "print(x) in prose stays\n"  # no rule for markdown

    second = run("rules", "--root", str(repo), "--file", "src/*.py")
    assert second.exit_code == 0, second.output
    assert second.output == ""


def test_check_reports_every_match_and_writes_nothing(repo):
    (repo / ".edit-rules" / "eval.json").write_text(json.dumps(EVAL_RULE))
    before = snapshot(repo)
    result = run("rules", "--check", "--root", str(repo), "--file", "src/app.py", "--file", "src/clean.py")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        'src/app.py:7:5: no-print: print("hello", name)',
        "src/app.py:8:12: no-eval: eval(name)",
        "src/app.py:12:5: no-print: print( ...",
    ]
    assert snapshot(repo) == before

    clean = run("rules", "--check", "--root", str(repo), "--file", "src/clean.py")
    assert clean.exit_code == 0
    assert clean.output == ""


def test_explicit_rule_files_and_folders_replace_the_default(repo, tmp_path):
    elsewhere = tmp_path / "rules"
    elsewhere.mkdir()
    (elsewhere / "eval.json").write_text(json.dumps(EVAL_RULE))
    (elsewhere / "README.txt").write_text("not a rule file: skipped\n")
    result = run("rules", str(elsewhere), "--check", "--root", str(repo), "--file", "src/app.py")
    assert result.output.splitlines() == ["src/app.py:8:12: no-eval: eval(name)"]

    single = run("rules", str(repo / ".edit-rules" / "print.yml"), str(elsewhere / "eval.json"),
                 "--check", "--root", str(repo), "--file", "src/app.py")
    assert len(single.output.splitlines()) == 3


def test_a_rule_without_fix_fails_the_fixer_but_is_left_alone(repo):
    (repo / ".edit-rules" / "eval.json").write_text(json.dumps(EVAL_RULE))
    run("rules", "--root", str(repo), "--file", "src/app.py")  # fixes the prints
    result = run("rules", "--root", str(repo), "--file", "src/app.py")
    assert result.exit_code == 1
    assert "src/app.py:8:12: no-eval: eval(name)" in result.output
    assert "1 match of rules without a fix" in result.output
    assert "eval(name)" in (repo / "src" / "app.py").read_text()


def test_a_fix_that_breaks_the_syntax_writes_nothing_at_all(repo):
    (repo / "src" / "other.py").write_text("print(1)\n")
    (repo / ".edit-rules" / "print.yml").write_text(PRINT_RULE.replace("fix: logger.info($$$ARGS)",
                                                                       "fix: logger.info($$$ARGS"))
    before = snapshot(repo)
    result = run("rules", "--root", str(repo), "--file", "src/other.py", "--file", "src/app.py")
    assert result.exit_code == 1
    assert "src/other.py:1: new syntax error" in result.output
    assert "rejected, nothing written" in result.output
    assert snapshot(repo) == before


@pytest.mark.parametrize("rule_text, where", [
    ("id: broken\nlanguage: python\nrule:\n  pattern: print($A)\nfix: [a, b]\n", "bad.yml:5"),
    ("id: x\nrule: {pattern: 'a'}\nfixx: b\n", "bad.yml:3"),
    ("id: x\nrule:\n  any: &a [{pattern: a}]\n  not: {any: *a}\n", "bad.yml:3: YAML anchors (&) and aliases (*)"),
    ("id: no-print\nrule: {pattern: 'a'}\n", "print.yml, hunk 1: rule id 'no-print' is also used in"),
])
def test_bad_rules_are_a_usage_error_naming_file_and_line(repo, rule_text, where):
    (repo / ".edit-rules" / "bad.yml").write_text(rule_text)
    result = run("rules", "--root", str(repo), "--file", "src/app.py")
    assert result.exit_code == 2
    assert where in result.output
    assert (repo / "src" / "app.py").read_text() == APP_PY


@pytest.mark.parametrize("args, message", [
    (["--file", "src/app.py", "missing-rules"], "missing-rules: no such rule file or folder"),
    (["--file", "src/*.rs"], "src/*.rs: no file matches this pattern"),
    ([], "no files"),
    (["--file", "../outside.py"], "'..' are refused"),
])
def test_usage_errors(repo, args, message):
    result = run("rules", "--root", str(repo), *args)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_default_rules_folder_is_a_usage_error(repo):
    (repo / ".edit-rules" / "print.yml").unlink()
    (repo / ".edit-rules").rmdir()
    result = run("rules", "--root", str(repo), "--file", "src/app.py")
    assert result.exit_code == 2
    assert ".edit-rules: no such rule file or folder" in result.output


def test_hook_rules_takes_the_files_last_literally(repo, monkeypatch):
    monkeypatch.chdir(repo)
    (repo / "src" / "odd[1].py").write_text("print(1)\n")
    (repo / "src" / "odd1.py").write_text("print(1)\n")  # what the glob `odd[1].py` would match
    result = run("hook-rules", "src/odd[1].py", "src/clean.py")
    assert result.exit_code == 1, result.output
    assert (repo / "src" / "odd[1].py").read_text() == "logger.info(1)\n"
    assert (repo / "src" / "odd1.py").read_text() == "print(1)\n"

    check = run("hook-rules", "--check", "--rules", ".edit-rules/print.yml", "src/app.py")
    assert check.exit_code == 1
    assert 'src/app.py:7:5: no-print: print("hello", name)' in check.output
    assert run("hook-rules").exit_code == 0  # pre-commit passed no file


def test_hook_instruction_is_off_without_an_instruction(repo, monkeypatch):
    monkeypatch.chdir(repo)
    before = snapshot(repo)
    result = run("hook-instruction", "src/app.py")
    assert result.exit_code == 0
    assert "no --instruction configured" in result.output
    assert snapshot(repo) == before


def test_hook_instruction_without_a_model_says_how_to_install_one(repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("EDIT_CACHE_DIR", str(tmp_path / "empty-cache"))
    before = snapshot(repo)
    result = run("hook-instruction", "--instruction", "Add docstrings", "src/app.py")
    assert result.exit_code == 1
    assert "edit model install 1.5b" in result.output  # the default model
    assert snapshot(repo) == before


def test_hook_instruction_writes_what_the_model_proposes(repo, monkeypatch, tmp_path):
    """A tiny model that ends its turn at once proposes the empty file, for each file."""
    from tests.tiny_models import save_instant_model

    model = save_instant_model(tmp_path / "tiny-model", APP_PY)
    monkeypatch.chdir(repo)
    result = run("hook-instruction", "--instruction", "Empty it", "--format", "whole", "--model", str(model),
                 "src/app.py", "src/clean.py")
    assert result.exit_code == 1, result.output
    assert "-def add(a, b):" in result.output and "+++ b/src/app.py" in result.output
    assert (repo / "src" / "app.py").read_text() == "\n"
    assert (repo / "src" / "clean.py").read_text() == "\n"
