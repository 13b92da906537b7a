"""`editor.apply` answers every bad edit, in every format, with errors in its result: it never
raises for one (nor hangs)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editor.applying import ApplyResult, apply_edit
from editor.files import MemoryFiles

FILES = {"a.py": "x = 1\ndef f():\n    return x\n", "d.json": '{"a": 1}\n', "t.txt": "x = 1\n"}

# Pieces of well- and ill-formed edits in each format, shuffled together by the strategy.
PIECES = {
    "apply_patch": ["*** Begin Patch\n", "*** End Patch\n", "*** Update File: a.py\n",
                    "*** Add File: b.py\n", "*** Delete File: a.py\n", "*** Move to: c.py\n", "@@\n",
                    "@@ def f():\n", " x = 1\n", "-x = 1\n", "+x = 2\n", "*** End of File\n", "+(\n",
                    "*** Update File: \n", "*** Update File: ../x\n", "<<'EOF'\n", "EOF\n", "\n"],
    "udiff": ["--- a/a.py\n", "+++ b/a.py\n", "--- /dev/null\n", "+++ /dev/null\n", "@@ -1 +1 @@\n",
              "@@ -1,2 +1,2 @@\n", "@@ -0,0 +1 @@\n", "@@ -99999999999999999999,1 +1 @@\n",
              "@@ -1,0 +1,0 @@\n", " x = 1\n", "-x = 1\n", "+x = 2\n", "\\ No newline at end of file\n",
              "diff --git a/a.py b/a.py\n", "rename from a.py\n", "rename to c.py\n", "\n"],
    "ot": ["[", "]", "{", "}", "1", "-1", "99999999999999999999", '"x"', ",", '{"d": "x"}', '{"d": 1}',
           "retain(1)", 'insert("x")', "delete(1)", "1e400", "null", '"\\ud800"', "[" * 2000, "]"],
    "rule": ["id: r\n", "language: python\n", "rule:\n", "  pattern: x\n", "  kind: call\n",
             "  regex: '('\n", "fix: y\n", "fix: $A\n", "---\n", "  any: [{pattern: x}]\n", "  not: {}\n",
             "constraints:\n  A: {regex: x}\n", "  pattern: print($A)\n", "x => y\n", "print($A) => $A\n",
             "language: cobol\n", "  nthChild: 99999999999999999999\n", "  kind: 1\n", "fix: 1\n",
             "  inside: {kind: module, stopBy: end}\n", "a: &a [x]\n", "b: *a\n", "[" * 2000],
}
TARGETS = [[], ["a.py"], ["t.txt"], ["d.json"], ["*.py"], ["../x"], ["missing.py"]]
NOISE = ["", "\x00", "\r", "\ufeff", "\t", "\x85", "\u2028", "é"]

edits = st.sampled_from(sorted(PIECES)).flatmap(lambda name: st.tuples(
    st.just(name), st.lists(st.sampled_from(PIECES[name]), min_size=1, max_size=12).map("".join)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit=edits, noise=st.sampled_from(NOISE), at=st.integers(min_value=0),
       target=st.sampled_from(TARGETS), auto=st.booleans())
def test_a_bad_edit_in_any_format_is_an_answer_not_an_exception(edit, noise, at, target, auto):
    name, text = edit
    at %= len(text) + 1
    result = apply_edit(text[:at] + noise + text[at:], format="auto" if auto else name,
                        files=MemoryFiles(dict(FILES)), targets=target)
    assert isinstance(result, ApplyResult)
    assert result.ok or result.errors


@pytest.mark.parametrize("text, format, message", [
    ("--- a/a.py\n+++ b/a.py\n@@ -99999999999999999999,1 +1 @@\n-nope\n+x\n", "udiff", "not found"),
    ("--- a/a.py\n+++ b/a.py\n@@ -1,0 +1,0 @@\n", "udiff", "has no lines"),
    ('[{"d": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}]", "ot", "nested about a thousand deep"),
])
def test_edits_that_raised_or_hung_are_answered_at_once(text, format, message):
    started = time.monotonic()
    result = apply_edit(text, format=format, files=MemoryFiles(dict(FILES)), targets=["a.py"])
    assert time.monotonic() - started < 1
    assert not result.ok and message in str(result.errors[0])
