"""`edit apply` and `edit validate` end to end on a small sample repository."""

from __future__ import annotations

import glob
import json
import os
import time

import pytest
from typer.testing import CliRunner

import editor
from editor.cli import app
from editor.errors import UnreadableFileError

APP_PY = '''import logging

logger = logging.getLogger(__name__)


def greet(name):
    print("hello", name)
    return name.upper()


def farewell(name):
    print("bye", name)
'''

UTIL_PY = "def add(a, b):\n    return a + b\n"

PATCH = '''*** Begin Patch
*** Update File: src/app.py
@@ def greet(name):
-    print("hello", name)
+    logger.info("hello %s", name)
     return name.upper()
*** Add File: src/extra.py
+VALUE = 42
*** End Patch
'''


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text(APP_PY)
    (root / "src" / "util.py").write_text(UTIL_PY)
    (root / "notes.txt").write_text("one\ntwo\n")
    (root / "config.json").write_text('{"debug": false}\n')
    return root


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(*args, input=None, env=None):
    result = CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def edit_file(tmp_path, text, name="change.edit"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- apply_patch ----------------------------------------------------------------------------------

def test_apply_patch_writes_and_prints_diff_and_summary(repo, tmp_path):
    result = run("apply", edit_file(tmp_path, PATCH), "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert 'logger.info("hello %s", name)' in (repo / "src" / "app.py").read_text()
    assert (repo / "src" / "extra.py").read_text() == "VALUE = 42\n"
    assert '-    print("hello", name)' in result.stdout
    assert '+    logger.info("hello %s", name)' in result.stdout
    assert "+++ b/src/extra.py" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == \
        "2 files changed: 1 added, 1 modified; validated: python"
    assert "\x1b[" not in result.stdout  # not a terminal: plain text


def test_dry_run_shows_the_diff_and_writes_nothing(repo, tmp_path):
    before = snapshot(repo)
    result = run("apply", edit_file(tmp_path, PATCH), "--root", str(repo), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "+    logger.info" in result.stdout
    assert "2 files would change: 1 added, 1 modified" in result.stdout
    assert snapshot(repo) == before


def test_json_output_has_exactly_the_documented_shape(repo, tmp_path):
    result = run("apply", edit_file(tmp_path, PATCH), "--root", str(repo), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "files", "errors"}
    assert data["ok"] is True and data["errors"] == []
    assert [(f["path"], f["status"]) for f in data["files"]] == [("src/app.py", "modified"),
                                                                  ("src/extra.py", "added")]
    assert all(set(f) == {"path", "status", "diff"} for f in data["files"])
    assert "+VALUE = 42" in data["files"][1]["diff"]


def test_context_mismatch_is_rejected_naming_the_file(repo, tmp_path):
    before = snapshot(repo)
    bad = PATCH.replace('-    print("hello", name)', '-    print("HELLO", name)')
    result = run("apply", edit_file(tmp_path, bad), "--root", str(repo))
    assert result.exit_code == 1
    assert "src/app.py" in result.stderr and "rejected, nothing written" in result.stdout
    assert snapshot(repo) == before
    data = json.loads(run("apply", edit_file(tmp_path, bad), "--root", str(repo), "--json").stdout)
    assert data["ok"] is False and data["files"] == []
    [error] = data["errors"]
    assert set(error) == {"file", "line", "message"} and error["file"] == "src/app.py"


def test_new_syntax_error_is_rejected_with_line_and_column(repo, tmp_path):
    before = snapshot(repo)
    broken = PATCH.replace('+    logger.info("hello %s", name)', '+    logger.info("hello %s", name')
    result = run("apply", edit_file(tmp_path, broken), "--root", str(repo))
    assert result.exit_code == 1
    assert "src/app.py:" in result.stderr and "new syntax error at column" in result.stderr
    assert snapshot(repo) == before
    data = json.loads(run("apply", edit_file(tmp_path, broken), "--root", str(repo), "--json").stdout)
    assert data["errors"][0]["file"] == "src/app.py" and data["errors"][0]["line"] >= 7
    forced = run("apply", edit_file(tmp_path, broken), "--root", str(repo), "--allow-syntax-errors")
    assert forced.exit_code == 0, forced.output
    assert 'logger.info("hello %s", name\n' in (repo / "src" / "app.py").read_text()


def test_partial_keeps_the_files_before_the_failure(repo, tmp_path):
    patch = ("*** Begin Patch\n*** Update File: notes.txt\n@@\n-one\n+ONE\n"
             "*** Update File: src/util.py\n@@\n-    return a - b\n+    return b\n*** End Patch\n")
    before = snapshot(repo)
    strict = run("apply", edit_file(tmp_path, patch), "--root", str(repo))
    assert strict.exit_code == 1 and snapshot(repo) == before
    partial = run("apply", edit_file(tmp_path, patch), "--root", str(repo), "--partial")
    assert partial.exit_code == 1
    assert (repo / "notes.txt").read_text() == "ONE\ntwo\n"
    assert (repo / "src" / "util.py").read_text() == UTIL_PY
    assert "src/util.py" in partial.stderr


def test_bare_apply_patch_body_applies_to_the_named_file(repo, tmp_path):
    body = "@@\n-one\n+uno\n two\n"
    result = run("apply", edit_file(tmp_path, body), "--format", "apply_patch",
                 "--file", "notes.txt", "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert (repo / "notes.txt").read_text() == "uno\ntwo\n"
    assert "not validated: unknown language (notes.txt)" in result.stdout


def test_edit_from_stdin(repo):
    result = run("apply", "-", "--root", str(repo), input=PATCH)
    assert result.exit_code == 0, result.output
    assert (repo / "src" / "extra.py").exists()


def test_unreadable_edit_on_stdin_is_a_usage_error(repo):
    result = run("apply", "-", "--root", str(repo), input=b"*** Begin Patch\n\xff\xfe\n")
    assert result.exit_code == 2 and "<stdin>" in result.stderr and "UTF-8" in result.stderr


def test_paths_out_of_the_root_are_refused(repo, tmp_path):
    patch = "*** Begin Patch\n*** Add File: ../escape.txt\n+x\n*** End Patch\n"
    result = run("apply", edit_file(tmp_path, patch), "--root", str(repo))
    assert result.exit_code == 1 and "'..'" in result.stderr
    assert not (repo.parent / "escape.txt").exists()


# --- unified diff -----------------------------------------------------------------------------

UDIFF = '''--- a/src/util.py
+++ b/src/util.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a + b
+    return b + a
'''


def test_unified_diff_is_detected_and_applied(repo, tmp_path):
    result = run("apply", edit_file(tmp_path, UDIFF), "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert (repo / "src" / "util.py").read_text() == "def add(a, b):\n    return b + a\n"
    assert "1 file changed: 1 modified; validated: python" in result.stdout


def test_single_file_diff_goes_to_the_file_option_whatever_its_headers(repo, tmp_path):
    (repo / "src" / "copy.py").write_text(UTIL_PY)
    result = run("apply", edit_file(tmp_path, UDIFF.replace("src/util.py", "elsewhere/x.py")),
                 "--format", "udiff", "--file", "src/copy.py", "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert (repo / "src" / "copy.py").read_text().endswith("return b + a\n")
    assert (repo / "src" / "util.py").read_text() == UTIL_PY


# --- OT ---------------------------------------------------------------------------------------

def test_ot_edit_applies_to_its_target(repo, tmp_path):
    ot = '[retain(4), delete("two"), insert("deux")]'
    result = run("apply", edit_file(tmp_path, ot), "--file", "notes.txt", "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert (repo / "notes.txt").read_text() == "one\ndeux\n"


def test_ot_edit_without_target_is_rejected(repo, tmp_path):
    result = run("apply", edit_file(tmp_path, "[retain(1)]"), "--format", "ot", "--root", str(repo))
    assert result.exit_code == 1 and "target" in result.stderr


def test_ot_edit_that_breaks_json_is_rejected(repo, tmp_path):
    ot = '[retain(10), delete("false"), insert("fals")]'
    result = run("apply", edit_file(tmp_path, ot), "--file", "config.json", "--root", str(repo))
    assert result.exit_code == 1 and "config.json:1:" in result.stderr
    assert (repo / "config.json").read_text() == '{"debug": false}\n'


# --- rules ------------------------------------------------------------------------------------

def test_one_line_rule_given_literally_over_a_glob(repo):
    (repo / "src" / "more.py").write_text('print("x")\n')
    result = run("apply", "print($$$A) => logger.info($$$A)", "--format", "rule",
                 "--file", "src/*.py", "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert 'logger.info("hello", name)' in (repo / "src" / "app.py").read_text()
    assert 'logger.info("bye", name)' in (repo / "src" / "app.py").read_text()
    assert (repo / "src" / "more.py").read_text() == 'logger.info("x")\n'
    assert (repo / "src" / "util.py").read_text() == UTIL_PY
    assert "2 files changed: 2 modified" in result.stdout


def test_yaml_rule_file(repo, tmp_path):
    rule = ("id: swap-add\nlanguage: python\nrule:\n  pattern: $A + $B\nfix: $B + $A\n")
    result = run("apply", edit_file(tmp_path, rule, "swap.yml"), "--format", "rule",
                 "--file", "src/util.py", "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert (repo / "src" / "util.py").read_text() == "def add(a, b):\n    return b + a\n"


def test_glob_matching_nothing_is_an_error(repo):
    result = run("apply", "print($A) => log($A)", "--format", "rule", "--file", "lib/*.py",
                 "--root", str(repo))
    assert result.exit_code == 1 and "lib/*.py" in result.stderr and "no file matches" in result.stderr


# --- usage errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["apply", "missing.patch"],
    ["apply", "PATCH", "--format", "zip"],
    ["apply", "PATCH", "--bogus"],
    ["apply", "PATCH", "--language", "cobol"],
    ["apply", "PATCH", "--root", "no/such/dir"],
    ["apply", "PATCH", "--format", "udiff", "--file", "a.py", "--file", "b.py"],
    ["apply"],
])
def test_usage_errors_exit_2_without_traceback(repo, tmp_path, args):
    args = [edit_file(tmp_path, PATCH) if a == "PATCH" else a for a in args]
    if "--root" not in args:
        args += ["--root", str(repo)]
    before = snapshot(repo)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert snapshot(repo) == before


def test_unknown_format_text_is_rejected(repo, tmp_path):
    result = run("apply", edit_file(tmp_path, "please make it better\n"), "--root", str(repo))
    assert result.exit_code == 1 and "--format" in result.stderr


# --- colour -----------------------------------------------------------------------------------

def test_colour_on_a_terminal_and_none_with_no_color(repo, tmp_path):
    patch = edit_file(tmp_path, PATCH)
    coloured = run("apply", patch, "--root", str(repo), "--dry-run", env={"FORCE_COLOR": "1"})
    assert "\x1b[" in coloured.stdout
    plain = run("apply", patch, "--root", str(repo), "--dry-run",
                env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in plain.stdout and "+    logger.info" in plain.stdout


# --- edit validate ----------------------------------------------------------------------------

def test_validate_lists_errors_as_file_line_col(repo):
    (repo / "bad.py").write_text("x = 1\ny = (\n")
    result = run("validate", str(repo / "bad.py"), str(repo / "src" / "app.py"))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{repo / 'bad.py'}:2:1: ERROR near 'y = ('"]


def test_validate_clean_files_exit_0(repo):
    result = run("validate", str(repo / "src" / "app.py"), str(repo / "config.json"))
    assert result.exit_code == 0 and result.stdout == ""


def test_validate_language_override(repo):
    (repo / "script").write_text("if x:\n  pass\n")
    assert run("validate", str(repo / "script"), "--language", "python").exit_code == 0
    assert run("validate", str(repo / "script"), "--language", "json").exit_code == 1
    assert run("validate", str(repo / "script"), "--language", "cobol").exit_code == 2


def test_validate_unknown_language_says_nothing_was_validated(repo):
    result = run("validate", str(repo / "notes.txt"))
    assert result.exit_code == 0 and "nothing was validated" in result.stderr


def test_validate_binary_file_is_refused(repo):
    (repo / "blob.py").write_bytes(b"\x00\x01")
    result = run("validate", str(repo / "blob.py"))
    assert result.exit_code == 1 and "binary" in result.stderr


def test_validate_missing_file_is_a_usage_error(repo):
    assert run("validate", str(repo / "nope.py")).exit_code == 2


def test_console_script_runs(repo, tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "editor.cli", "apply", edit_file(tmp_path, PATCH),
                           "--root", str(repo), "--json"], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


# --- the library entry point (editor.applying.apply_edit) ------------------------------------------

def test_apply_edit_on_memory_files():
    from editor.applying import apply_edit
    from editor.files import MemoryFiles
    mem = MemoryFiles({"src/app.py": APP_PY})
    result = apply_edit(PATCH, files=mem)
    assert result.ok and result.written and result.format == "apply_patch"
    assert [r.language for r in result.reports] == ["python", "python"]
    assert mem.texts["src/extra.py"] == "VALUE = 42\n"


def test_apply_edit_rejects_syntax_errors_with_every_issue():
    from editor.applying import apply_edit
    from editor.errors import ValidationError
    from editor.files import MemoryFiles
    mem = MemoryFiles({"src/app.py": APP_PY})
    broken = PATCH.replace('+    logger.info("hello %s", name)', '+    logger.info("hello %s", name')
    result = apply_edit(broken, files=mem)
    assert not result.ok and not result.written and mem.texts == {"src/app.py": APP_PY}
    assert result.errors and all(isinstance(e, ValidationError) for e in result.errors)
    assert all(e.file == "src/app.py" and e.line and e.issues for e in result.errors)
    assert result.changes  # what would have been written, for the caller to show


def test_apply_edit_partial_commits_what_applied_before_the_failure():
    from editor.applying import apply_edit
    from editor.errors import ApplyError
    from editor.files import MemoryFiles
    patch = ("*** Begin Patch\n*** Update File: notes.txt\n@@\n-one\n+ONE\n"
             "*** Update File: util.py\n@@\n-nothing like this\n+x\n*** End Patch\n")
    mem = MemoryFiles({"notes.txt": "one\n", "util.py": UTIL_PY})
    strict = apply_edit(patch, files=mem)
    assert not strict.written and mem.texts["notes.txt"] == "one\n"
    partial = apply_edit(patch, files=mem, partial=True)
    assert not partial.ok and partial.written
    assert isinstance(partial.errors[0], ApplyError) and partial.errors[0].file == "util.py"
    assert mem.texts == {"notes.txt": "ONE\n", "util.py": UTIL_PY}


def test_apply_edit_caller_mistakes_raise_value_error():
    from editor.applying import apply_edit
    from editor.files import MemoryFiles
    with pytest.raises(ValueError, match="unknown format"):
        apply_edit(PATCH, format="zip", files=MemoryFiles())
    with pytest.raises(ValueError, match="unknown language"):
        apply_edit(PATCH, language="cobol", files=MemoryFiles())
    with pytest.raises(ValueError, match="one target"):
        apply_edit(UDIFF, targets=["a.py", "b.py"], files=MemoryFiles())


def test_expand_targets_over_memory_files_and_disk(repo):
    from editor.applying import expand_targets
    from editor.errors import EditError, UnsafePathError
    from editor.files import MemoryFiles, Workspace
    mem = MemoryFiles({"src/a.py": "", "src/b.py": "", "src/c.txt": ""})
    assert expand_targets(mem, ["src/*.py", "src/a.py", "src/c.txt"]) == ["src/a.py", "src/b.py",
                                                                          "src/c.txt"]
    ws = Workspace(repo)
    assert expand_targets(ws, ["**/*.py"]) == ["src/app.py", "src/util.py"]
    with pytest.raises(EditError, match="no file matches"):
        expand_targets(ws, ["*.rs"])
    with pytest.raises(UnsafePathError):
        expand_targets(ws, ["../*.py"])



def test_recursive_globs_do_not_follow_folder_symlinks_into_loops(repo):
    from editor.applying import expand_targets
    from editor.files import Workspace
    (repo / "loop").symlink_to(".")
    (repo / "src" / "up").symlink_to("..")
    started = time.monotonic()
    assert expand_targets(Workspace(repo), ["**/*.py", "src/**"]) == ["src/app.py", "src/util.py"]
    assert time.monotonic() - started < 1


def test_recursive_globs_read_names_as_glob_does(repo):
    from editor.applying import expand_targets
    from editor.files import Workspace
    for name in (".hidden/h.py", "src/.cache/c.py", "src/deep/er/d.py", "src/[x].py", "src/b.pyc", "src/.env"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("")
    for pattern in ("**/*.py", "src/**/*.py", "**", "src/**", "**/[[]x].py", "**/[!a-t]*.py",
                    "**/?.py?", ".hidden/**/*.py", "src/.*/**", "**/.*", "src/*/**/d.py"):
        by_glob = sorted({p for p in glob.glob(pattern, root_dir=repo, recursive=True)
                          if (repo / p).is_file()})
        assert expand_targets(Workspace(repo), [pattern]) == by_glob, pattern


def test_expand_targets_keeps_the_first_of_100000_names_quickly():
    from editor.applying import expand_targets
    from editor.files import MemoryFiles
    names = [f"f{i}.py" for i in range(100_000)]
    started = time.monotonic()
    assert expand_targets(MemoryFiles(), names + names[:1000]) == names
    assert time.monotonic() - started < 10  # checking each name against a list took 90 s


# --- edit bench apply -------------------------------------------------------------------------

def test_bench_apply_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run("bench", "apply", "--runs", "1", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "| parse + apply + validate, in memory, first edit of the file" in result.stdout
    data = json.loads(out.read_text())
    assert data["file_lines"] == 5000 and data["apply_validate_ms"] > 0
    assert set(data["parse"]) == {"apply_patch", "udiff", "ot", "rule"}
    assert all(row["mb_per_s"] > 0 for row in data["parse"].values())


def test_validate_refuses_a_fifo_without_waiting_for_a_writer(repo):
    import threading

    os.mkfifo(repo / "pipe.py")
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(run("validate", str(repo / "pipe.py"))),
                              daemon=True)
    thread.start()
    thread.join(5)
    assert outcome, "edit validate hung on a FIFO"
    assert outcome[0].exit_code == 1 and "is a FIFO" in outcome[0].stderr
    with pytest.raises(UnreadableFileError, match="is a FIFO"):
        editor.validate([repo / "pipe.py"])


def test_read_only_files_need_force(repo, tmp_path):
    edit = tmp_path / "edit.patch"
    edit.write_text("*** Begin Patch\n*** Update File: notes.txt\n@@\n-one\n+uno\n*** End Patch\n")
    (repo / "notes.txt").chmod(0o444)
    result = run("apply", str(edit), "--root", str(repo))
    assert result.exit_code == 1 and "notes.txt: is read-only (mode 0444)" in result.stderr
    assert (repo / "notes.txt").read_text() == "one\ntwo\n"
    assert run("apply", str(edit), "--root", str(repo), "--force").exit_code == 0
    assert (repo / "notes.txt").read_text() == "uno\ntwo\n"


def test_recover_rolls_back_an_interrupted_commit_and_removes_stray_temp_files(repo, monkeypatch):
    from editor import files as files_module
    from editor.files import FileChange, Workspace

    ws = Workspace(repo)
    changes = [FileChange("notes.txt", ws.read("notes.txt"), "1\n"),
               FileChange("config.json", ws.read("config.json"), "{}\n")]
    real_replace, calls = os.replace, []

    def killed(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the journal, notes.txt, then config.json
            raise SystemExit
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(files_module, "_restore", lambda entry: None)  # as if the process died
    monkeypatch.setattr(files_module, "_remove_journal", lambda journal: journal[0].close())
    with pytest.raises(SystemExit):
        ws.commit(changes)
    monkeypatch.undo()
    (repo / "src" / ".app.py.1234.edit-tmp").write_text("left by an older version\n")
    before = (repo / "notes.txt").read_text()
    result = run("recover", "--root", str(repo))
    assert before == "1\n" and result.exit_code == 0
    assert "notes.txt: restored" in result.stdout and "src/.app.py.1234.edit-tmp" in result.stdout
    assert (repo / "notes.txt").read_text() == "one\ntwo\n"
    assert sorted(os.listdir(repo)) == ["config.json", "notes.txt", "src"]
    assert sorted(os.listdir(repo / "src")) == ["app.py", "util.py"]
    assert run("recover", "--root", str(repo)).stdout == "nothing to recover\n"


# --- huge edits ------------------------------------------------------------------------------------

def test_a_patch_of_10000_hunks_is_applied_and_shown_quickly(repo, tmp_path):
    from editor.commands.apply import DIFF_LINES
    (repo / "big.py").write_text("".join(f"x{i} = {i}\n" for i in range(100_000)))
    hunks = "".join(f"@@\n x{i - 1} = {i - 1}\n-x{i} = {i}\n+x{i} = -{i}\n x{i + 1} = {i + 1}\n"
                    for i in range(1, 100_000, 10))
    patch = edit_file(tmp_path, f"*** Begin Patch\n*** Update File: big.py\n{hunks}*** End Patch\n")
    started = time.monotonic()
    [shown] = json.loads(run("apply", patch, "--root", str(repo), "--dry-run", "--json").stdout)["files"]
    result = run("apply", patch, "--root", str(repo))
    assert time.monotonic() - started < 30  # difflib took minutes; a loaded machine takes ~15 s
    assert result.exit_code == 0
    assert (repo / "big.py").read_text().startswith("x0 = 0\nx1 = -1\nx2 = 2\n")
    diff = shown["diff"].splitlines()
    assert diff[:3] == ["--- a/big.py", "+++ b/big.py", "@@ -1,5 +1,5 @@"]
    assert diff.count("@@ -9,7 +9,7 @@") == 1 and sum(line.startswith("@@") for line in diff) == 10_000
    lines = result.stdout.splitlines()
    assert lines[:DIFF_LINES] == diff[:DIFF_LINES]
    assert lines[DIFF_LINES:] == [f"... {len(diff) - DIFF_LINES} more diff lines (1 file changed)",
                                  "1 file changed: 1 modified; validated: python"]
