"""The unified diff format: conformance corpora, unit cases, round trips, the llguidance grammar."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grammars
from decoding.constraint import grammar_admits
from editor.errors import ApplyError, EditError, ParseError
from editor.files import MemoryFiles, Workspace
from editor.formats import detect, udiff
from editor.formats.udiff import Edit, FilePatch, Hunk, Line
from tests.conftest import SHARED

CORPUS = SHARED / "conformance/unified_diff"
PYTHON_PATCH = CORPUS / "python-patch"
WHATTHEPATCH = CORPUS / "whatthepatch"


def read(path: Path) -> str:
    """A file's exact text (no newline translation)."""
    return path.read_bytes().decode("utf-8")


def applied(texts: dict[str, str], diff_text: str, **kwargs) -> dict[str, str]:
    files = MemoryFiles(texts)
    files.commit(udiff.apply(files, udiff.parse(diff_text), **kwargs))
    return files.texts


# ------------------------------------------------------------------------------- conformance

@pytest.mark.shared
@pytest.mark.parametrize("stem", sorted(p.name[:-len(".patch")] for p in PYTHON_PATCH.glob("*.patch")))
def test_python_patch_file_cases(stem, tmp_path):
    # As python-patch's own runner does: the patch names NN.from as its old file and NN.to as its
    # new one; like GNU patch we patch the old file in place, then compare it with NN.to. The
    # shared corpus is read-only: copy the bytes, not the mode.
    shutil.copyfile(PYTHON_PATCH / f"{stem}.from", tmp_path / f"{stem}.from")
    workspace = Workspace(tmp_path)
    workspace.commit(udiff.apply(workspace, udiff.parse(read(PYTHON_PATCH / f"{stem}.patch"))))
    assert (tmp_path / f"{stem}.from").read_bytes() == (PYTHON_PATCH / f"{stem}.to").read_bytes()


@pytest.mark.shared
@pytest.mark.parametrize("case", ["01uni_multi", "06nested"])
def test_python_patch_tree_cases(case, tmp_path):
    source = PYTHON_PATCH / case
    root = tmp_path / "tree"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("[[]result]", "*.patch"),
                    copy_function=shutil.copyfile)  # the corpus is read-only; its copy need not be
    workspace = Workspace(root)
    changes = udiff.apply(workspace, udiff.parse(read(source / f"{case}.patch")))
    workspace.commit(changes)
    expected = sorted(p.relative_to(source / "[result]") for p in (source / "[result]").rglob("*")
                      if p.is_file())
    assert expected and {c.path for c in changes} == {p.as_posix() for p in expected}
    for rel in expected:
        assert (root / rel).read_bytes() == (source / "[result]" / rel).read_bytes(), rel


@pytest.mark.shared
def test_whatthepatch_lao_to_tzu():
    texts = applied({"lao": read(WHATTHEPATCH / "lao")}, read(WHATTHEPATCH / "diff-unified.diff"))
    assert texts == {"lao": read(WHATTHEPATCH / "tzu")}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(p.name for p in WHATTHEPATCH.glob("diff-unified-bad*.diff")))
def test_whatthepatch_bad_diffs_are_rejected(name):
    with pytest.raises((ParseError, ApplyError)) as caught:
        applied({"lao": read(WHATTHEPATCH / "lao")}, read(WHATTHEPATCH / name))
    error = caught.value
    assert error.file == "lao" and error.hunk and error.line
    assert "should be" in error.message and "but is" in error.message


@pytest.mark.shared
def test_whatthepatch_bad_diffs_name_the_wrong_line():
    with pytest.raises(ApplyError) as caught:
        applied({"lao": read(WHATTHEPATCH / "lao")}, read(WHATTHEPATCH / "diff-unified-bad.diff"))
    assert caught.value.hunk == 1
    assert ("line 4 should be 'The Named is the mother of all tings.' but is "
            "'The Named is the mother of all things.'") in caught.value.message
    with pytest.raises(ApplyError) as caught:
        applied({"lao": read(WHATTHEPATCH / "lao")}, read(WHATTHEPATCH / "diff-unified-bad2.diff"))
    assert caught.value.hunk == 2 and caught.value.line == 9
    assert "'The two are te same,' but is 'The two are the same,'" in caught.value.message


@pytest.mark.shared
def test_lines_past_a_hunks_count_are_an_error_not_ignored():
    # whatthepatch (and GNU patch) skip these lines as text after the diff. A model that miscounts
    # a header would lose its last lines silently that way, so we refuse instead.
    with pytest.raises(ParseError, match="fix the counts") as caught:
        udiff.parse(read(WHATTHEPATCH / "diff-unified-blah.diff"))
    assert (caught.value.line, caught.value.hunk) == (20, 2)
    with pytest.raises(ParseError, match="'\\+D' looks like a hunk line"):
        udiff.parse("--- a/h\n+++ b/h\n@@ -1,2 +1,2 @@\n a\n-b\n+C\n+D\n")
    signed = "--- a/h\n+++ b/h\n@@ -1 +1 @@\n-b\n+C\n-- \n2.39.0\n"  # git format-patch
    assert len(udiff.parse(signed).files[0].hunks) == 1


SAMPLES = sorted((CORPUS / "unidiff-samples").glob("*.diff"))


@pytest.mark.shared
@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_unidiff_samples_parse_or_are_refused_clearly(path):
    try:
        edit = udiff.parse(read(path))
    except EditError as error:
        assert error.line, "a refusal names the line"
        return
    assert edit.files and udiff.parse(udiff.render(edit)) == edit


@pytest.mark.shared
def test_unidiff_samples_cover_both_outcomes():
    outcomes = {}
    for path in SAMPLES:
        try:
            udiff.parse(read(path))
            outcomes[path.name] = "parsed"
        except EditError:
            outcomes[path.name] = "refused"
    assert outcomes["binary.diff"] == outcomes["sample8.diff"] == "refused"
    assert outcomes["git_rename.diff"] == outcomes["git_quoted_filename.diff"] == "parsed"


# -------------------------------------------------------------------------------------- parse

@pytest.mark.shared
def test_parse_git_headers():
    edit = udiff.parse(read(CORPUS / "unidiff-samples/git_rename.diff"))
    assert [(f.source, f.target, f.is_rename, len(f.hunks)) for f in edit.files] == [
        ("added", "moved", True, 1), ("oldfile", "newfile", True, 1), ("onefile", "otherfile", True, 0)]
    edit = udiff.parse(read(CORPUS / "unidiff-samples/git.diff"))
    added, modified, removed = edit.files
    assert added.is_new and added.new_mode == "100644" and added.target == "added_file"
    assert removed.is_deleted and removed.old_mode == "100644" and removed.source == "removed_file"
    assert not modified.is_new and not modified.is_deleted and modified.source == "modified_file"
    assert added.hunks[0].lines[-1] == Line("+", "Only for testing purposes.", "")


def test_parse_mode_change_without_hunks():
    edit = udiff.parse("diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n")
    assert edit.files == (FilePatch("run.sh", "run.sh", (), False, "100644", "100755"),)


@pytest.mark.shared
def test_parse_quoted_names_and_timestamps():
    edit = udiff.parse(read(CORPUS / "unidiff-samples/git_quoted_filename.diff"))
    assert edit.files[0].target == "A \u00e2 B.py"
    text = ("--- a/x y.txt\t2013-01-05 16:56:19.000000000 -0600\n"
            "+++ b/x y.txt 2013-01-05 16:56:35.000000000 -0600\n@@ -1 +1 @@\n-a\n+b\n")
    assert udiff.parse(text).files[0].source == udiff.parse(text).files[0].target == "x y.txt"


def test_parse_prefix_stripping():
    plain = udiff.parse("--- x.py\n+++ x.py\n@@ -1 +1 @@\n-a\n+b\n").files[0]
    assert (plain.source, plain.target) == ("x.py", "x.py")
    one_sided = udiff.parse("--- a/x.py\n+++ x.py\n@@ -1 +1 @@\n-a\n+b\n").files[0]
    assert (one_sided.source, one_sided.target) == ("a/x.py", "x.py")  # -p1 needs both prefixes
    created = udiff.parse("--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+x\n").files[0]
    assert created.is_new and created.target == "new.py"


@pytest.mark.shared
def test_parse_binary_is_refused():
    with pytest.raises(ParseError, match="binary") as caught:
        udiff.parse(read(CORPUS / "unidiff-samples/binary.diff"))
    assert caught.value.file == "1x1.png" and caught.value.line == 11


@pytest.mark.parametrize("text, line, hunk, words", [
    ("--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n", 3, 1, "ends inside the hunk"),
    ("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\nzzz\n", 5, 1, "expected a hunk line"),
    ("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n@@ -5,0 +5,1 @@\n a\n", 7, 2, "past the hunk"),
    ("\n@@ -1,2 +1,2 @@\n-a\n", 2, 1, "ends inside"),  # headerless: lines still count from 1
    ("+++ b/x\n@@ -1 +1 @@\n", 1, None, "without a matching '---'"),
    ("hello\nworld\n", 1, None, "no unified diff found"),
    ("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n\\ No newline at end of file\n+b\n c\n", None, 1,
     "not the last line"),
])
def test_parse_errors_name_line_and_hunk(text, line, hunk, words):
    with pytest.raises(ParseError) as caught:
        udiff.parse(text)
    assert words in caught.value.message
    if line is not None:
        assert caught.value.line == line
    assert caught.value.hunk == hunk


@given(st.lists(st.sampled_from(["--- a/x\n", "+++ b/x\n", "@@ -1,2 +1,2 @@\n", "@@ -1 +1 @@\n",
                                         " a\n", "-a\n", "+b\n", "\\ No newline at end of file\n",
                                         "diff --git a/x b/x\n", "new file mode 100644\n",
                                  "rename from y\n", "\n", "x", "\r\n"]), max_size=30).map("".join))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises_anything_but_parse_error(text):
    try:
        edit = udiff.parse(text)
    except ParseError:
        return
    assert udiff.parse(udiff.render(edit)) == edit


def test_looks_like():
    assert udiff.looks_like("--- a/x\n+++ b/x\n@@ -1 +1 @@\n")
    assert udiff.looks_like("diff --git a/x b/x\nold mode 100644\n")
    assert udiff.looks_like("@@ -3,2 +3,2 @@\n-a\n+b\n")
    assert not udiff.looks_like("*** Begin Patch\n*** Update File: x\n@@ def f\n-a\n+b\n")
    assert not udiff.looks_like("just some text\n-- a comment\n")
    assert detect("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n") == "udiff"


# -------------------------------------------------------------------------------------- apply

TEN = "".join(f"line {i}\n" for i in range(1, 11))


def test_exact_apply_has_no_notes():
    result = udiff.apply_with_report(MemoryFiles({"f": TEN}),
                                     udiff.parse("--- a/f\n+++ b/f\n@@ -4,3 +4,3 @@\n line 4\n-line 5\n"
                                                 "+five\n line 6\n"))
    assert result.changes[0].new_text == TEN.replace("line 5\n", "five\n")
    assert result.notes == []


def test_offset_is_found_and_reported():
    text = "x\ny\nz\n" + TEN
    result = udiff.apply_with_report(MemoryFiles({"f": text}),
                                     udiff.parse("--- a/f\n+++ b/f\n@@ -4,3 +4,3 @@\n line 4\n-line 5\n"
                                                 "+five\n line 6\n@@ -8,2 +8,2 @@\n line 8\n-line 9\n"
                                                 "+nine\n"))
    assert result.changes[0].new_text == text.replace("line 5", "five").replace("line 9", "nine")
    assert [(n.hunk, n.stated_line, n.applied_line, n.fuzz) for n in result.notes] == [
        (1, 4, 7, 0), (2, 8, 11, 0)]
    assert str(result.notes[0]) == "f: hunk 1 applied at line 7 (offset +3 lines)"


def test_offset_search_prefers_the_nearest_match():
    text = "a\nb\nX\nc\nd\ne\nf\ng\nX\nh\n"  # X at lines 3 and 9; stated line 7 is nearer to 9
    texts = applied({"f": text}, "--- a/f\n+++ b/f\n@@ -7 +7 @@\n-X\n+Y\n")
    assert texts["f"] == text[:-4] + "Y\nh\n"


def test_fuzz_ignores_outer_context_lines():
    text = TEN.replace("line 3\n", "LINE three\n")
    result = udiff.apply_with_report(MemoryFiles({"f": text}),
                                     udiff.parse("--- a/f\n+++ b/f\n@@ -3,5 +3,5 @@\n line 3\n line 4\n"
                                                 "-line 5\n+five\n line 6\n line 7\n"))
    assert result.changes[0].new_text == text.replace("line 5", "five")
    assert [(n.applied_line, n.fuzz) for n in result.notes] == [(3, 1)]


def test_fuzz_two_and_its_limit():
    diff_text = ("--- a/f\n+++ b/f\n@@ -2,7 +2,7 @@\n line 2\n line 3\n line 4\n-line 5\n+five\n"
                 " line 6\n line 7\n line 8\n")
    two_off = TEN.replace("line 2\n", "two\n").replace("line 3\n", "three\n")
    result = udiff.apply_with_report(MemoryFiles({"f": two_off}), udiff.parse(diff_text))
    assert result.changes[0].new_text == two_off.replace("line 5", "five")
    assert result.notes[0].fuzz == 2
    three_off = two_off.replace("line 4\n", "four\n")
    with pytest.raises(ApplyError, match="fuzz 1-2"):
        applied({"f": three_off}, diff_text)


def test_one_sided_context_gets_no_fuzz():
    diff_text = "--- a/f\n+++ b/f\n@@ -8,3 +8,4 @@\n line 8\n line 9\n line 10\n+eleven\n"
    with pytest.raises(ApplyError, match="context on one side only"):
        applied({"f": TEN.replace("line 8", "eight")}, diff_text)


def test_mismatch_error_names_file_hunk_line_and_lines():
    with pytest.raises(ApplyError) as caught:
        applied({"f": TEN}, "--- a/f\n+++ b/f\n@@ -4,3 +4,3 @@\n line 4\n-line five\n+5\n line 6\n")
    error = caught.value
    assert (error.file, error.hunk, error.line) == ("f", 1, 4)
    assert "line 5 should be 'line five' but is 'line 5'" in error.message
    assert str(error).startswith("f:4, hunk 1: @@ -4,3 +4,3 @@ does not match at line 4")


def test_mismatch_past_the_end():
    with pytest.raises(ApplyError, match="file ends after line 10"):
        applied({"f": TEN}, "--- a/f\n+++ b/f\n@@ -10,2 +10,1 @@\n line 10\n-line 11\n")


def test_overlapping_hunks_are_rejected():
    with pytest.raises(ApplyError, match="overlaps") as caught:
        applied({"f": TEN}, "--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+3\n line 4\n"
                            "@@ -4,2 +4,2 @@\n line 4\n-line 5\n+5\n")
    assert caught.value.hunk == 2


def test_a_hunk_whose_header_starts_inside_the_previous_one_is_sought_past_it():
    # Found on HumanEvalFix (udiff, the 1.5B model): `@@ -17,1` for the line after a hunk that ended at line 17.
    diff_text = ("--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+3\n line 4\n"
                 "@@ -4,2 +4,2 @@\n line 5\n-line 6\n+6\n")
    result = udiff.apply_with_report(MemoryFiles({"f": TEN}), udiff.parse(diff_text))
    assert result.changes[0].new_text == TEN.replace("line 3\n", "3\n").replace("line 6\n", "6\n")
    assert [(n.hunk, n.stated_line, n.applied_line, n.fuzz) for n in result.notes] == [(2, 4, 5, 0)]


def test_a_hunk_before_the_previous_one_is_rejected():
    with pytest.raises(ApplyError, match="hunk 2 .* precedes hunk 1, which starts at line 5") as caught:
        applied({"f": TEN}, "--- a/f\n+++ b/f\n@@ -5,1 +5,1 @@\n-line 5\n+5\n@@ -2,1 +2,1 @@\n-line 2\n+2\n")
    assert caught.value.hunk == 2


def test_hunks_do_not_match_inside_earlier_hunks():
    text = "a\nb\nc\n"
    with pytest.raises(ApplyError):  # the second hunk's 'b' was consumed by the first
        applied({"f": text}, "--- a/f\n+++ b/f\n@@ -1,2 +1,1 @@\n-a\n b\n@@ -3,1 +2,1 @@\n-b\n+B\n")


def test_crlf_is_kept():
    text = TEN.replace("\n", "\r\n")
    texts = applied({"f": text}, "--- a/f\n+++ b/f\n@@ -4,3 +4,4 @@\n line 4\n-line 5\n+five\n+5b\n"
                                 " line 6\n")
    assert texts["f"] == text.replace("line 5\r\n", "five\r\n5b\r\n")


def test_crlf_diff_on_lf_file_writes_lf():
    texts = applied({"f": TEN}, "--- a/f\r\n+++ b/f\r\n@@ -4,3 +4,3 @@\r\n line 4\r\n-line 5\r\n"
                                "+five\r\n line 6\r\n")
    assert texts["f"] == TEN.replace("line 5", "five")


def test_mixed_endings_follow_the_line_before():
    text = "head\nA\r\nB\r\nC\r\n"
    texts = applied({"f": text}, "--- a/f\n+++ b/f\n@@ -2,3 +2,4 @@\n A\n+new\n B\n C\n")
    assert texts["f"] == "head\nA\r\nnew\r\nB\r\nC\r\n"


def test_bom_is_kept():
    texts = applied({"f": "\ufeff" + TEN}, "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-line 1\n+one\n line 2\n")
    assert texts["f"] == "\ufeff" + TEN.replace("line 1\n", "one\n", 1)


def test_missing_final_newline_is_kept_when_the_end_is_untouched():
    text = TEN.rstrip("\n")
    texts = applied({"f": text}, "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-line 1\n+one\n line 2\n")
    assert texts["f"] == text.replace("line 1\n", "one\n", 1)


def test_no_newline_marker_removes_and_adds_the_final_newline():
    removed = applied({"f": "a\nb\n"}, "--- a/f\n+++ b/f\n@@ -2 +2 @@\n-b\n+b\n"
                                       "\\ No newline at end of file\n")
    assert removed["f"] == "a\nb"
    added = applied({"f": "a\nb"}, "--- a/f\n+++ b/f\n@@ -2 +2,2 @@\n-b\n"
                                   "\\ No newline at end of file\n+b\n+c\n")
    assert added["f"] == "a\nb\nc\n"


def test_a_hunk_at_the_end_without_marker_adds_the_final_newline():
    # the diff says the last line ends with a newline (python-patch's 07 case does this)
    texts = applied({"f": "a\nb\nc"}, "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n-a\n+A\n b\n c\n")
    assert texts["f"] == "A\nb\nc\n"


def test_insertion_after_a_last_line_without_newline():
    texts = applied({"f": "a\nb"}, "--- a/f\n+++ b/f\n@@ -2,0 +3 @@\n+c\n")
    assert texts["f"] == "a\nb\nc\n"


@pytest.mark.shared
def test_new_file():
    texts = applied({}, "--- /dev/null\n+++ b/dir/new.py\n@@ -0,0 +1,2 @@\n+x = 1\n+y = 2\n"
                        "\\ No newline at end of file\n")
    assert texts == {"dir/new.py": "x = 1\ny = 2"}
    crlf = applied({}, "diff --git a/n b/n\nnew file mode 100644\n--- /dev/null\n+++ b/n\n"
                       "@@ -0,0 +1,2 @@\n+x\r\n+y\r\n")
    assert crlf == {"n": "x\r\ny\r\n"}
    empty = applied({}, read(WHATTHEPATCH / "git-new-empty-file.diff"))
    assert empty == {"somefile.txt": ""}
    with pytest.raises(ApplyError, match="already exists"):
        applied({"dir/new.py": "old\n"}, "--- /dev/null\n+++ b/dir/new.py\n@@ -0,0 +1 @@\n+x\n")


def test_deleted_file_must_match_its_content():
    assert applied({"f": "a\nb\n", "g": "1\n"},
                   "--- a/f\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n") == {"g": "1\n"}
    with pytest.raises(ApplyError, match="1 line"):
        applied({"f": "a\nb\nc\n"}, "--- a/f\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n")
    with pytest.raises(ApplyError, match="should be 'a'"):
        applied({"f": "A\nb\n"}, "--- a/f\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n")


def test_rename_with_and_without_hunks():
    assert applied({"old.py": "a\n"}, "diff --git a/old.py b/new.py\nsimilarity index 100%\n"
                                      "rename from old.py\nrename to new.py\n") == {"new.py": "a\n"}
    files = MemoryFiles({"old.py": "a\nb\n"})
    changes = udiff.apply(files, udiff.parse(
        "diff --git a/old.py b/new.py\nrename from old.py\nrename to new.py\n--- a/old.py\n"
        "+++ b/new.py\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"))
    assert [(c.path, c.move_to, c.status) for c in changes] == [("old.py", "new.py", "renamed")]
    files.commit(changes)
    assert files.texts == {"new.py": "a\nc\n"}
    with pytest.raises(ApplyError, match="already exists"):
        applied({"old.py": "a\n", "new.py": "b\n"},
                "diff --git a/old.py b/new.py\nrename from old.py\nrename to new.py\n")


def test_mode_change_only_changes_nothing():
    edit = udiff.parse("diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n")
    assert udiff.apply(MemoryFiles({"run.sh": "echo\n"}), edit) == []


def test_plain_diff_with_two_names_patches_the_existing_file():
    # GNU patch's rule: '--- a/x.orig' / '+++ b/x' patches whichever of the two exists
    assert applied({"x.orig": "a\n"}, "--- a/x.orig\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n") == {"x.orig": "b\n"}
    assert applied({"x": "a\n"}, "--- a/x.orig\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n") == {"x": "b\n"}


def test_multi_file_and_partial():
    diff_text = ("--- a/one\n+++ b/one\n@@ -1 +1 @@\n-1\n+one\n"
                 "--- a/two\n+++ b/two\n@@ -1 +1 @@\n-2\n+two\n"
                 "--- a/three\n+++ b/three\n@@ -1 +1 @@\n-3\n+three\n")
    texts = {"one": "1\n", "two": "2\n", "three": "3\n"}
    assert applied(texts, diff_text) == {"one": "one\n", "two": "two\n", "three": "three\n"}
    broken = dict(texts, two="TWO\n")
    with pytest.raises(ApplyError) as caught:
        udiff.apply(MemoryFiles(broken), udiff.parse(diff_text))
    assert caught.value.file == "two" and caught.value.applied == []
    with pytest.raises(ApplyError) as caught:
        udiff.apply(MemoryFiles(broken), udiff.parse(diff_text), partial=True)
    assert caught.value.file == "two" and caught.value.hunk == 1
    assert [(c.path, c.new_text) for c in caught.value.applied] == [("one", "one\n")]


def test_missing_file_is_an_apply_error_in_partial_mode_too():
    with pytest.raises(ApplyError, match="not found") as caught:
        udiff.apply(MemoryFiles({"one": "1\n"}), udiff.parse(
            "--- a/one\n+++ b/one\n@@ -1 +1 @@\n-1\n+one\n--- a/gone\n+++ b/gone\n@@ -1 +1 @@\n-x\n+y\n"),
            partial=True)
    assert caught.value.file == "gone" and len(caught.value.applied) == 1


def test_target_overrides_the_headers():
    diff_text = "--- a/whatever.py\n+++ b/whatever.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert applied({"real.py": "a\n"}, diff_text, target="real.py") == {"real.py": "b\n"}
    assert applied({"real.py": "a\n"}, "@@ -1 +1 @@\n-a\n+b\n", target="real.py") == {"real.py": "b\n"}
    with pytest.raises(ApplyError, match="names no file"):
        applied({"real.py": "a\n"}, "@@ -1 +1 @@\n-a\n+b\n")
    two_files = diff_text + "--- a/other\n+++ b/other\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(ApplyError, match="one file"):
        applied({"real.py": "a\n"}, two_files, target="real.py")


@pytest.mark.shared
def test_unsafe_paths_are_refused():
    with pytest.raises(EditError, match=r"\.\."):
        applied({}, read(PYTHON_PATCH / "data/autofix/parent-path.diff"))


def test_apply_never_writes(tmp_path):
    (tmp_path / "f").write_text("a\n")
    changes = udiff.apply(Workspace(tmp_path), udiff.parse("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"))
    assert (tmp_path / "f").read_text() == "a\n" and changes[0].new_text == "b\n"


# ------------------------------------------------------------------------- render and diff()

def test_render_is_canonical_and_round_trips():
    edit = Edit((
        FilePatch("x.py", "x.py", (Hunk(1, 2, 1, 2, (Line(" ", "a"), Line("-", "b", "\r\n"),
                                                     Line("+", "B", "")),),)),
        FilePatch("old name", "new\tname", (), True),
        FilePatch(None, "n", (Hunk(0, 0, 1, 1, (Line("+", "x"),)),), new_mode="100755"),
        FilePatch("d", None, (Hunk(1, 1, 0, 0, (Line("-", "x"),)),)),
        FilePatch("a.orig", "a", (Hunk(1, 1, 1, 1, (Line("-", "x"), Line("+", "y"))),)),
    ))
    text = udiff.render(edit)
    assert text.startswith("diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n a\n"
                           "-b\r\n+B\n\\ No newline at end of file\n")
    assert 'rename to "new\\tname"\n' in text
    assert "--- /dev/null\n+++ b/n\n" in text and "new file mode 100755\n" in text
    assert "--- a/d\n+++ /dev/null\n" in text
    assert "--- a/a.orig\n+++ b/a\n" in text and "diff --git a/a.orig" not in text
    assert udiff.parse(text) == edit


def test_headerless_render_round_trips():
    edit = Edit((FilePatch("", "", (Hunk(3, 1, 3, 1, (Line("-", "a"), Line("+", "b"))),)),))
    assert udiff.render(edit) == "@@ -3,1 +3,1 @@\n-a\n+b\n"
    assert udiff.parse(udiff.render(edit)) == edit


def test_diff_helper():
    edit = udiff.diff("a\nb\nc\n", "a\nB\nc\n", "f.txt")
    assert udiff.render(edit) == ("diff --git a/f.txt b/f.txt\n--- a/f.txt\n+++ b/f.txt\n"
                                  "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n")
    created = udiff.diff(None, "x\n", "n")
    assert created.files[0].is_new and udiff.apply(MemoryFiles(), created)[0].new_text == "x\n"
    deleted = udiff.diff("x\n", None, "n")
    assert udiff.apply(MemoryFiles({"n": "x\n"}), deleted)[0].status == "deleted"


@functools.lru_cache(maxsize=None)
def _stdlib_lines(path: Path) -> tuple[str, ...]:
    return tuple(path.read_text(encoding="utf-8").splitlines(keepends=True))


def _stdlib_sources() -> list[Path]:
    out = []
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        try:
            path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(path)
    return out


STDLIB = _stdlib_sources()
NEW_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@st.composite
def edited_files(draw):
    """(before, after): a window of a stdlib source and a few random line edits of it."""
    lines = _stdlib_lines(draw(st.sampled_from(STDLIB)))
    start = draw(st.integers(0, len(lines)))
    before = list(lines[start:start + draw(st.integers(0, 200))])
    after = list(before)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(after)))
        j = draw(st.integers(i, min(len(after), i + 4)))
        after[i:j] = draw(st.lists(st.sampled_from(lines) | NEW_TEXT.map(lambda s: s + "\n"),
                                   max_size=4))
    old, new = "".join(before), "".join(after)
    if draw(st.booleans()):
        old = old.rstrip("\n")
    if draw(st.booleans()):
        new = new.rstrip("\n")
    if draw(st.booleans()):
        old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
    return old, new


@given(edited_files())
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_over_stdlib_sources(pair):
    old, new = pair
    edit = udiff.diff(old, new, "f.py")
    text = udiff.render(edit)
    assert udiff.parse(text) == edit
    changes = udiff.apply(MemoryFiles({"f.py": old}), udiff.parse(text))
    assert (changes[0].new_text if changes else old) == new


# ------------------------------------------------------------------------------------ grammar

@functools.lru_cache(maxsize=1)
def _tokenizer():
    """A tiny byte-level BPE, enough to drive llguidance over any text."""
    import llguidance

    from tests.tiny_models import byte_bpe

    tok = byte_bpe([udiff.render(udiff.diff(TEN, TEN.replace("5", "five"), "f.py"))] * 4, 400)
    return llguidance.LLTokenizer(tok.to_str(), eos_token=tok.token_to_id("<eos>"))


def _accepts(grammar: str, text: str) -> bool:
    import llguidance

    tokenizer = _tokenizer()
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return (matcher.consume_tokens(tokenizer.tokenize_str(text)) and matcher.is_accepting()
            and not matcher.is_error())


def test_grammar_compiles():
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_lark(grammars.load("udiff")), _tokenizer())
    assert not is_error, messages


def test_grammar_accepts_rendered_diffs():
    old = "def f():\n    return 1\n-- sql comment\n---\nlast"
    new = "def f():\n    return 2\n-- sql comment\nlast\n"
    edit = Edit(udiff.diff(old, new, "src/x.py").files + udiff.diff(None, "n\n", "n.txt").files
                + udiff.diff("gone\n", None, "g.txt").files
                + udiff.diff("a\n--- b\n", "--- b\n", "y.py").files)
    text = udiff.render(edit)
    grammar = grammars.load("udiff")
    assert _accepts(grammar, text)
    assert _accepts(grammar, "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")  # first file: no git line
    assert not _accepts(grammar, "--- a/x\n+++ b/x\n@@ -1 +1 @@\nno prefix\n")
    assert not _accepts(grammar, "--- a/x\n+++ b/x\n@@ -1,1 +1,1 @@ section\n-a\n")


def test_grammar_document_convention():
    grammar = grammars.load("udiff")
    assert grammars.markers("udiff") == ["DOC_LINE", "PATH"]
    # what the decoding engine does: the file's own lines and paths replace the generic terminals
    document = "def f():\n    return 1\n"
    constrained = grammars.narrow(grammar, document=document, paths=["src/x.py"])
    good = udiff.render(udiff.diff(document, document.replace("1", "2"), "src/x.py"))
    assert _accepts(constrained, good)
    assert not _accepts(constrained, good.replace("-    return 1", "-    return 3"))
    assert not _accepts(constrained, good.replace("src/x.py", "src/y.py"))


def test_narrowed_hunks_quote_contiguous_runs_of_the_file():
    # The default model repeated one -/+ pair of lines until its output budget ran out.
    document = "def f(values):\n    return [x for x in values]\n\nprint(f([1]))\n"
    constrained = grammars.narrow(grammars.load("udiff"), document=document, paths=["x.py"], code=True)
    head = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n"
    pair = "-    return [x for x in values]\n+    return [x for x in values if x]\n"
    assert _accepts(constrained, head + " def f(values):\n" + pair)
    assert not _accepts(constrained, head + " def f(values):\n" + pair + " def f(values):\n" + pair)
    assert _accepts(constrained, head + " def f(values):\n     return [x for x in values]\n")  # changes nothing
    assert not _accepts(constrained, head + " def f(values):\n+++ b/x.py\n")  # no marker-like code line
    unended = document.removesuffix("\n")  # its last line is marked as having no newline
    marked = grammars.narrow(grammars.load("udiff"), document=unended, paths=["x.py"], code=True)
    tail = "--- a/x.py\n+++ b/x.py\n@@ -4 +4 @@\n-print(f([1]))\n\\ No newline at end of file\n+print(f([2]))\n"
    assert _accepts(marked, tail)
    assert _accepts(marked, tail + "\\ No newline at end of file\n")
    assert _accepts(marked, udiff.render(udiff.diff(unended, unended.replace("[1]", "[2]"), "x.py")))


def test_a_diff_may_end_on_an_added_line_without_its_newline():
    # The 1.5B ends its turn right after the added line's text (p = 0.998); a grammar that wanted "\n" first made
    # it write on into a comment until the output budget ran out (9 of its first 14 EditEval udiffs). The
    # constraint takes that end of turn for the last newline (decoding/constraint.py).
    document = "def truncate(number):\n    return number % 1.0\n"
    head = "--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n def truncate(number):\n-    return number % 1.0\n"
    constrained = grammars.narrow(grammars.load("udiff"), document=document, paths=["x.py"], code=True)
    assert grammar_admits(constrained, head + "+    return int(number)")
    assert not grammar_admits(constrained, head + "+++ b/x.py")  # no marker-like code line, ended or not
    answer = udiff.recount(head + "+    return int(number)")
    assert applied({"x.py": document}, answer)["x.py"] == "def truncate(number):\n    return int(number)\n"


def test_recount_fixes_hunk_header_counts():
    miscounted = "--- a/f\n+++ b/f\n@@ -2,9 +2,1 @@ def f\n a\n-b\n+c\n+d\n@@ -9 +10,7 @@\n x\n"
    fixed = udiff.recount(miscounted)
    assert fixed == "--- a/f\n+++ b/f\n@@ -2,2 +2,3 @@ def f\n a\n-b\n+c\n+d\n@@ -9,1 +10,1 @@\n x\n"
    assert len(udiff.parse(fixed).files[0].hunks) == 2
