"""The OT edit format: syntax, quoting, applying, the ottypes library functions, prefix_ok, the grammar
and a taught tiny model writing a quoting edit through the Editor."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import llguidance
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import grammars
from decoding.constraint import byte_tokenizer, compiled
from editor.errors import ApplyError, ParseError
from editor.files import MemoryFiles
from editor.formats import ot
from editor.formats.ot import Delete, Edit, Insert, Retain, Seek
from tests.conftest import SHARED

TRANSFORM_CASES = SHARED / "conformance/ot/text-transform-tests.json"


# --- syntax ----------------------------------------------------------------------------------

def test_parse_text_syntax_and_render_round_trip():
    text = '[retain(8), delete(6), insert("very very"), retain(10)]'
    edit = ot.parse(text)
    assert edit == Edit((Retain(8), Delete(6), Insert("very very"), Retain(10)))
    assert ot.render(edit) == text
    assert ot.parse(ot.render(edit)) == edit


def test_whitespace_and_newlines_between_ops():
    text = '\n  [\n  retain(2) ,\r\n\tdelete("ab"),insert("x")\n]\n'
    assert ot.parse(text) == Edit((Retain(2), Delete("ab"), Insert("x")))


def test_empty_edit_is_a_no_op():
    assert ot.parse("[]") == Edit()
    assert ot.parse(" [ ] ") == Edit()
    assert ot.apply_text("unchanged\n", ot.parse("[]")) == "unchanged\n"


def test_json_form():
    assert ot.parse('[8, {"d": 6}, "very very"]') == Edit((Retain(8), Delete(6), Insert("very very")))
    assert ot.parse('[1, {"d": "abc"}, {"i": "x"}]') == Edit((Retain(1), Delete("abc"), Insert("x")))
    edit = Edit((Retain(3), Delete("é😀"), Insert("a\nb")))
    assert ot.parse(json.dumps(ot.to_json(edit))) == edit


@pytest.mark.parametrize("text, line, words", [
    ('[retain(4) delete(2)]', 1, "column 12: expected ',' or ']'"),
    ('[\nretain(4),\n  retian(2)]', 3, "column 3: expected an op"),
    ('[retain(04)]', 1, "leading zeros"),
    ('[retain( 4)]', 1, "retain( takes a JSON string or a count"),
    ('[seek(4)]', 1, "seek( takes a JSON string"),
    ('[insert(4)]', 1, "insert( takes a JSON string"),
    ('[insert("a\\x")]', 1, "invalid escape"),
    ('[insert("\\ud83d")]', 1, "surrogate pair"),
    ('[insert("a\nb")]', 1, "control character '\\n'"),
    ('[retain(1),]', 1, "expected an op"),
    ('[retain(1)] trailing', 1, "after the closing ']'"),
    ('[insert("abc', 1, "ends early"),
    ('retain(1)', 1, "starts with '['"),
    ('[1, 2', 1, "not valid JSON"),
])
def test_parse_errors_name_the_position(text, line, words):
    with pytest.raises(ParseError) as err:
        ot.parse(text)
    assert err.value.line == line
    assert words in err.value.message


def test_json_form_errors_name_the_op():
    with pytest.raises(ParseError, match=r"op 2: \{\"x\": 2\} is not an op") as err:
        ot.parse('[1, {"x": 2}]')
    assert err.value.hunk == 2
    with pytest.raises(ParseError, match="op 2: true is not an op"):
        ot.parse("[1, true]")
    with pytest.raises(ParseError, match="lone surrogate"):
        ot.parse('["\\ud800"]')


def test_escapes_count_code_points():
    doc = "a😀b\tc"
    edit = ot.parse('[retain(1), delete("\\ud83d\\ude00"), insert("\\u00e9\\"\\\\\\/"), retain(1), '
                    'delete("\\t")]')
    assert edit.ops[1] == Delete("😀") and edit.ops[1].length == 1
    assert ot.apply_text(doc, edit) == 'aé"\\/bc'
    raw = ot.parse('[retain(1), delete("😀"), insert("€")]')
    assert ot.apply_text(doc, raw) == "a€b\tc"
    assert ot.parse(ot.render(Edit((Insert("\x00\x1f\u2028😀\"\\"),)))).ops[0].text == "\x00\x1f\u2028😀\"\\"


def test_crlf_text_counts_both_characters():
    doc = "one\r\ntwo\r\nthree\r\n"
    edit = ot.parse('[retain(5), delete("two\\r\\n"), insert("2\\r\\n")]')
    assert ot.apply_text(doc, edit) == "one\r\n2\r\nthree\r\n"
    with pytest.raises(ApplyError, match=r'expected "two\\n", found "two\\r"'):
        ot.apply_text(doc, ot.parse('[retain(5), delete("two\\n")]'))


def test_looks_like():
    assert ot.looks_like('[retain(3), insert("x")]')
    assert ot.looks_like('  [\n delete("x"')  # broken, but recognisably OT: parse explains
    assert ot.looks_like('[3, {"d": 2}, "x"]')
    assert ot.looks_like("[]")
    assert not ot.looks_like("*** Begin Patch\n")
    assert not ot.looks_like("--- a/x\n+++ b/x\n")
    assert not ot.looks_like('[{"rule": 1}]')
    assert not ot.looks_like("id: x\nrule:\n  pattern: a\n")


# --- applying --------------------------------------------------------------------------------

def test_apply_text_example():
    doc = "It is a big fish. Bye"
    assert ot.apply_text(doc, ot.parse('[retain(8), delete("big"), insert("very very big")]')) \
        == "It is a very very big fish. Bye"


def test_delete_text_mismatch_says_expected_found_and_where():
    doc = "first line\nsecond line\n"
    with pytest.raises(ApplyError) as err:
        ot.apply_text(doc, ot.parse('[retain(11), delete("second lime")]'))
    message = err.value.message
    assert 'expected "second lime", found "second line"' in message
    assert message.startswith('op 2 delete("second lime") at line 2 column 1: does not match')
    assert "first differ at line 2 column 10" in message
    assert err.value.line == 2 and err.value.hunk == 2


def test_delete_text_past_the_end():
    with pytest.raises(ApplyError, match=r'expected "cd", found "c" \(then the end of the document\)'):
        ot.apply_text("abc", ot.parse('[retain(2), delete("cd")]'))


@pytest.mark.parametrize("text, words, hunk", [
    ('[retain(2), retain(5)]', "op 2 retain(5) at line 1 column 3: runs past the end of the document: 2 code points are left", 2),
    ('[delete(5)]', "op 1 delete(5) at line 1 column 1: runs past the end", 1),
    ('[retain(0)]', "op 1 retain(0) at line 1 column 1: the count must be positive", 1),
    ('[insert("x"), delete(-1)]', "op 2 delete(-1) at line 1 column 1: the count must be positive", 2),
    ('[insert("")]', "inserts nothing", 1),
    ('[delete("")]', "deletes nothing", 1),
])
def test_counts_that_do_not_fit(text, words, hunk):
    with pytest.raises(ApplyError) as err:
        ot.apply_text("abcd", ot.parse(text))
    assert words in err.value.message
    assert err.value.hunk == hunk and err.value.line == 1


def test_error_names_the_document_line():
    with pytest.raises(ApplyError) as err:
        ot.apply_text("a\nb\nc", ot.parse("[retain(4), retain(9)]"))
    assert err.value.line == 3 and "line 3 column 1" in err.value.message


def test_apply_needs_a_target_and_names_the_file():
    files = MemoryFiles({"notes.txt": "\ufeffhello world\n"})
    edit = ot.parse('[retain(6), delete("world"), insert("there")]')
    with pytest.raises(ApplyError, match="give the target"):
        ot.apply(files, edit)
    with pytest.raises(ApplyError, match="file not found"):
        ot.apply(files, edit, target="other.txt")
    changes = ot.apply(files, edit, target="notes.txt")
    assert [(c.path, c.new_text) for c in changes] == [("notes.txt", "hello there\n")]
    files.commit(changes)
    assert files.texts["notes.txt"] == "\ufeffhello there\n"  # counted without the BOM, which is kept
    with pytest.raises(ApplyError) as err:
        ot.apply(files, ot.parse("[retain(100)]"), target="notes.txt", partial=True)
    assert err.value.file == "notes.txt" and err.value.hunk == 1 and err.value.applied == []
    assert str(err.value).startswith("notes.txt:1, hunk 1: op 1 retain(100) at line 1 column 1: runs past")


# --- quoting ---------------------------------------------------------------------------------

def counts(edit: Edit) -> bool:
    return any(isinstance(op, (Retain, Delete)) and op.text is None for op in edit.ops)


REALLY = "I really like it.\nIt is really good.\n"
REALLY_QUOTED = ('[seek("really"), delete("really"), insert("very very"), '
                 'seek("really"), delete("really"), insert("very very")]')


def test_quotes_resolve_to_counts():
    """The report's case: the model quotes, the tool counts."""
    edit = ot.parse(REALLY_QUOTED)
    resolved = ot.resolve(REALLY, edit)
    assert ot.render(resolved) == ('[retain(2), delete("really"), insert("very very"), retain(16), '
                                   'delete("really"), insert("very very")]')
    assert ot.apply_text(REALLY, edit) == ot.apply_text(REALLY, resolved) \
        == "I very very like it.\nIt is very very good.\n"


def test_seek_takes_the_first_occurrence_at_or_after_the_cursor():
    doc = "ab ab ab"
    assert ot.render(ot.resolve(doc, ot.parse('[seek("ab"), insert("x")]'))) == '[insert("x")]'
    assert ot.render(ot.resolve(doc, ot.parse('[seek("b a"), insert("x")]'))) == '[retain(1), insert("x")]'
    assert ot.render(ot.resolve(doc, ot.parse('[retain("ab"), seek("ab"), delete("ab")]'))) \
        == '[retain(3), delete("ab")]'
    assert ot.render(ot.resolve(doc, ot.parse('[seek("ab"), seek("ab"), retain("a"), seek("ab")]'))) == "[]"


def test_quotes_count_code_points_and_read_escapes():
    doc = 'é😀 "quoted" \\path\\\r\nnext\tline 😀'
    edit = ot.parse(r'[seek("\ud83d\ude00"), retain("😀 "), delete("\"quoted\""), insert("\"q\""), '
                    r'seek("\\\r\n"), retain("\\\r\nnext\t"), delete("line"), seek("😀"), delete("\ud83d\ude00"), '
                    r'insert("€")]')
    resolved = ot.resolve(doc, edit)
    assert resolved == Edit((Retain(3), Delete('"quoted"'), Insert('"q"'), Retain(14), Delete("line"),
                             Retain(1), Delete("😀"), Insert("€")))
    assert ot.apply_text(doc, edit) == ot.apply_text(doc, resolved) == 'é😀 "q" \\path\\\r\nnext\t €'


def test_resolve_fills_counted_deletes_and_merges():
    doc = "one two three"
    edit = Edit((Retain(3), Seek("two"), Delete(3), Retain(" "), Insert("2"), Seek("e")))
    assert ot.resolve(doc, edit) == Edit((Retain(4), Delete("two"), Retain(1), Insert("2")))


@pytest.mark.parametrize("text, words", [
    ('[seek("realy")]', 'op 1 seek("realy") at line 1 column 1: "realy" does not occur at or after the cursor'),
    ('[seek("good"), seek("like")]', 'op 2 seek("like") at line 2 column 14: "like" does not occur at or after '
                                     'the cursor (only before it, first at line 1 column 10: ops go through the '
                                     'document in order)'),
    ('[seek("")]', 'op 1 seek("") at line 1 column 1: seeks nothing'),
    ('[seek("It"), retain("It was")]', 'op 2 retain("It was") at line 2 column 1: does not match the document: '
                                       'expected "It was", found "It is "'),
    ('[retain("")]', 'retains nothing'),
])
def test_a_quote_that_does_not_fit_is_refused_by_name(text, words):
    with pytest.raises(ApplyError) as err:
        ot.apply_text(REALLY, ot.parse(text))
    assert words in err.value.message
    with pytest.raises(ApplyError, match="notes.txt"):
        ot.apply(MemoryFiles({"notes.txt": REALLY}), ot.parse(text), target="notes.txt")
    with pytest.raises(ApplyError):
        ot.resolve(REALLY, ot.parse(text))


def test_seeks_need_the_document():
    edit = ot.parse('[seek("x"), insert("y")]')
    for needs_counts in (ot.normalize, ot.invert, ot.to_json, lambda e: ot.compose(e, e),
                         lambda e: ot.transform(e, Edit(), "left")):
        with pytest.raises(ApplyError, match=r'op 1 seek\("x"\) is found in a document: resolve'):
            needs_counts(edit)
    assert ot.invert(edit, "axb") == Edit((Retain(1), Delete("y")))
    assert ot.to_json(ot.parse('[retain("ab"), delete("c")]')) == [2, {"d": "c"}]


# --- library ---------------------------------------------------------------------------------

def test_normalize():
    assert ot.normalize(Edit((Retain(0), Insert(""), Delete(0)))) == Edit()
    assert ot.normalize(Edit((Retain(1), Retain(1), Insert("h"), Insert("i"), Retain(5)))) \
        == Edit((Retain(2), Insert("hi")))
    assert ot.normalize(Edit((Delete("a"), Delete("b"), Delete(2)))) == Edit((Delete(4),))
    assert ot.normalize(Edit((Delete("a"), Delete("b")))) == Edit((Delete("ab"),))
    assert ot.normalize(Edit((Insert("a"), Retain(1), Insert("b")))) == Edit((Insert("a"), Retain(1), Insert("b")))
    with pytest.raises(ApplyError, match="op 2 retain\\(-1\\)"):
        ot.normalize(Edit((Insert("a"), Retain(-1))))


def test_ottypes_emoji_cases():
    assert ot.compose(Edit((Insert("👻"),)), Edit((Retain(1), Insert("🥰")))) == Edit((Insert("👻🥰"),))
    assert ot.compose(Edit((Retain(1), Insert("a👻b"))), Edit((Retain(2), Delete(1)))) \
        == Edit((Retain(1), Insert("ab")))
    assert ot.compose(Edit((Insert("👻🥰💃"),)), Edit((Retain(1), Delete(1)))) == Edit((Insert("👻💃"),))
    assert ot.transform(Edit((Insert("👻"),)), Edit((Insert("🥰"),)), "left") == Edit((Insert("👻"),))
    assert ot.transform(Edit((Insert("👻"),)), Edit((Insert("🥰"),)), "right") == Edit((Retain(1), Insert("👻")))
    with pytest.raises(ValueError, match="side"):
        ot.transform(Edit(), Edit(), "middle")


def test_invert_needs_the_text_it_deleted():
    edit = ot.parse('[retain(2), delete(3), insert("XY")]')
    with pytest.raises(ApplyError, match="give the document"):
        ot.invert(edit)
    doc = "abcdefg"
    undo = ot.invert(edit, doc)
    assert undo == Edit((Retain(2), Insert("cde"), Delete("XY")))
    assert ot.apply_text(ot.apply_text(doc, edit), undo) == doc
    assert ot.invert(ot.parse('[delete("ab")]')) == Edit((Insert("ab"),))


def _transform_cases():
    if not TRANSFORM_CASES.is_file():
        return []  # the `shared` marker says why the test is skipped
    lines = TRANSFORM_CASES.read_text(encoding="utf-8").split("\n")
    return [tuple(lines[i:i + 4]) for i in range(0, len(lines) - 3, 4)]


def _without_delete_text(edit: Edit) -> Edit:
    return Edit(tuple(Delete(op.length) if isinstance(op, Delete) else op for op in edit.ops))


@pytest.mark.shared
@pytest.mark.parametrize("op, other, side, expected", _transform_cases())
def test_transform_conformance(op, other, side, expected):
    """ottypes/text-unicode's own cases; it compares with the delete text dropped, and so do we,
    and with the text kept too (ours keeps it where the op had it)."""
    result = ot.transform(ot.parse(op), ot.parse(other), side)
    assert result == ot.normalize(ot.parse(expected))
    stripped = ot.transform(_without_delete_text(ot.parse(op)), _without_delete_text(ot.parse(other)), side)
    assert stripped == _without_delete_text(ot.normalize(ot.parse(expected)))


@pytest.mark.shared
def test_transform_conformance_corpus_is_whole():
    assert len(_transform_cases()) == 46


# --- property tests --------------------------------------------------------------------------

ALPHABET = st.sampled_from(["a", "b", " ", "\n", "\r\n", "\t", "é", "😀", "\"", "\\", "{"])
small_texts = st.lists(ALPHABET, max_size=30).map("".join)


@st.composite
def edits_of(draw, doc: str, with_text: bool | None = None) -> Edit:
    """A random edit that applies to doc."""
    ops = []
    cursor = 0
    while draw(st.integers(0, 4)):
        left = len(doc) - cursor
        kind = draw(st.sampled_from(["retain", "delete", "insert"] if left else ["insert"]))
        if kind == "insert":  # not the text just deleted, as a model may write it (`prefix_ok`)
            deleted = ops[-1].text if ops and isinstance(ops[-1], Delete) else None
            ops.append(Insert(draw(small_texts.filter(lambda t: t and t != deleted))))
            continue
        n = draw(st.integers(1, left))
        if kind == "retain":
            ops.append(Retain(n))
        else:
            keep_text = draw(st.booleans()) if with_text is None else with_text
            ops.append(Delete(doc[cursor:cursor + n] if keep_text else n))
        cursor += n
    return Edit(tuple(ops))


@st.composite
def doc_and_edit(draw, with_text=None):
    doc = draw(small_texts)
    return doc, draw(edits_of(doc, with_text))


@st.composite
def doc_and_quoted_edit(draw):
    """A random edit in the model's quoting form (seek, retain("text"), delete("text"), insert) that
    applies to a random document."""
    doc = draw(small_texts)
    ops = []
    cursor = 0
    while draw(st.integers(0, 4)):
        left = len(doc) - cursor
        kind = draw(st.sampled_from(["seek", "retain", "delete", "insert"] if left else ["insert"]))
        if kind == "insert":  # not the text just deleted, as a model may write it (`prefix_ok`)
            deleted = ops[-1].text if ops and isinstance(ops[-1], Delete) else None
            ops.append(Insert(draw(small_texts.filter(lambda t: t and t != deleted))))
        elif kind == "seek":  # one that moves the cursor, as a model may write it (`prefix_ok`)
            at = draw(st.integers(cursor, len(doc) - 1))
            anchor = doc[at:at + draw(st.integers(1, len(doc) - at))]
            if doc.index(anchor, cursor) == cursor:
                continue
            ops.append(Seek(anchor))
            cursor = doc.index(anchor, cursor)
        else:
            n = draw(st.integers(1, left))
            ops.append((Retain if kind == "retain" else Delete)(doc[cursor:cursor + n]))
            cursor += n
    return doc, Edit(tuple(ops))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_compose_law(data):
    doc, a = data.draw(doc_and_edit())
    b = data.draw(edits_of(ot.apply_text(doc, a)))
    assert ot.apply_text(doc, ot.compose(a, b)) == ot.apply_text(ot.apply_text(doc, a), b)


@settings(max_examples=300, deadline=None)
@given(doc_and_edit())
def test_invert_law(case):
    doc, edit = case
    undo = ot.invert(edit, doc)
    assert ot.apply_text(ot.apply_text(doc, edit), undo) == doc
    assert ot.invert(undo) == ot.normalize(ot.invert(undo, ot.apply_text(doc, edit)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_transform_converges(data):
    """TP1: both sites end with the same text whichever edit they saw first."""
    doc, a = data.draw(doc_and_edit())
    b = data.draw(edits_of(doc))
    left_then = ot.apply_text(ot.apply_text(doc, a), ot.transform(b, a, "right"))
    right_then = ot.apply_text(ot.apply_text(doc, b), ot.transform(a, b, "left"))
    assert left_then == right_then


@settings(max_examples=200, deadline=None)
@given(doc_and_edit())
def test_render_parse_round_trip(case):
    _, edit = case
    assert ot.parse(ot.render(edit)) == edit
    assert ot.parse(json.dumps(ot.to_json(edit), ensure_ascii=False)) == edit


@settings(max_examples=300, deadline=None)
@given(doc_and_quoted_edit(), st.booleans())
def test_quoted_edit_round_trips(case, use_spaced):
    """The canonical OT a quoting edit resolves to applies to the same text, in both syntaxes."""
    doc, edit = case
    text = spaced(edit) if use_spaced else ot.render(edit)
    assert ot.parse(text) == edit
    resolved = ot.resolve(doc, edit)
    assert not any(isinstance(op, Seek) or (isinstance(op, Retain) and op.text) for op in resolved.ops)
    new = ot.apply_text(doc, edit)
    assert ot.apply_text(doc, ot.parse(ot.render(resolved))) == new
    assert ot.apply_text(doc, ot.parse(json.dumps(ot.to_json(resolved)))) == new
    assert ot.apply_text(new, ot.invert(edit, doc)) == doc


def test_quote_writes_what_a_model_would():
    edit = ot.parse('[retain(2), delete("really"), insert("very very"), retain(16), delete(6), insert("so")]')
    assert ot.render(ot.quote(REALLY, edit)) == ('[seek("really"), delete("really"), insert("very very"), '
                                                 'seek("really"), delete("really"), insert("so")]')
    # the shortest quote that finds the place, or the kept text where no quote does
    assert ot.quote("abcabd", Edit((Retain(4), Insert("x")))) == Edit((Seek("bd"), Insert("x")))
    assert ot.quote("abcabc", Edit((Retain(4), Insert("x")))) == Edit((Retain("abca"), Insert("x")))
    assert ot.quote("aaa", Edit((Retain(2), Insert("x")))) == Edit((Retain("aa"), Insert("x")))
    assert ot.quote("ab", Edit((Retain(2), Insert("x")))) == Edit((Retain("ab"), Insert("x")))


@settings(max_examples=300, deadline=None)
@given(doc_and_edit())
def test_quote_round_trips(case):
    doc, edit = case
    quoted = ot.quote(doc, edit)
    assert not counts(quoted)
    assert ot.resolve(doc, quoted) == ot.resolve(doc, edit)


@lru_cache(maxsize=1)
def stdlib_sources() -> list[str]:
    folder = Path(os.__file__).parent
    paths = sorted(p for p in folder.glob("*.py") if 2_000 < p.stat().st_size < 40_000)
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths[:80]]


@st.composite
def real_file_and_change(draw):
    """A Python stdlib file and a changed copy: spans replaced by random text or moved text."""
    old = draw(st.sampled_from(stdlib_sources()))
    new = old
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, len(new)))
        end = min(len(new), start + draw(st.integers(0, 200)))
        if draw(st.booleans()):
            piece = draw(small_texts)
        else:
            at = draw(st.integers(0, len(old)))
            piece = old[at:at + draw(st.integers(0, 300))]
        new = new[:start] + piece + new[end:]
    if draw(st.booleans()):
        new = new.replace("\n", "\r\n")
    return old, new


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(real_file_and_change(), st.booleans())
def test_diff_round_trips_on_real_files(case, delete_text):
    old, new = case
    edit = ot.diff(old, new, delete_text=delete_text)
    assert ot.apply_text(old, ot.parse(ot.render(edit))) == new
    assert ot.normalize(edit) == edit
    assert ot.apply_text(old, ot.parse(ot.render(ot.quote(old, edit)))) == new


def test_diff_is_small():
    old = Path(os.__file__).read_text(encoding="utf-8")
    at = old.index("def ")
    new = old[:at] + "def  " + old[at + 4:]
    assert ot.diff(old, new) in (Edit((Retain(at + 3), Insert(" "))), Edit((Retain(at + 4), Insert(" "))))
    assert ot.diff(old, old) == Edit()
    assert ot.diff("abc", "") == Edit((Delete("abc"),))
    assert ot.diff("", "xy", delete_text=False) == Edit((Insert("xy"),))


def test_diff_deletes_and_inserts_whole_words():
    """A changed word goes whole: what a person reads, and what a model taught on these answers quotes."""
    assert ot.render(ot.diff("This is really nice.\n", "This is very very nice.\n")) == (
        '[retain(8), delete("really"), insert("very very")]')
    assert ot.render(ot.diff("x = total(a)\n", "x = total(a, b)\n")) == '[retain(11), insert(", b")]'
    assert ot.render(ot.diff("naïve café\n", "naïve cafés\n")) == '[retain(6), delete("café"), insert("cafés")]'


# --- prefix_ok -------------------------------------------------------------------------------

def spaced(edit: Edit) -> str:
    """A valid text-syntax rendering other than the canonical one."""
    return "\n[\n  " + ",\n  ".join(ot.render(Edit((op,)))[1:-1] for op in edit.ops) + "\n]\n"


@settings(max_examples=150, deadline=None)
@given(doc_and_edit(), st.booleans())
def test_every_prefix_of_a_valid_edit_is_ok(case, use_spaced):
    doc, edit = case
    text = spaced(edit) if use_spaced else ot.render(edit)
    assert all(ot.prefix_ok(doc, text[:k]) for k in range(len(text) + 1))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corrupted_delete_text_is_rejected_where_it_differs(data):
    doc, edit = data.draw(doc_and_edit(with_text=True))
    deletes = [k for k, op in enumerate(edit.ops) if isinstance(op, Delete)]
    if not deletes:
        return
    k = data.draw(st.sampled_from(deletes))
    deleted = edit.ops[k].text
    at = data.draw(st.integers(0, len(deleted) - 1))
    wrong = "Z" if deleted[at] != "Z" else "Y"
    ops = list(edit.ops)
    ops[k] = Delete(deleted[:at] + wrong + deleted[at + 1:])
    text = ot.render(Edit(tuple(ops)))
    before = ot.render(Edit(tuple(ops[:k]))).rstrip("]") + (", " if k else "")
    head = before + 'delete(' + json.dumps(deleted[:at], ensure_ascii=False)[:-1]
    assert ot.prefix_ok(doc, head)
    assert not ot.prefix_ok(doc, head + wrong)
    assert not ot.prefix_ok(doc, text)

FRAGMENTS = st.sampled_from(["retain(", "delete(", "insert(", "seek(", "insert(\"", "delete(\"", "seek(\"", "retain(\"", ")", ")]", "), ", "(", ",", " ", "\n", "]", "[", '"', "\\",
                             "u", "d83d", "de00", "00e9", "n", "0", "1", "12", "-", "a", "é", "😀", "\x01"])


@settings(max_examples=200, deadline=None)
@given(small_texts, st.lists(FRAGMENTS, max_size=14).map("".join))
@example("aaaaaaaaaa", "retain(00e9")  # "00" once passed as a count that could still grow
def test_prefix_ok_never_recovers(doc, text):
    """Once a prefix is hopeless, so is every longer one."""
    verdicts = [ot.prefix_ok(doc, ("[" + text)[:k]) for k in range(len(text) + 2)]
    assert verdicts == sorted(verdicts, reverse=True)


any_op = st.one_of(st.builds(Retain, st.integers(-1, 12)), st.builds(Delete, st.integers(-1, 12)),
                   st.builds(Retain, small_texts), st.builds(Seek, small_texts),
                   st.builds(Delete, small_texts), st.builds(Insert, small_texts))


@settings(max_examples=300, deadline=None)
@given(small_texts, st.lists(any_op, max_size=5), st.booleans())
def test_prefix_ok_on_a_whole_edit_agrees_with_apply(doc, ops, use_spaced):
    edit = Edit(tuple(ops))
    text = spaced(edit) if use_spaced else ot.render(edit)
    try:
        ot.apply_text(doc, edit)
        applies = True
    except ApplyError:
        applies = False
    assert ot.prefix_ok(doc, text) is (applies and not stands_still(doc, edit))


def stands_still(doc: str, edit: Edit) -> bool:
    """Whether an op of `edit` (which applies to `doc`) changes and keeps nothing, which `prefix_ok` refuses: a
    seek that finds its text at the cursor, an insert of the text the op before it deleted."""
    cursor, previous = 0, None
    for op in edit.ops:
        if isinstance(op, Seek):
            if doc.find(op.text, cursor) == cursor:
                return True
            cursor = doc.find(op.text, cursor)
        elif isinstance(op, Insert):
            if isinstance(previous, Delete) and previous.text == op.text:
                return True
        else:
            cursor += op.length
        previous = op
    return False


@pytest.mark.parametrize("prefix, ok", [
    ("", True), ("  [", True), ("[r", True), ("[retain(", True), ("[retain(5", True), ("[retain(5)", True),
    ("[retain(6", False), ("[retain(50", False), ("[retain(0", False), ("[retain(-", False),
    ("[retain(5), retain(", False), ("[retain(5), d", False), ("[retain(5), insert(\"x", True),
    ("[retain(5)]", True), ("[retain(5)] x", False), ("[delete(\"hel", True), ("[delete(\"hex", False),
    ('[delete("hello"', True), ('[delete("hello!', False), ('[delete(""', False), ('[insert(""', False),
    ('[delete("\\u00', True), ('[delete("\\u0068', True), ('[delete("\\u0069', False),
    ('[insert("\\ud83d', True), ('[insert("\\ud83d\\ude', True), ('[insert("\\ud83d\\u0041', False),
    ("[retain(1) retain", False), ("[foo", False), ("[retain(01", False), ('[1, 2', False),
])
def test_prefix_ok_cases(prefix, ok):
    assert ot.prefix_ok("hello", prefix) is ok


@pytest.mark.parametrize("prefix, ok", [
    ('[seek(', True), ('[seek("', True), ('[seek("llo', True), ('[seek("llo"', True), ('[seek("llo")', True),
    ('[seek("lx', False), ('[seek("llo"), delete("l', True), ('[seek("llo"), delete("h', False),
    ('[seek("o"), seek("l', False), ('[seek("l"), retain("ll', True), ('[seek("o"), retain("o"), seek("', False),
    ('[seek(""', False), ('[seek("\\u006', True), ('[seek("\\u006c', True), ('[seek("\\u0061', False),
    ('[seek(1', False), ('[retain("he', True), ('[retain("hi', False), ('[retain(""', False),
])
def test_prefix_ok_seek_cases(prefix, ok):
    assert ot.prefix_ok("hello", prefix) is ok


@pytest.mark.parametrize("prefix, ok", [
    ('[seek("l"), seek("l")', False), ('[seek("l"), seek("ll', False),  # the cursor is at "ll": it would not move
    ('[seek("l"), seek("l', True), ('[seek("l"), seek("lo")', True),  # "lo" is first found past the cursor
    ('[seek("h', False), ('[seek("hello")', False), ('[retain("h"), seek("l")', True),
    ('[seek("ab', False), ('[seek("b"), seek("ab', True),  # in "ababab", every "ab..." is first found at 0
    ('[seek("ell"), seek(', True), ('[seek("ell"), retain("ell"), seek(', False),  # no seek can move from "o"
    ('[seek("ell"), retain("ell"), s', False),
])
def test_prefix_ok_refuses_a_seek_that_would_not_move(prefix, ok):
    """A seek of the text at the cursor keeps nothing: the 1.5B model looped on it (seek("x") forty times)."""
    doc = "hello" if "ab" not in prefix else "ababab"
    assert ot.prefix_ok(doc, prefix) is ok
    if ok is False and prefix.endswith(")"):  # the applier still takes it: an edit a person wrote is not wrong
        assert ot.resolve(doc, ot.parse(prefix + "]")) is not None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab x\n", min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_a_prefix_prefix_ok_takes_can_always_go_on(doc, rng):
    """No dead end: whatever prefix the check took, some next piece passes it too, or the edit is complete. The
    1.5B model, refused a seek that stands still, met one: "seek(" where no seek could move (the cursor at the
    document's last character) was taken, and then no token was ("the constraint allows no next token")."""
    pieces = sorted(set('[](),"sek' + doc) | {'seek(', 'seek("', 'retain("', 'delete("', 'insert("', '"), ', ")]", "\\n"})
    text = ""
    for _ in range(40):
        if text.endswith("]"):
            return
        going_on = [piece for piece in pieces if ot.prefix_ok(doc, text + piece)]
        assert going_on, f"dead end after {text!r} in {doc!r}"
        text += rng.choice(going_on)


@pytest.mark.parametrize("prefix, ok", [
    ('[seek("ell"), delete("ell"), insert("ell")', False), ('[delete("h"), insert("h")]', False),
    ('[seek("ell"), delete("ell"), insert("ell', True), ('[delete("h"), insert("hh")]', True),  # may go on, differ
    ('[delete("h"), retain("e"), insert("h")]', True),  # not right after the delete: it moves the text
])
def test_prefix_ok_refuses_an_insert_of_the_text_just_deleted(prefix, ok):
    """delete("x"), insert("x") changes nothing: the 1.5B model walked EditEval files word by word so, to its budget."""
    assert ot.prefix_ok("hello", prefix) is ok


def test_prefix_ok_seek_looks_past_an_occurrence_an_escape_cannot_follow():
    doc = 'x 😀 "q" x\n😁'
    assert ot.prefix_ok(doc, '[seek("x\\n')
    assert ot.prefix_ok(doc, '[seek("x\\n\\ud83d\\ude01')
    assert not ot.prefix_ok(doc, '[seek("x\\n\\ud83d\\ude00')
    assert ot.prefix_ok(doc, '[seek(" \\"')
    assert not ot.prefix_ok(doc, '[seek("x\\t')


@settings(max_examples=150, deadline=None)
@given(doc_and_quoted_edit(), st.booleans())
def test_every_prefix_of_a_quoted_edit_is_ok(case, use_spaced):
    doc, edit = case
    text = spaced(edit) if use_spaced else ot.render(edit)
    assert all(ot.prefix_ok(doc, text[:k]) for k in range(len(text) + 1))


@settings(max_examples=150, deadline=None)
@given(st.data(), st.booleans())
def test_an_anchor_is_refused_where_it_stops_occurring(data, ascii_only):
    """A seek's quote is ok while it occurs in the document at or after the cursor (written raw or as
    JSON escapes, surrogate pairs included)."""
    doc, edit = data.draw(doc_and_quoted_edit())
    anchor = data.draw(small_texts.filter(bool))
    head = ot.render(edit)[:-1] + (", " if edit.ops else "") + "seek("
    resolved = ot.resolve(doc, Edit(edit.ops + (Insert("|"),)))  # an end mark keeps the last retain
    rest = doc[sum(op.length for op in resolved.ops if not isinstance(op, Insert)):]
    for k in range(len(anchor) + 1):
        quoted = json.dumps(anchor[:k], ensure_ascii=ascii_only)[:-1]
        # a quote that begins so is first found past the cursor: it differs from the text at the cursor
        moves = any(rest.startswith(anchor[:k], at) and not rest.startswith(rest[at:])
                    for at in range(1, len(rest)))
        assert ot.prefix_ok(doc, head + quoted) is moves


def test_prefix_ok_on_a_long_prefix_is_fast():
    import time

    doc = Path(os.__file__).read_text(encoding="utf-8")
    edit = ot.diff(doc, doc.replace("def ", "def  "))
    for text in (ot.render(edit), ot.render(ot.quote(doc, edit))):
        start = time.perf_counter()
        assert ot.prefix_ok(doc, text[: len(text) // 2])
        assert time.perf_counter() - start < 0.05


# --- the grammar -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def grammar_and_tokenizer():
    """The OT grammar, and a tokenizer of one token per byte: the matcher sees exactly the text's bytes."""
    return llguidance.LLMatcher.grammar_from_lark(grammars.load("ot")), byte_tokenizer()


def grammar_accepts(text: str) -> bool:
    grammar, tokenizer = grammar_and_tokenizer()
    matcher = compiled(tokenizer, grammar)
    return all(matcher.consume_token(b) for b in text.encode("utf-8")) and matcher.is_accepting()


def parses(text: str) -> bool:
    try:
        ot.parse(text)
    except ParseError:
        return False
    return True


def test_grammar_compiles():
    grammar, tokenizer = grammar_and_tokenizer()
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    assert not is_error and not messages, messages


@pytest.mark.parametrize("text", [
    "[]", " [ ]\n", '[seek("very"), delete("very"), insert("very very")]',
    '\n[\n  retain("ab") ,\r\n\tdelete("ab"),insert("x")\n]\n', '[insert("a\\nb\\"\\\\\\/\\u00e9")]',
    '[seek("\\ud83d\\ude00")]', '[insert("😀é\x7f")]', '[seek("")]', '[retain("")]',
])
def test_grammar_accepts_the_quoting_form(text):
    assert parses(text)
    assert grammar_accepts(text)


@pytest.mark.parametrize("text", ['[retain(8), delete("x")]', '[delete(6)]', '[retain(0)]', '[delete(-3)]'])
def test_grammar_leaves_counts_to_people(text):
    """`edit apply` reads counts; the model may not write them."""
    assert parses(text)
    assert not grammar_accepts(text)


@pytest.mark.parametrize("text", [
    "", "[", '[seek("a"),]', '[seek("a")] x', "[retain(08)]", '[seek( "a")]', '[seek ("a")]',
    '[insert("\\ud83d")]', '[insert("\\ude00")]', '[insert("a\nb")]', '[seek("\\x")]', '[insert(5)]',
    '[seek("a") seek("b")]', '[, seek("a")]', "[delete(1.5)]", '[seek(4)]',
])
def test_grammar_rejects_what_parse_rejects(text):
    assert not parses(text)
    assert not grammar_accepts(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["[", " [", "[\n", "["]), st.sampled_from(["retain(", "delete(", "insert(", "seek(", "]"]),
       st.lists(FRAGMENTS, max_size=12))
def test_grammar_and_parser_agree(start, first, rest):
    """The grammar accepts exactly what parses without a count."""
    text = start + first + "".join(rest)
    assert grammar_accepts(text) == (parses(text) and not counts(ot.parse(text))), text


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_grammar_accepts_quoted_edits(data):
    doc, edit = data.draw(doc_and_quoted_edit())
    assert grammar_accepts(ot.render(edit))
    assert grammar_accepts(spaced(edit))


def admitted(doc: str, text: str) -> bool:
    """Whether decoding lets the model write `text`: the grammar takes every byte and, after every
    character, the token check (`prefix_ok`, as editor/request.py builds it) takes the prefix."""
    grammar, tokenizer = grammar_and_tokenizer()
    matcher = compiled(tokenizer, grammar)
    for k, char in enumerate(text, 1):
        if not all(matcher.consume_token(b) for b in char.encode("utf-8")) or not ot.prefix_ok(doc, text[:k]):
            return False
    return matcher.is_accepting()


def applies(doc: str, text: str) -> bool:
    try:
        ot.apply_text(doc, ot.parse(text))
    except (ParseError, ApplyError):
        return False
    return True


QUOTE_DOC = 'say "hi"\\\nthen 😀 é\tend'


@pytest.mark.parametrize("text", [
    '[seek("hi"), delete("hi"), insert("yo")]', '[seek("\\"hi\\"\\\\\\n")]', '[seek("\\ud83d\\ude00 ")]',
    '[seek("😀"), retain("😀 \\u00e9\\t"), delete("end")]', '[retain("say"), seek("hi"), seek(" ")]',
    '[seek("end"), delete("end"), insert("stop")]', '[seek("ay")]',
    '[seek("hi"), seek("i"), seek("\\\\")]', '[seek("\\t"), insert("\\u0000")]', '[seek(" \\u00e9")]',
    # refused: an anchor that does not occur (at all, or after the cursor), a retain or delete of
    # text that is not at the cursor, an empty quote, a count, a seek of the text at the cursor
    '[seek("say")]', '[seek("hi"), seek("hi"), seek("i")]', '[retain("say"), seek(" "), seek(" \\"")]',
    '[seek("hi"), delete("hi"), insert("hi")]',
    '[seek("bye")]', '[seek("end"), seek("say")]', '[seek("hi\\"\\"")]', '[seek("\\ud83d\\ude01")]',
    '[seek("é"), delete("😀")]', '[retain("sya")]', '[seek("")]', '[delete("")]', '[retain(3)]',
    '[seek("then"), retain("then😀")]', '[seek("hi\\\\\\n")]', '[seek("hi\\"\\\\\\r")]',
])
def test_grammar_and_token_check_admit_exactly_the_valid_quotes(text):
    assert admitted(QUOTE_DOC, text) == (applies(QUOTE_DOC, text) and not counts(ot.parse(text))
                                         and not stands_still(QUOTE_DOC, ot.parse(text)))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_grammar_and_token_check_admit_quoted_edits_and_stop_a_wrong_anchor(data):
    doc, edit = data.draw(doc_and_quoted_edit())
    assert admitted(doc, ot.render(edit))
    missing = data.draw(small_texts.filter(lambda t: t not in doc))
    assert not admitted(doc, ot.render(Edit(edit.ops + (Seek(missing),))))


# --- the Editor ------------------------------------------------------------------------------

def test_taught_model_writes_a_quoting_edit_through_the_editor():
    """Under the quotes-only grammar and the token check, a tiny model taught the reply makes the edit;
    the tool turns its quotes into counts."""
    from editor import prompting
    from editor.propose import Editor
    from tests.tiny_models import chat_model, chat_tokenizer, teach

    instruction = "Replace 'really' with 'very very'."
    tokenizer = chat_tokenizer(REALLY + REALLY_QUOTED)
    model = chat_model(tokenizer)
    chat = prompting.messages("ot", path="notes.txt", text=REALLY, instruction=instruction, language=None)
    teach(model, tokenizer, chat, REALLY_QUOTED)
    result = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=80).edit(
        REALLY, instruction, format="ot", path="notes.txt")
    canonical = ('[retain(2), delete("really"), insert("very very"), '
                 'retain(16), delete("really"), insert("very very")]')
    assert result.ok and result.edit_text == canonical, result.diagnostics
    assert result.new_text == "I very very like it.\nIt is very very good.\n"
    assert result.edit == ot.resolve(REALLY, ot.parse(REALLY_QUOTED))
