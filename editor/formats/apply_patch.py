"""The apply_patch format (V4A), as OpenAI's codex parses and applies it.

    *** Begin Patch
    *** Add File: path          then '+' lines: the new file's lines
    *** Delete File: path
    *** Update File: path
    *** Move to: new/path       optional, right after Update File
    @@ anchor line              a hunk; the anchor (optional) is seeked first, the hunk after it
     context line               ' ' context, '-' removed, '+' added
    *** End of File             optional: the hunk's old lines end the file
    *** End Patch

Parsing follows codex's `parser.rs` in lenient mode: the text is trimmed; marker lines may carry
surrounding whitespace; a patch wrapped in a heredoc (`<<'EOF'` ... `EOF`) is unwrapped; the
first hunk of an update may omit its `@@`; blank lines between hunks are skipped; an empty line
inside a hunk is an empty context line. Matching follows codex's `lib.rs`: hunks are located in
order with `seek_sequence`'s cascade, an anchor moves the search past itself, a hunk with no old
lines is appended at the end of the file, and a hunk whose old lines end with an empty line is
retried without it.

Where we differ from codex (see docs/FORMATS.md): nothing is written unless the
whole patch applies (`partial=True` gives codex's stop-at-first-failure); CRLF files stay CRLF, a
BOM and the file mode stay; a missing final newline stays missing unless a hunk reaches the last
line; trailing blank lines are kept (codex drops one).

Also accepted: one file's hunks without the envelope, the `diff` of an `update_file` operation in
OpenAI's `apply_patch_call` (`parse_update_body`); apply it with `target=`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Union

from ..errors import ApplyError, EditError, ParseError
from ..files import Files, FileChange, Staging, newline_of, normalize
from .seek_sequence import RUST_WHITESPACE, seek_sequence, trim

BEGIN_PATCH = "*** Begin Patch"
END_PATCH = "*** End Patch"
ADD_FILE = "*** Add File: "
DELETE_FILE = "*** Delete File: "
UPDATE_FILE = "*** Update File: "
MOVE_TO = "*** Move to: "
END_OF_FILE = "*** End of File"
HEREDOC_OPENERS = ("<<EOF", "<<'EOF'", '<<"EOF"')
_UDIFF_HUNK = re.compile(r"@@ -\d+(,\d+)? \+\d+(,\d+)? @@")


@dataclass(frozen=True)
class Chunk:
    """One hunk of an update. `old_lines` (context and removed, in order) become `new_lines`
    (context and added). `anchor`: a line seeked before the hunk; `is_end_of_file`: the old
    lines end the file."""

    anchor: str | None
    old_lines: tuple[str, ...]
    new_lines: tuple[str, ...]
    is_end_of_file: bool = False


@dataclass(frozen=True)
class AddFile:
    """Create (or overwrite, as codex does) `path`; `content` is every '+' line plus "\\n"."""

    path: str
    content: str


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class UpdateFile:
    path: str
    move_to: str | None
    chunks: tuple[Chunk, ...]


FileOp = Union[AddFile, DeleteFile, UpdateFile]


@dataclass(frozen=True)
class Patch:
    """An enveloped patch: its file operations, applied in order."""

    ops: tuple[FileOp, ...]


# What `parse` returns: a whole patch, or one file's hunks without the envelope.
Edit = Union[Patch, tuple[Chunk, ...]]


# ---------------------------------------------------------------------------------------------
# Parsing


def _rust_lines(text: str) -> list[str]:
    """Rust's `str::lines`: split on "\\n", drop one "\\r" before it, no empty last line."""
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    return [p[:-1] if p.endswith("\r") else p for p in pieces]


class _Lines:
    """Patch lines with the 1-based line number each has in the text the caller gave."""

    def __init__(self, lines: list[str], first_number: int):
        self.lines = lines
        self.first_number = first_number

    def number(self, index: int) -> int:
        return self.first_number + index

    def error(self, index: int, message: str) -> ParseError:
        return ParseError(message, line=self.number(min(index, len(self.lines) - 1)))


def looks_like(text: str) -> bool:
    lines = [line for line in _rust_lines(text) if trim(line)]
    if not lines:
        return False
    first = trim(lines[0])
    if first == BEGIN_PATCH:
        return True
    if first in HEREDOC_OPENERS:
        return len(lines) > 1 and trim(lines[1]) == BEGIN_PATCH
    return _is_hunk_header(lines[0]) and not _UDIFF_HUNK.match(lines[0])


def parse(text: str) -> Edit:
    """A `Patch`, or the hunks of an envelope-less update body. Raises ParseError naming the line."""
    first = next((line for line in _rust_lines(text) if trim(line)), "")
    unified_diff = first.startswith(("--- ", "+++ ")) or _UDIFF_HUNK.match(first)
    if trim(first) not in (BEGIN_PATCH, *HEREDOC_OPENERS) and not unified_diff and (
            _is_hunk_header(first) or first[:1] in (" ", "-", "+")):
        return parse_update_body(text)
    return parse_patch(text)


def _is_hunk_header(line: str) -> bool:
    return line == "@@" or line.startswith("@@ ")


def parse_patch(text: str) -> Patch:
    """The enveloped form, leniently as codex: see the module docstring."""
    body = trim(text)
    lead = text[: len(text) - len(text.lstrip(RUST_WHITESPACE))]
    lines = _Lines(_rust_lines(body), lead.count("\n") + 1)
    start, end = _envelope(lines)
    ops: list[FileOp] = []
    i = start
    while i < end:
        op, i = _parse_file_op(lines, i, end)
        ops.append(op)
    return Patch(tuple(ops))


def _envelope(lines: _Lines) -> tuple[int, int]:
    """The index range of the lines between `*** Begin Patch` and `*** End Patch`."""
    try:
        return _envelope_strict(lines, 0, len(lines.lines))
    except ParseError:
        rows = lines.lines
        if len(rows) >= 4 and rows[0] in HEREDOC_OPENERS and rows[-1].endswith("EOF"):
            return _envelope_strict(lines, 1, len(rows) - 1)
        raise


def _envelope_strict(lines: _Lines, first: int, stop: int) -> tuple[int, int]:
    rows = lines.lines
    if stop <= first:
        raise ParseError(f"the patch is empty: expected '{BEGIN_PATCH}' ... '{END_PATCH}'", line=1)
    if trim(rows[first]) != BEGIN_PATCH:
        raise lines.error(first, f"expected '{BEGIN_PATCH}' as the first line, got {rows[first]!r}")
    if stop - first < 2 or trim(rows[stop - 1]) != END_PATCH:
        raise lines.error(stop - 1, f"expected '{END_PATCH}' as the last line, "
                                    f"got {rows[stop - 1]!r}")
    return first + 1, stop - 1


def _parse_file_op(lines: _Lines, i: int, end: int) -> tuple[FileOp, int]:
    rows = lines.lines
    header = trim(rows[i])
    if header.startswith(ADD_FILE):
        content = []
        i += 1
        while i < end and rows[i].startswith("+"):
            content.append(rows[i][1:] + "\n")
            i += 1
        return AddFile(header[len(ADD_FILE):], "".join(content)), i
    if header.startswith(DELETE_FILE):
        return DeleteFile(header[len(DELETE_FILE):]), i + 1
    if header.startswith(UPDATE_FILE):
        path = header[len(UPDATE_FILE):]
        header_index = i
        i += 1
        move_to = None
        if i < end and rows[i].startswith(MOVE_TO):  # codex does not trim this line
            move_to = rows[i][len(MOVE_TO):]
            i += 1
        chunks, i = _parse_chunks(lines, i, end, stop_at_marker=True)
        if not chunks:
            raise lines.error(header_index, f"'{UPDATE_FILE}{path}' has no hunks: expected '@@' "
                                            "and lines starting ' ', '-' or '+'")
        return UpdateFile(path, move_to, tuple(chunks)), i
    raise lines.error(i, f"{header!r} is not a file operation: expected '{ADD_FILE}<path>', "
                         f"'{DELETE_FILE}<path>' or '{UPDATE_FILE}<path>'")


def parse_update_body(text: str) -> tuple[Chunk, ...]:
    """One file's hunks without the envelope (an `apply_patch_call` update_file `diff`)."""
    rows = _rust_lines(text)
    while rows and rows[-1] == "":
        rows.pop()
    lines = _Lines(rows, 1)
    chunks, _ = _parse_chunks(lines, 0, len(rows), stop_at_marker=False)
    if not chunks:
        raise ParseError("the update body has no hunks: expected '@@' and lines starting ' ', "
                         "'-' or '+'", line=1)
    return tuple(chunks)


def _parse_chunks(lines: _Lines, i: int, end: int, *,
                  stop_at_marker: bool) -> tuple[list[Chunk], int]:
    rows = lines.lines
    chunks: list[Chunk] = []
    while i < end:
        if not trim(rows[i]):
            i += 1  # blank lines may separate hunks
            continue
        if rows[i].startswith("*"):
            if stop_at_marker:
                break  # the next file operation
            raise lines.error(i, f"unexpected {rows[i]!r}: an update body holds only '@@' hunks")
        chunk, i = _parse_chunk(lines, i, end, header_optional=not chunks)
        chunks.append(chunk)
    return chunks, i


def _parse_chunk(lines: _Lines, i: int, end: int, *, header_optional: bool) -> tuple[Chunk, int]:
    rows = lines.lines
    anchor = None
    if rows[i] == "@@":
        i += 1
    elif rows[i].startswith("@@ "):
        anchor = rows[i][3:]
        i += 1
    elif not header_optional:
        raise lines.error(i, f"expected a hunk header '@@' or '@@ <line from the file>', "
                             f"got {rows[i]!r}")
    if i >= end:
        raise lines.error(i, "the hunk has no lines: expected lines starting ' ', '-' or '+'")
    old: list[str] = []
    new: list[str] = []
    is_end_of_file = False
    first_line = i
    while i < end:
        line = rows[i]
        if line == END_OF_FILE:
            if i == first_line:
                raise lines.error(i, f"the hunk has no lines before '{END_OF_FILE}'")
            is_end_of_file = True
            i += 1
            break
        if line == "" or line[0] == " ":
            old.append(line[1:])
            new.append(line[1:])
        elif line[0] == "-":
            old.append(line[1:])
        elif line[0] == "+":
            new.append(line[1:])
        elif i == first_line:
            raise lines.error(i, f"unexpected line {line!r}: every line of a hunk starts with "
                                 "' ' (context), '-' (removed) or '+' (added)")
        else:
            break  # the next hunk or file operation
        i += 1
    return Chunk(anchor, tuple(old), tuple(new), is_end_of_file), i


# ---------------------------------------------------------------------------------------------
# Rendering


def render(edit: Edit) -> str:
    """Canonical text: every hunk has its `@@`; parse(render(e)) == e."""
    if isinstance(edit, Patch):
        out = [BEGIN_PATCH]
        for op in edit.ops:
            out += _render_op(op)
        out.append(END_PATCH)
    else:
        out = [line for chunk in edit for line in _render_chunk(chunk)]
    return "\n".join(out) + "\n"


def _render_op(op: FileOp) -> list[str]:
    if isinstance(op, AddFile):
        lines = op.content.split("\n")
        if lines[-1] == "":
            lines.pop()
        return [ADD_FILE + op.path] + ["+" + line for line in lines]
    if isinstance(op, DeleteFile):
        return [DELETE_FILE + op.path]
    out = [UPDATE_FILE + op.path]
    if op.move_to is not None:
        out.append(MOVE_TO + op.move_to)
    for chunk in op.chunks:
        out += _render_chunk(chunk)
    return out


def _render_chunk(chunk: Chunk) -> list[str]:
    """Context, removed and added lines interleaved along the old -> new alignment."""
    out = ["@@" if chunk.anchor is None else "@@ " + chunk.anchor]
    old, new = chunk.old_lines, chunk.new_lines
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [" " + line for line in old[i1:i2]]
        else:
            out += ["-" + line for line in old[i1:i2]]
            out += ["+" + line for line in new[j1:j2]]
    if chunk.is_end_of_file:
        out.append(END_OF_FILE)
    return out


# ---------------------------------------------------------------------------------------------
# Applying


def apply(files: Files, edit: Edit, *, target: str | None = None,
          partial: bool = False) -> list[FileChange]:
    """The changes the edit makes, staged over `files` (nothing is written).

    A bare update body needs `target`, the file it updates; with a whole patch, `target` (if
    given) must be the only file the patch touches. `partial`: codex's behaviour, operations
    applied in order until one fails; the ApplyError then carries in `applied` the changes of the
    operations before it (non-ApplyErrors, such as an unsafe path, are turned into ApplyErrors).
    """
    ops = _operations(edit, target)
    if not ops:
        raise ApplyError("the patch has no file operations: no files were modified")
    staging = Staging(files)
    for op in ops:
        applied = staging.changes() if partial else []
        try:
            _apply_op(staging, op)
        except EditError as exc:
            if not partial:
                raise
            raise ApplyError(exc.message, file=exc.file, line=exc.line, hunk=exc.hunk,
                             applied=applied) from exc
    return staging.changes()


def _operations(edit: Edit, target: str | None) -> tuple[FileOp, ...]:
    if not isinstance(edit, Patch):
        if target is None:
            raise ApplyError("an update body without '*** Begin Patch' names no file: give the "
                             "target file")
        return (UpdateFile(target, None, tuple(edit)),)
    if target is not None:
        for op in edit.ops:
            for path in (op.path, getattr(op, "move_to", None)):
                if path is not None and normalize(path) != normalize(target):
                    raise ApplyError(f"the patch touches {path}, but the target is {target}",
                                     file=path)
    return edit.ops


def _apply_op(staging: Staging, op: FileOp) -> None:
    if isinstance(op, AddFile):
        staging.write(op.path, op.content)
        return
    if not staging.exists(op.path):
        verb = "delete" if isinstance(op, DeleteFile) else "update"
        raise ApplyError(f"cannot {verb}: file not found", file=op.path)
    if isinstance(op, DeleteFile):
        staging.delete(op.path)
        return
    new_text = update_text(staging.read(op.path).text, op.chunks, op.path)
    if op.move_to is not None:
        staging.move(op.path, op.move_to, new_text)
    else:
        staging.write(op.path, new_text)


def split_lines(text: str) -> tuple[list[str], bool]:
    """The file's lines without line endings, and whether the last one ends with a newline
    (an empty file counts as ending with one). CRLF files lose their "\\r"s here."""
    pieces = text.split("\n")
    last = pieces.pop()
    if newline_of(text) == "\r\n":
        pieces = [p[:-1] if p.endswith("\r") else p for p in pieces]
    if last:
        return pieces + [last], False
    return pieces, True


def update_text(text: str, chunks: tuple[Chunk, ...], path: str) -> str:
    """`text` with the hunks applied. Lines the hunks leave alone keep their bytes, line ending
    included (in a mixed file too); a new line ends like the line before it."""
    newline = newline_of(text)
    pieces = text.split("\n")
    last = pieces.pop()
    lines = [(p[:-1], "\r\n") if p.endswith("\r") else (p, "\n") for p in pieces]
    if last:
        lines.append((last, ""))
    replacements = compute_replacements([content for content, _ in lines], chunks, path)
    reaches_end = any(start + old_len >= len(lines) for start, old_len, _ in replacements)
    for start, old_len, new in reversed(replacements):  # back to front: indices stay valid
        before = lines[start - 1][1] if start else ""
        nearby = before or (lines[start][1] if start < len(lines) else "") or newline
        lines[start:start + old_len] = _keep_endings(lines[start:start + old_len], new, nearby)
    if not lines:
        return ""
    # A line that new lines now follow needs an ending. codex ends every updated file with a
    # newline; we keep a missing one unless a hunk reached the last line (there codex's
    # behaviour is the only one the format can express).
    lines = [(content, ending or newline) for content, ending in lines[:-1]] + [
        (lines[-1][0], lines[-1][1] or (newline if reaches_end else ""))]
    return "".join(content + ending for content, ending in lines)


def _keep_endings(old: list[tuple[str, str]], new: list[str], nearby: str) -> list[tuple[str, str]]:
    """The hunk's new lines, each with an ending: a context line keeps the one it had, an added
    line takes the one of the line before it (`nearby` before the hunk's first line)."""
    matcher = SequenceMatcher(None, [content for content, _ in old], new, autojunk=False)
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += old[i1:i2]
        else:
            ending = (out[-1][1] if out else "") or nearby
            out += [(line, ending) for line in new[j1:j2]]
    return out


def compute_replacements(lines: list[str], chunks: tuple[Chunk, ...],
                         path: str) -> list[tuple[int, int, list[str]]]:
    """codex's `compute_replacements`: (start, old length, new lines) per hunk, sorted by start."""
    replacements = []
    line_index = 0
    for number, chunk in enumerate(chunks, 1):
        if chunk.anchor is not None:
            found = seek_sequence(lines, [chunk.anchor], line_index, False)
            if found is None:
                raise ApplyError(f"anchor line not found at or after line {line_index + 1}: "
                                 f"{chunk.anchor!r}", file=path, hunk=number, line=line_index + 1)
            line_index = found + 1
        if not chunk.old_lines:
            # Nothing to locate: codex appends, before a final empty line if there is one.
            at = len(lines) - 1 if lines and lines[-1] == "" else len(lines)
            replacements.append((at, 0, list(chunk.new_lines)))
            continue
        pattern, new = list(chunk.old_lines), list(chunk.new_lines)
        found = seek_sequence(lines, pattern, line_index, chunk.is_end_of_file)
        if found is None and pattern[-1] == "":
            # A trailing empty line often stands for the file's final newline: retry without.
            pattern.pop()
            if new and new[-1] == "":
                new.pop()
            found = seek_sequence(lines, pattern, line_index, chunk.is_end_of_file)
        if found is None:
            raise ApplyError(_not_found(lines, chunk, line_index), file=path, hunk=number,
                             line=line_index + 1)
        replacements.append((found, len(pattern), new))
        line_index = found + len(pattern)
    replacements.sort(key=lambda replacement: replacement[0])
    return replacements


def _not_found(lines: list[str], chunk: Chunk, line_index: int) -> str:
    where = "at the end of the file" if chunk.is_end_of_file else f"at or after line {line_index + 1}"
    shown = "\n".join("  |" + line for line in chunk.old_lines)
    message = f"the hunk's context and '-' lines were not found {where}:\n{shown}"
    return message + _closest(lines, chunk.old_lines, line_index)


def _closest(lines: list[str], pattern: tuple[str, ...], line_index: int) -> str:
    """Where the longest leading part of `pattern` matches (whitespace aside), as a hint."""
    best_start, best_length = None, 0
    for start in range(line_index, len(lines)):
        length = 0
        while (length < len(pattern) and start + length < len(lines)
               and trim(lines[start + length]) == trim(pattern[length])):
            length += 1
        if length > best_length:
            best_start, best_length = start, length
    if best_start is None:
        return ""
    if best_length == len(pattern):  # only an end-of-file hunk can miss a full match
        return f"\nthey occur at line {best_start + 1}, but the hunk is marked '{END_OF_FILE}'"
    at = best_start + best_length
    actual = repr(lines[at]) if at < len(lines) else "the end of the file"
    return (f"\nthe first {best_length} of {len(pattern)} lines match at line {best_start + 1}; "
            f"then the file has {actual} where the hunk expects {pattern[best_length]!r}")


# ---------------------------------------------------------------------------------------------
# Making patches


def diff(old: str, new: str, path: str, context: int = 3) -> Patch:
    """A patch updating `path` from `old` to `new` that `apply` turns back into `new` exactly.

    Context is widened upwards until each hunk's old lines first occur where they belong, so the
    in-order search cannot land earlier. Raises ValueError for what the format cannot say: no
    change, a final newline removed, a change of line ending, or a change at the end of a file
    that keeps lacking its final newline.
    """
    if old == new:
        raise ValueError("old and new are equal: there is nothing to patch")
    if "\n" in new and newline_of(new) != newline_of(old):
        raise ValueError("the line ending changes: apply_patch keeps the file's own")
    a, a_newline = split_lines(old)
    b, b_newline = split_lines(new)
    if a_newline and b and not b_newline:
        raise ValueError("new drops the final newline: apply_patch cannot remove one")
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    chunks: list[Chunk] = []
    cursor = 0
    for group in matcher.get_grouped_opcodes(max(context, 1)):
        (_, i1, _, j1, _), (tag, _, i2, _, j2) = group[0], group[-1]
        if not a_newline and i2 == len(a):
            if tag != "equal" and not b_newline:
                raise ValueError("the change reaches the last line, which lacks a final newline: "
                                 "apply_patch would add one")
            if tag == "equal" and not b_newline:
                i2, j2 = i2 - 1, j2 - 1  # stop short of the last line to keep its newline missing
        chunks.append(_unique_chunk(a, b, cursor, i1, i2, j1, j2))
        cursor = i2
    if not a_newline and b_newline and cursor < len(a):
        chunks.append(Chunk(None, (a[-1],), (b[-1],), True))  # touch the end: newline added
    return Patch((UpdateFile(path, None, tuple(chunks)),))


def _unique_chunk(a: list[str], b: list[str], cursor: int, i1: int, i2: int, j1: int,
                  j2: int) -> Chunk:
    if i1 == i2 and a:
        raise ValueError("an insertion whose only neighbour is a last line without a final "
                         "newline: apply_patch would append it, or add the newline")
    at_end = i2 == len(a) and i1 < i2
    while i1 > cursor and seek_sequence(a, a[i1:i2], cursor, at_end) != i1:
        i1, j1 = i1 - 1, j1 - 1  # the lines above a hunk are unchanged, in a and in b alike
    return Chunk(None, tuple(a[i1:i2]), tuple(b[j1:j2]), at_end)
