"""OT edits: one walk over one file's text, made of retain, delete and insert ops.

    [retain(8), delete("very"), insert("very very"), retain(10)]

Counts are Unicode code points of `Document.text` (BOM removed, line endings as stored). Strings use
JSON escapes. The ottypes JSON form `[8, {"d": "very"}, "very very", 10]` is read too. The library
functions (`compose`, `invert`, `transform`, `normalize`) follow ottypes/text-unicode, so ops can be
exchanged with ShareJS-style collaborative editors; `diff` makes an edit from two texts.

A model does not count (a small one miscounts): it quotes. `seek("very")` keeps the text up to the
first occurrence of "very" at or after the cursor, `retain("text")` and `delete("text")` name the
text at the cursor. The grammar admits only these quoting forms, `prefix_ok` checks each quote
against the document while the model writes it, and `resolve` turns the quotes into counts:

    [seek("very"), delete("very"), insert("very very")]  ->  [retain(8), delete("very"), insert("very very")]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Iterator, Literal, Union

from ..errors import ApplyError, ParseError
from ..files import FileChange, Files, Staging


@dataclass(frozen=True)
class _Span:
    """The next code points: `value` is their number, or their text (checked against the file)."""

    value: Union[int, str]

    @property
    def length(self) -> int:
        return len(self.value) if isinstance(self.value, str) else self.value

    @property
    def text(self) -> str | None:
        return self.value if isinstance(self.value, str) else None


class Retain(_Span):
    """Keep the next code points."""


class Delete(_Span):
    """Remove the next code points."""


@dataclass(frozen=True)
class Insert:
    """Insert `text` at the cursor."""

    text: str

    @property
    def length(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class Seek:
    """Keep the text up to the first occurrence of `text` at or after the cursor, which moves to
    where `text` starts. Its length depends on the document: `resolve` makes it a Retain."""

    text: str


Op = Union[Retain, Delete, Insert, Seek]


@dataclass(frozen=True)
class Edit:
    """The ops of one OT edit, in document order; the text after the last op is kept."""

    ops: tuple[Op, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))


# --- the text syntax -------------------------------------------------------------------------

_SPACE = " \t\r\n"  # JSON whitespace; the grammar's _SPACE
_KEYWORDS = ("retain", "delete", "insert", "seek")
_STRING_ONLY = ("insert", "seek")
_COUNT_START = "-0123456789"
_COUNT_PREFIX = re.compile(r"-?[0-9]*")
_COUNT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]+')
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# \uXXXX outside the surrogates, or a surrogate pair written as two escapes (JSON's way to write
# a code point above U+FFFF); a lone surrogate is no character and cannot be written to a file.
_UNICODE_ESCAPE = re.compile(r"\\u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}"
                             r"|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})")
# What an unfinished \u escape may look like at the end of a prefix.
_UNICODE_ESCAPE_START = re.compile(r"\\u(?:[0-9a-fA-F]{0,3}|[dD][89abAB][0-9a-fA-F]{2}"
                                   r"(?:\\(?:u(?:[dD](?:[c-fC-F][0-9a-fA-F]?)?)?)?)?)")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class _Unfinished:
    """The op being read where a prefix ends: its keyword, and its count digits or string so far."""

    keyword: str
    digits: str | None = None
    text: str | None = None
    escape: str = ""  # an escape the prefix ends inside of, e.g. "\\u00"


class _Cut(Exception):
    """The text ends before the edit does. `reading`: None between ops, an op that lacks only its
    closing parenthesis, or an `_Unfinished` op."""

    def __init__(self, reading: Op | _Unfinished | None = None):
        super().__init__("the edit ends early")
        self.reading = reading


class _Malformed(Exception):
    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.message = message
        self.index = index


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _found(text: str, i: int) -> str:
    """What stands at text[i], for error messages."""
    if i >= len(text):
        return "the end of the edit"
    return json.dumps(text[i:i + 20] + ("..." if len(text) > i + 20 else ""), ensure_ascii=False)


def _scan(text: str) -> Iterator[Op]:
    """The ops of a text-syntax edit, in order, each as soon as it is complete.

    Raises `_Cut` where the text ends before the edit does and `_Malformed` where it can no longer
    become an edit, so that `parse` and `prefix_ok` read prefixes the same way.
    """
    i = _skip_space(text, 0)
    if i == len(text):
        raise _Cut()
    if text[i] != "[":
        raise _Malformed(f"an OT edit starts with '[', found {_found(text, i)}", i)
    i = _skip_space(text, i + 1)
    if i == len(text):
        raise _Cut()
    if text[i] != "]":
        while True:
            op, i = _read_op(text, i)
            yield op
            i = _skip_space(text, i)
            if i == len(text):
                raise _Cut()
            if text[i] == "]":
                break
            if text[i] != ",":
                raise _Malformed(f"expected ',' or ']' after an op, found {_found(text, i)}", i)
            i = _skip_space(text, i + 1)
            if i == len(text):
                raise _Cut()
    i = _skip_space(text, i + 1)
    if i != len(text):
        raise _Malformed(f"unexpected text after the closing ']': {_found(text, i)}", i)


def _read_op(text: str, i: int) -> tuple[Op, int]:
    """The op starting at text[i] and the index after it."""
    for keyword in _KEYWORDS:
        head = keyword + "("
        if text.startswith(head, i):
            break
        if len(text) - i < len(head) and head.startswith(text[i:]):
            raise _Cut(_Unfinished(keyword))
    else:
        raise _Malformed('expected an op: seek("text"), retain("text"), delete("text"), insert("text"), '
                         f"retain(N) or delete(N); found {_found(text, i)}", i)
    i += len(keyword) + 1
    if i == len(text):
        raise _Cut(_Unfinished(keyword))
    op: Op
    if keyword in _STRING_ONLY or text[i] == '"':
        if text[i] != '"':
            raise _Malformed(f'{keyword}( takes a JSON string, found {_found(text, i)}', i)
        value, i, closed = _read_string(text, i)
        if not closed:
            raise _Cut(_Unfinished(keyword, text=value, escape=text[i:]))
        op = {"insert": Insert, "seek": Seek, "retain": Retain, "delete": Delete}[keyword](value)
    else:
        if text[i] not in _COUNT_START:
            raise _Malformed(f"{keyword}( takes a JSON string or a count, found {_found(text, i)}", i)
        digits = _COUNT_PREFIX.match(text, i).group()
        if i + len(digits) == len(text):
            raise _Cut(_Unfinished(keyword, digits=digits))
        if not _COUNT.fullmatch(digits):
            raise _Malformed(f"a count is a whole number without leading zeros, found {digits!r}", i)
        if len(digits) > 4000:  # beyond Python's int() limit; no document is that long anyway
            raise _Malformed(f"a count of {len(digits)} digits is too large", i)
        i += len(digits)
        op = Retain(int(digits)) if keyword == "retain" else Delete(int(digits))
    if i == len(text):
        raise _Cut(op)
    if text[i] != ")":
        raise _Malformed(f"expected ')' to close {keyword}(, found {_found(text, i)}", i)
    return op, i + 1


def _read_string(text: str, i: int) -> tuple[str, int, bool]:
    """Decode the JSON string whose opening quote is text[i].

    Returns (value, index after it, closed); closed is False when the text ends inside the string,
    and then value holds the characters decoded so far.
    """
    parts = []
    i += 1
    while True:
        run = _STRING_RUN.match(text, i)
        if run:
            parts.append(run.group())
            i = run.end()
        if i == len(text):
            return "".join(parts), i, False
        char = text[i]
        if char == '"':
            return "".join(parts), i + 1, True
        if char != "\\":
            raise _Malformed(f"control character {char!r} inside a string; write it as a JSON escape "
                             "(\\n, \\t, \\u0000...)", i)
        if i + 1 == len(text):
            return "".join(parts), i, False
        if text[i + 1] in _SIMPLE_ESCAPES:
            parts.append(_SIMPLE_ESCAPES[text[i + 1]])
            i += 2
            continue
        escape = _UNICODE_ESCAPE.match(text, i)
        if escape:
            parts.append(json.loads(f'"{escape.group()}"'))
            i = escape.end()
            continue
        start = _UNICODE_ESCAPE_START.fullmatch(text, i)
        if start:
            return "".join(parts), i, False
        raise _Malformed(f"invalid escape {_found(text, i)}: use \\\" \\\\ \\/ \\b \\f \\n \\r \\t, "
                         "\\uXXXX, or a surrogate pair \\uD8XX\\uDCXX", i)


def _line_column(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _parse_text(text: str) -> Edit:
    ops = []
    try:
        for op in _scan(text):
            ops.append(op)
    except _Malformed as bad:
        line, column = _line_column(text, bad.index)
        raise ParseError(f"column {column}: {bad.message}", line=line) from None
    except _Cut:
        line, column = _line_column(text, len(text))
        raise ParseError(f"column {column}: the edit ends early (unclosed op, string or '[')",
                         line=line) from None
    return Edit(tuple(ops))


def _parse_json(text: str) -> Edit:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"column {exc.colno}: not valid JSON: {exc.msg}", line=exc.lineno) from None
    except RecursionError:  # an op is a number, a string or a flat object: none nests like this
        raise ParseError("not valid OT JSON: lists or objects nested about a thousand deep") from None
    if not isinstance(data, list):
        raise ParseError("an OT edit in JSON is a list of ops")
    ops = []
    for number, item in enumerate(data, 1):
        op = _json_op(item)
        if op is None:
            raise ParseError(f"op {number}: {json.dumps(item, ensure_ascii=False)[:60]} is not an op: "
                             'write a number (retain), a string (insert), {"d": N} or {"d": "text"} '
                             '(delete)', hunk=number)
        if isinstance(op, (Insert, Delete)) and op.text is not None and _SURROGATE.search(op.text):
            raise ParseError(f"op {number}: a string holds a lone surrogate (\\uD800-\\uDFFF), which "
                             "is no character", hunk=number)
        ops.append(op)
    return Edit(tuple(ops))


def _json_op(item) -> Op | None:
    """An ottypes component as an op: N retains, "text" inserts, {"d": N or "text"} deletes;
    {"i": "text"} (the older ottypes/text form) inserts too."""
    if isinstance(item, int) and not isinstance(item, bool):
        return Retain(item)
    if isinstance(item, str):
        return Insert(item)
    if isinstance(item, dict) and len(item) == 1:
        (key, value), = item.items()
        if key == "d" and isinstance(value, (int, str)) and not isinstance(value, bool):
            return Delete(value)
        if key == "i" and isinstance(value, str):
            return Insert(value)
    return None


def _starts_json(text: str) -> bool:
    """True when the list's first item is a JSON value rather than a keyword."""
    i = _skip_space(text, 0)
    if i == len(text) or text[i] != "[":
        return False
    i = _skip_space(text, i + 1)
    return i < len(text) and text[i] in '0123456789-"{'


def parse(text: str) -> Edit:
    """Read an edit in the text syntax or the ottypes JSON form; ParseError names the line and column."""
    return _parse_json(text) if _starts_json(text) else _parse_text(text)


def _render_op(op: Op) -> str:
    if isinstance(op, (Insert, Seek)):
        return f"{type(op).__name__.lower()}({json.dumps(op.text, ensure_ascii=False)})"
    value = op.value if isinstance(op.value, int) else json.dumps(op.value, ensure_ascii=False)
    return f"{type(op).__name__.lower()}({value})"


def render(edit: Edit) -> str:
    """The canonical text syntax: `[op, op, ...]` on one line; parse(render(e)) == e."""
    return "[" + ", ".join(_render_op(op) for op in edit.ops) + "]"


def to_json(edit: Edit) -> list:
    """The ottypes form of an edit, for exchange with ottypes/text-unicode (a quoted retain becomes
    its count; a seek needs `resolve` first)."""
    out: list = []
    for number, op in enumerate(edit.ops, 1):
        _check_counted(op, number)
        out.append(op.length if isinstance(op, Retain) else op.text if isinstance(op, Insert)
                   else {"d": op.value})
    return out


def looks_like(text: str) -> bool:
    """A bracketed list of retain/delete/insert/seek ops, or a JSON list of ottypes ops."""
    if _starts_json(text):
        try:
            _parse_json(text)
        except ParseError:
            return False
        return True
    i = _skip_space(text, 0)
    if not text.startswith("[", i):
        return False
    i = _skip_space(text, i + 1)
    return text.startswith("]", i) or any(text.startswith(k + "(", i) for k in _KEYWORDS)


# --- applying --------------------------------------------------------------------------------

def _show(op: Op) -> str:
    shown = _render_op(op)
    return shown if len(shown) <= 60 else shown[:56] + "...)"


def _quote(text: str, start: int) -> str:
    """text as a JSON string, cut to a window that begins a little before `start`."""
    begin = max(0, start - 20)
    window = text[begin:begin + 60]
    return (("..." if begin else "") + json.dumps(window, ensure_ascii=False)
            + ("..." if begin + 60 < len(text) else ""))


def _step(doc: str, cursor: int, op: Op, number: int) -> int:
    """Check op `number` (1-based) against doc at `cursor`; the cursor after it. Raises ApplyError
    naming the op and the document's line."""
    if isinstance(op, Insert):
        if op.text:
            return cursor
        problem = 'inserts nothing; leave it out'
    elif op.text == "":
        problem = f"{type(op).__name__.lower()}s nothing; leave it out"
    elif isinstance(op, Seek):
        found = doc.find(op.text, cursor)
        if found >= 0:
            return found
        problem = f"{_quote(op.text, 0)} does not occur at or after the cursor"
        earlier = doc.find(op.text)
        if earlier >= 0:
            problem += (" (only before it, first at line {} column {}: ops go through the document "
                        "in order)").format(*_line_column(doc, earlier))
    elif op.length <= 0:
        problem = "the count must be positive"
    elif op.text is not None:
        found = doc[cursor:cursor + op.length]
        if found == op.text:
            return cursor + op.length
        differ = next((k for k, (a, b) in enumerate(zip(op.text, found)) if a != b), len(found))
        line, column = _line_column(doc, cursor + differ)
        end = " (then the end of the document)" if len(found) < op.length else ""
        problem = (f"does not match the document: expected {_quote(op.text, differ)}, found "
                   f"{_quote(found, differ)}{end}; they first differ at line {line} column {column}")
    elif cursor + op.length <= len(doc):
        return cursor + op.length
    else:
        problem = f"runs past the end of the document: {len(doc) - cursor} code points are left"
    line, column = _line_column(doc, cursor)
    raise ApplyError(f"op {number} {_show(op)} at line {line} column {column}: {problem}",
                     line=line, hunk=number)


def _walk(doc: str, edit: Edit) -> tuple[str, list[Op]]:
    """Apply edit to doc: (new text, the ops with every retain and seek a count and every delete
    carrying its text)."""
    pieces = []
    invertible: list[Op] = []
    cursor = 0
    for number, op in enumerate(edit.ops, 1):
        after = _step(doc, cursor, op, number)
        if isinstance(op, (Retain, Seek)):
            pieces.append(doc[cursor:after])
            op = Retain(after - cursor)
        elif isinstance(op, Insert):
            pieces.append(op.text)
        else:
            op = Delete(doc[cursor:after])
        invertible.append(op)
        cursor = after
    pieces.append(doc[cursor:])
    return "".join(pieces), invertible


def apply_text(text: str, edit: Edit) -> str:
    """The text after the edit; ApplyError (op number as `hunk`, document line) when it does not fit."""
    return _walk(text, edit)[0]


def resolve(text: str, edit: Edit) -> Edit:
    """The edit with counts for its quotes: seeks and retains become Retain(n), deletes carry their
    text, normalized. It applies to `text` as `edit` does; ApplyError where `edit` does not apply."""
    return normalize(Edit(tuple(_walk(text, edit)[1])))


def quote(text: str, edit: Edit) -> Edit:
    """The edit in the model's quoting form, the inverse of `resolve`: each kept stretch becomes a
    seek to the text after it (the next delete's text when that is the first occurrence, else the
    shortest quote that is), or a retain of its text where that is shorter or no quote finds the
    place; deletes carry their text. `resolve(text, quote(text, e)) == resolve(text, e)`."""
    ops: list[Op] = []
    cursor = 0
    counted = resolve(text, edit).ops
    for number, op in enumerate(counted):
        if isinstance(op, Retain):
            end = cursor + op.length
            following = counted[number + 1] if number + 1 < len(counted) else None
            ops.append(_seek_or_retain(text, cursor, end, following))
            cursor = end
        else:
            ops.append(op)
            cursor += 0 if isinstance(op, Insert) else op.length
    return Edit(tuple(ops))


def _seek_or_retain(text: str, start: int, end: int, following: Op | None) -> Op:
    """A quote that keeps text[start:end]."""
    if isinstance(following, Delete) and text.find(following.text, start) == end:
        return Seek(following.text)
    for length in range(1, min(end - start, len(text) - end) + 1):
        anchor = text[end:end + length]
        if text.find(anchor, start) == end:
            return Seek(anchor)
    return Retain(text[start:end])


def apply(files: Files, edit: Edit, *, target: str | None = None, partial: bool = False) -> list[FileChange]:
    """Apply edit to the file `target`. An OT edit is one walk over one file, so it applies whole or
    not at all: `partial` changes nothing (a failure has no applied changes to carry)."""
    if target is None:
        raise ApplyError("an OT edit does not name its file: give the target file")
    staging = Staging(files)
    doc = staging.read(target)
    try:
        staging.write(target, apply_text(doc.text, edit))
    except ApplyError as exc:
        exc.file = target
        raise
    return staging.changes()


def prefix_ok(document: str, partial_edit_text: str) -> bool:
    """False when this prefix of a text-syntax edit can no longer become an edit that applies to
    `document` as a model should write it: a malformed prefix, an op that does not fit, a seek("...")
    whose characters so far occur nowhere at or after the cursor, or only where it would not move the
    cursor, a retain("...") or delete("...") whose characters so far differ from the document at the
    cursor, a count whose digits already pass the end. Re-scans the prefix.

    A seek of the text at the cursor keeps nothing (`apply` takes it; retain is the op for that text), and
    it is how the 1.5B model looped: seek("x"), seek("x"), ... to its output budget, the cursor standing
    still (docs/BENCHMARKS.md, History). Nor does an insert of the text the op before it deleted, which it
    then did word by word: seek("x"), delete("x"), insert("x"), seek("y"), ... The model may write neither."""
    cursor, previous = 0, None
    try:
        for number, op in enumerate(_scan(partial_edit_text), 1):
            after = _step(document, cursor, op, number)
            if _stands_still(op, previous, cursor, after):
                return False
            cursor, previous = after, op
    except (_Malformed, ApplyError):
        return False
    except _Cut as cut:
        return _can_finish(document, cursor, cut.reading, previous)
    return True


def _stands_still(op: Op, previous: Op | None, cursor: int, after: int) -> bool:
    """Whether `op` (from `cursor` to `after`), following `previous`, changes nothing and keeps nothing: a seek
    of the text at the cursor, or an insert of the text `previous` deleted."""
    if isinstance(op, Seek):
        return after == cursor
    return isinstance(op, Insert) and isinstance(previous, Delete) and previous.text == op.text


def _can_finish(doc: str, cursor: int, reading: Op | _Unfinished | None, previous: Op | None = None) -> bool:
    left = len(doc) - cursor
    if reading is None:
        return True
    if not isinstance(reading, _Unfinished):
        try:
            after = _step(doc, cursor, reading, 0)
        except ApplyError:
            return False
        return not _stands_still(reading, previous, cursor, after)
    if reading.keyword == "insert":
        return True
    if reading.keyword == "seek":  # its quote so far (none yet: "seek(") can still become one that moves
        text = reading.text or ""
        at = doc.find(text, cursor)
        while at >= 0 and not (_may_quote(doc, at, text, reading.escape) and _moves(doc, cursor, at)):
            at = doc.find(text, at + 1)
        return at >= 0
    if reading.text is not None:
        return _may_quote(doc, cursor, reading.text, reading.escape)
    digits = reading.digits or ""
    if digits.startswith(("-", "0")):
        return False  # negative, zero, or a leading zero (no digit can follow it)
    if not digits:
        return left > 0
    return len(digits) <= len(str(left)) and int(digits) <= left


def _moves(doc: str, cursor: int, at: int) -> bool:
    """Whether a quote of the document at `at` can be found first there, past the cursor: it must differ from the
    text at the cursor, which the quote of `doc[at:]` as far as the document goes does unless that is where the
    cursor stands or repeats what follows it."""
    return at > cursor and not doc.startswith(doc[at:], cursor)


def _may_quote(doc: str, at: int, text: str, escape: str) -> bool:
    """Whether a quote read so far as `text`, then the unfinished `escape`, can still become a
    non-empty quote of the document at `at`."""
    if not doc.startswith(text, at):
        return False
    following = at + len(text)
    if text and not escape:
        return True
    return following < len(doc) and (not escape or _may_spell(escape, doc[following]))


def _may_spell(escape: str, char: str) -> bool:
    """Whether an unfinished JSON escape can still become `char`: as a short escape (\\n), or as
    \\uXXXX (a surrogate pair above U+FFFF), hex digits in either case."""
    code = ord(char)
    if code > 0xFFFF:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        spellings = [f"\\u{high:04x}\\u{low:04x}"]
    else:
        spellings = [f"\\u{code:04x}"]
    spellings += ["\\" + short for short, value in _SIMPLE_ESCAPES.items() if value == char]
    return any(spelling.startswith(escape.lower()) for spelling in spellings)


# --- the OT library (ottypes/text-unicode semantics) ------------------------------------------

def _slice(op: Op, start: int, end: int | None = None) -> Op:
    """The part of op from code point start to end (None: to its end)."""
    stop = op.length if end is None else min(end, op.length)
    if isinstance(op, Retain):
        return Retain(stop - start)
    if isinstance(op, Insert):
        return Insert(op.text[start:stop])
    return Delete(op.value[start:stop] if isinstance(op.value, str) else stop - start)


def _append(ops: list[Op], op: Op) -> None:
    """Append op, dropping it when empty and merging it into a last op of the same kind.

    Merged deletes keep their text only when both have it (as ottypes does)."""
    if op.length == 0:
        return
    if ops and type(ops[-1]) is type(op):
        last = ops[-1]
        if isinstance(op, Retain):
            op = Retain(last.length + op.length)
        elif isinstance(op, Insert):
            op = Insert(last.text + op.text)
        elif isinstance(last.value, str) and isinstance(op.value, str):
            op = Delete(last.value + op.value)
        else:
            op = Delete(last.length + op.length)
        ops[-1] = op
    else:
        ops.append(op)


def _check_counted(op: Op, number: int) -> None:
    """ApplyError for a seek: how far it goes depends on the document."""
    if isinstance(op, Seek):
        raise ApplyError(f"op {number} {_show(op)} is found in a document: resolve(document, edit) "
                         "first", hunk=number)


def _finish(ops: list[Op]) -> Edit:
    if ops and isinstance(ops[-1], Retain):
        ops.pop()
    return Edit(tuple(ops))


def normalize(edit: Edit) -> Edit:
    """Drop empty ops and the trailing retain, merge neighbours of one kind. ApplyError on a
    negative count."""
    ops: list[Op] = []
    for number, op in enumerate(edit.ops, 1):
        _check_counted(op, number)
        if op.length < 0:
            raise ApplyError(f"op {number} {_show(op)}: the count must be positive", hunk=number)
        _append(ops, op)
    return _finish(ops)


class _Taker:
    """Reads an edit's ops a piece at a time (ottypes' makeTake); past its end come retains."""

    def __init__(self, edit: Edit):
        self.ops = normalize(edit).ops
        self.index = 0
        self.offset = 0  # code points of ops[index] already taken

    def peek(self) -> Op | None:
        return self.ops[self.index] if self.index < len(self.ops) else None

    def take(self, n: int | None, whole: type | None = None) -> Op | None:
        """Up to n code points of the next op (all of it when n is None, or when it is of kind
        `whole`, which is never split). None at the end when n is None."""
        if self.index == len(self.ops):
            return None if n is None else Retain(n)
        op = self.ops[self.index]
        if n is None or op.length - self.offset <= n or (whole is not None and isinstance(op, whole)):
            piece = _slice(op, self.offset)
            self.index += 1
            self.offset = 0
        else:
            piece = _slice(op, self.offset, self.offset + n)
            self.offset += n
        return piece

    def rest(self) -> Iterator[Op]:
        while (piece := self.take(None)) is not None:
            yield piece


def compose(a: Edit, b: Edit) -> Edit:
    """One edit that does a, then b: apply_text(t, compose(a, b)) == apply_text(apply_text(t, a), b)."""
    first = _Taker(a)
    ops: list[Op] = []
    for op in normalize(b).ops:
        if isinstance(op, Retain):
            length = op.length
            while length > 0:
                piece = first.take(length, Delete)
                _append(ops, piece)
                if not isinstance(piece, Delete):
                    length -= piece.length
        elif isinstance(op, Insert):
            _append(ops, op)
        else:
            offset = 0
            while offset < op.length:
                piece = first.take(op.length - offset, Delete)
                if isinstance(piece, Retain):  # b deletes text that a kept
                    _append(ops, _slice(op, offset, offset + piece.length))
                    offset += piece.length
                elif isinstance(piece, Insert):  # b deletes text that a inserted: neither happens
                    offset += piece.length
                else:
                    _append(ops, piece)
    for piece in first.rest():
        _append(ops, piece)
    return _finish(ops)


def transform(edit: Edit, other: Edit, side: Literal["left", "right"]) -> Edit:
    """edit, rewritten to apply after other (both made on the same text). When both insert at one
    place, the "left" side's text goes first. Matches ottypes/text-unicode's transform."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    mine = _Taker(edit)
    ops: list[Op] = []
    for op in normalize(other).ops:
        if isinstance(op, Retain):
            length = op.length
            while length > 0:
                piece = mine.take(length, Insert)
                _append(ops, piece)
                if not isinstance(piece, Insert):
                    length -= piece.length
        elif isinstance(op, Insert):
            if side == "left" and isinstance(mine.peek(), Insert):
                _append(ops, mine.take(None))
            _append(ops, Retain(op.length))
        else:
            length = op.length
            while length > 0:
                piece = mine.take(length, Insert)
                if isinstance(piece, Insert):
                    _append(ops, piece)
                else:  # text other deleted: keeping or deleting it again is moot
                    length -= piece.length
    for piece in mine.rest():
        _append(ops, piece)
    return _finish(ops)


def invert(edit: Edit, doc: str | None = None) -> Edit:
    """The edit that undoes edit: apply_text(apply_text(doc, e), invert(e, doc)) == doc.

    Needs the document the edit applies to, unless every delete carries its text."""
    if doc is not None:
        edit = Edit(tuple(_walk(doc, edit)[1]))
    ops: list[Op] = []
    for number, op in enumerate(normalize(edit).ops, 1):
        if isinstance(op, Insert):
            _append(ops, Delete(op.text))
        elif isinstance(op, Delete):
            if op.text is None:
                raise ApplyError(f"op {number} {_show(op)} does not say what it deletes: give the "
                                 "document to invert it", hunk=number)
            _append(ops, Insert(op.text))
        else:
            _append(ops, op)
    return _finish(ops)


def diff(old: str, new: str, *, delete_text: bool = True) -> Edit:
    """An edit that turns old into new: lines are matched first, then the words of each changed block
    (`_WORD`), so that a changed word is deleted and inserted whole: `[retain(8), delete("really"),
    insert("very very")]`, where code points alone give `insert("ve"), retain(1), ...`, right but
    unreadable, and a poor answer to teach a model. Deletes carry their text unless delete_text is False."""
    ops: list[Op] = []
    old_lines, new_lines = old.splitlines(True), new.splitlines(True)
    old_at = _offsets(old_lines)
    new_at = _offsets(new_lines)
    lines = SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in lines.get_opcodes():
        a, b = old[old_at[i1]:old_at[i2]], new[new_at[j1]:new_at[j2]]
        if tag == "equal":
            _append(ops, Retain(len(a)))
        else:
            _diff_block(ops, a, b, delete_text)
    return _finish(ops)


def _offsets(lines: list[str]) -> list[int]:
    at = [0]
    for line in lines:
        at.append(at[-1] + len(line))
    return at


_CHAR_DIFF_LIMIT = 4000  # code points; above this a changed block is replaced whole (difflib is quadratic)
_WORD = re.compile(r"\w+|.", re.S)  # a word, or any other code point alone (a space, a bracket, a newline)


def _diff_block(ops: list[Op], a: str, b: str, delete_text: bool) -> None:
    def remove(text: str) -> Delete:
        return Delete(text if delete_text else len(text))

    if not a or not b or len(a) + len(b) > _CHAR_DIFF_LIMIT:
        _append(ops, remove(a))
        _append(ops, Insert(b))
        return
    a_words, b_words = _WORD.findall(a), _WORD.findall(b)
    a_at, b_at = _offsets(a_words), _offsets(b_words)
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a_words, b_words, autojunk=False).get_opcodes():
        if tag == "equal":
            _append(ops, Retain(a_at[i2] - a_at[i1]))
        else:
            _append(ops, remove(a[a_at[i1]:a_at[i2]]))
            _append(ops, Insert(b[b_at[j1]:b_at[j2]]))
