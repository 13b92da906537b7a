"""editor.diffing: unified diffs in about linear time that apply back exactly."""

from __future__ import annotations

import difflib
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from editor.applying import apply_edit
from editor.diffing import unified_diff
from editor.files import MemoryFiles

texts = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "def f():\n", "    pass\n", "x"]), max_size=25).map(
    lambda lines: "".join(line if line.endswith("\n") else line + "\n" for line in lines[:-1])
    + "".join(lines[-1:]))


def difflib_diff(old: str, new: str, a: str, b: str) -> str:
    """difflib's unified diff, with GNU diff's mark for a missing final newline: the reference."""
    out = []
    for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True), a, b):
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(texts, texts)
def test_the_diff_applies_back_to_the_new_text(old, new):
    diff = unified_diff(old, new, "a/f.txt", "b/f.txt")
    if old == new:
        assert diff == ""
        return
    files = MemoryFiles({"f.txt": old})
    result = apply_edit(diff, format="udiff", files=files)
    assert result.ok, (diff, result.errors)
    assert files.texts["f.txt"] == new


def test_a_single_change_reads_as_difflib_writes_it():
    old = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n"
    for new in (old.replace("four", "FOUR"), old + "nine", old[:-1], "zero\n" + old, ""):
        assert unified_diff(old, new, "a/f", "b/f") == difflib_diff(old, new, "a/f", "b/f")


def test_changes_spread_over_a_large_file_take_linear_time():
    old = [f"line {i}\n" for i in range(200_000)]
    new = [f"changed {i}\n" if i % 7 == 3 else line for i, line in enumerate(old)]
    repeated = ["pass\n"] * 5000
    started = time.monotonic()
    assert unified_diff("".join(old), "".join(new)).count("\n+changed") == len(range(3, 200_000, 7))
    assert unified_diff("".join(repeated), "".join(repeated[:2500] + ["x\n"] + repeated[2500:])) == (
        "--- a\n+++ b\n@@ -2498,6 +2498,7 @@\n" + " pass\n" * 3 + "+x\n" + " pass\n" * 3)
    assert time.monotonic() - started < 10
