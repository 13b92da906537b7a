"""Unified diffs (GNU `diff -u`, `git diff`, `hg diff`, `svn diff`) as edits.

`parse` reads the text with `unidiff` and turns it into typed `FilePatch`/`Hunk`/`Line` values;
`apply` places each hunk like GNU `patch -p1` does (the stated line, then the nearest offset, then
fuzz), but stricter where guessing could silently corrupt a file. docs/FORMATS.md has the rules.

Where a hunk landed away from its stated line, or with fuzz, `apply_with_report` says so in
`Applied.notes`; `apply` returns only the changes.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterator

from unidiff import PatchSet
from unidiff.constants import RE_HUNK_HEADER, RE_SOURCE_FILENAME, RE_TARGET_FILENAME
from unidiff.errors import UnidiffParseError

from ..errors import ApplyError, EditError, ParseError
from ..files import FileChange, Files, Staging, newline_of

DEV_NULL = "/dev/null"
UNNAMED = ""  # the file name of a headerless diff (it starts with a hunk): `target` must name it

MAX_FUZZ = 2


@dataclass(frozen=True)
class Line:
    """One hunk line: kind ' ' (context), '-' (removed) or '+' (added).

    `text` has no line ending; `eol` is the ending the diff wrote ("\\n" or "\\r\\n"), or "" when the
    line is followed by `\\ No newline at end of file`.
    """

    kind: str
    text: str
    eol: str = "\n"

    @property
    def no_newline(self) -> bool:
        return self.eol == ""


@dataclass(frozen=True)
class Hunk:
    """`@@ -source_start,source_len +target_start,target_len @@` and its lines.

    As in diff output, a start names the line before the hunk when its length is 0.
    """

    source_start: int
    source_len: int
    target_start: int
    target_len: int
    lines: tuple[Line, ...]

    @property
    def old(self) -> list[Line]:
        return [line for line in self.lines if line.kind != "+"]

    @property
    def new(self) -> list[Line]:
        return [line for line in self.lines if line.kind != "-"]

    @property
    def header(self) -> str:
        return f"@@ -{self.source_start},{self.source_len} +{self.target_start},{self.target_len} @@"


@dataclass(frozen=True)
class FilePatch:
    """One file's part of a diff. `source`/`target` are None for /dev/null (a created or deleted
    file) and `UNNAMED` for a headerless diff; prefixes `a/` `b/` are already stripped."""

    source: str | None
    target: str | None
    hunks: tuple[Hunk, ...] = ()
    is_rename: bool = False
    old_mode: str | None = None
    new_mode: str | None = None

    @property
    def is_new(self) -> bool:
        return self.source is None

    @property
    def is_deleted(self) -> bool:
        return self.target is None

    @property
    def name(self) -> str:
        """The name to report in messages."""
        return (self.target if self.target is not None else self.source) or "(unnamed file)"


@dataclass(frozen=True)
class Edit:
    files: tuple[FilePatch, ...]


@dataclass(frozen=True)
class HunkNote:
    """A hunk that applied somewhere else than its stated line, or with fuzz."""

    file: str
    hunk: int
    stated_line: int
    applied_line: int
    fuzz: int

    def __str__(self) -> str:
        fuzz = f", fuzz {self.fuzz}" if self.fuzz else ""
        return (f"{self.file}: hunk {self.hunk} applied at line {self.applied_line} "
                f"(offset {self.applied_line - self.stated_line:+d} lines{fuzz})")


@dataclass
class Applied:
    changes: list[FileChange]
    notes: list[HunkNote] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- parse

_GIT_HEADER = "diff --git "
_TIMESTAMP = re.compile(  # a timestamp written after the name with spaces instead of a tab
    r"\s+(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( ?[+-]\d{4})?"
    r"|(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d+ "
    r"\d\d:\d\d:\d\d \d{4}( [+-]\d{4})?)$")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


class _Reader:
    """The diff's lines for unidiff, remembering how far it read (to name the line of an error)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.line_no = 0  # 1-based number of the last line handed out
        self.parsed: list = []  # unidiff's files so far; set by _PatchSet

    def __iter__(self) -> Iterator[str]:
        for self.line_no, line in enumerate(self.lines, 1):
            yield line


class _PatchSet(PatchSet):
    """A PatchSet that leaves its partial result with the reader when parsing fails."""

    def __init__(self, reader: _Reader):
        reader.parsed = self
        super().__init__(reader)


def parse(text: str) -> Edit:
    """Diff text -> Edit. Raises ParseError naming the line (and hunk) that is wrong."""
    lines = _split_keep_ends(text)
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    shift = 0
    if lines and lines[first].startswith("@@ "):  # a bare hunk: hang it on an unnamed file
        lines[first:first] = ["--- \n", "+++ \n"]
        shift = 2
    reader = _Reader(lines)
    try:
        patch_set = _PatchSet(reader)
    except UnidiffParseError as exc:
        raise _parse_error(str(exc), reader, shift) from None
    if not patch_set:
        raise ParseError("no unified diff found: expected '--- a/PATH' and '+++ b/PATH' headers "
                         "followed by '@@ -l,n +l,n @@' hunks", line=1)
    _check_hunk_ends(patch_set, lines, shift)
    starts = [_file_start(pf) for pf in patch_set] + [len(lines) + 1]
    files = tuple(_file_patch(pf, lines, starts[i], starts[i + 1], shift)
                  for i, pf in enumerate(patch_set))
    return Edit(files)


def _check_hunk_ends(patch_set, lines: list[str], shift: int) -> None:
    """A hunk line right after a complete hunk means a miscounted header; unidiff would skip it as
    text between files (and GNU patch ignores it too), silently losing part of the edit. A hunk
    of no lines is refused too."""
    for pf in patch_set:
        for number, h in enumerate(pf, 1):
            if not len(h):
                raise ParseError(f"the hunk @@ -{h.source_start},0 +{h.target_start},0 @@ has no "
                                 "lines: it changes nothing", file=_display_name(pf), hunk=number)
            after = max(line.diff_line_no or 0 for line in h)  # 1-based: the line after the hunk
            if after < len(lines) and lines[after].startswith("\\"):
                after += 1
            if after >= len(lines):
                continue
            line = lines[after].rstrip("\r\n")
            header_pair = line.startswith("--- ") and after + 1 < len(lines) \
                and lines[after + 1].startswith("+++ ")
            signature = line == "-- "  # git format-patch's mail signature
            if line[:1] in (" ", "-", "+") and not header_pair and not signature:
                header_line = h[0].diff_line_no - 1 - shift
                raise ParseError(
                    f"line {line!r} looks like a hunk line, but the hunk "
                    f"already has the {h.source_length} old and {h.target_length} new lines its "
                    f"header (line {header_line}) counts: fix the counts", file=_display_name(pf),
                    line=after + 1 - shift, hunk=number)


def _split_keep_ends(text: str) -> list[str]:
    """Lines with their endings, split at "\\n" only (a lone "\\r" or form feed is line content)."""
    parts = text.split("\n")
    last = parts.pop()
    return [part + "\n" for part in parts] + ([last] if last else [])


def _split_line(value: str) -> tuple[str, str]:
    """'text\\r\\n' -> ('text', '\\r\\n'). A diff's own last line without "\\n" still ends a line."""
    if value.endswith("\r\n"):
        return value[:-2], "\r\n"
    return (value[:-1] if value.endswith("\n") else value), "\n"


def _file_start(pf) -> int:
    """1-based line where a file's header begins: its `diff --git` or `---` line."""
    return pf.diff_line_no if _is_git(pf) else pf.diff_line_no - 1


def _is_git(pf) -> bool:
    return bool(pf.patch_info) and pf.patch_info[0].startswith(_GIT_HEADER)


def _parse_error(message: str, reader: _Reader, shift: int) -> ParseError:
    """unidiff's terse message -> ParseError naming the line, the hunk and what was expected."""
    line_no = reader.line_no
    shown = line_no - shift
    files = reader.parsed
    current = files[-1] if files else None
    name = _display_name(current) if current is not None else None
    if message.startswith("Hunk"):
        at_end = message == "Hunk is shorter than expected"
        header_no = max(n for n in range(1, line_no + at_end)
                        if RE_HUNK_HEADER.match(reader.lines[n - 1]))
        head = RE_HUNK_HEADER.match(reader.lines[header_no - 1])
        old_len = int(head.group(2) or 1)
        new_len = int(head.group(4) or 1)
        body = reader.lines[header_no:line_no - 1 + at_end]
        old_seen = sum(1 for b in body if b[:1] in " -" or b in ("\n", "\r\n"))
        new_seen = sum(1 for b in body if b[:1] in " +" or b in ("\n", "\r\n"))
        promise = (f"its header (line {header_no - shift}) promises {old_len} old and {new_len} new "
                   f"lines, {old_seen} old and {new_seen} new came")
        hunk = len(current) + 1 if current is not None else 1
        if at_end:
            return ParseError(f"the diff ends inside the hunk: {promise}", file=name,
                              line=header_no - shift, hunk=hunk)
        found = reader.lines[line_no - 1].rstrip("\r\n")
        if message.startswith("Hunk diff line expected"):
            return ParseError(f"expected a hunk line starting with ' ', '-', '+' or '\\' but found "
                              f"{found!r}: {promise}", file=name, line=shown, hunk=hunk)
        return ParseError(f"line {found!r} goes past the hunk's length: {promise}", file=name,
                          line=shown, hunk=hunk)
    found = reader.lines[line_no - 1].rstrip("\r\n") if line_no else ""
    if message.startswith("Target without source"):
        return ParseError(f"'+++' header {found!r} without a matching '---' header before it",
                          file=name, line=shown)
    if message.startswith("Unexpected hunk found"):
        return ParseError(f"hunk header {found!r} before any '--- a/PATH' / '+++ b/PATH' file "
                          "header", line=shown)
    if message.startswith("Unexpected marker"):
        return ParseError("'\\ No newline at end of file' does not follow a hunk line",
                          file=name, line=shown)
    return ParseError(f"{found!r}: {message}", file=name, line=shown)


def _display_name(pf) -> str | None:
    """A unidiff file's name for messages, before the header is fully read."""
    return (_strip_prefix(_clean_name(pf.target_file) or "", "b/")
            or _strip_prefix(_clean_name(pf.source_file) or "", "a/") or None)


def _file_patch(pf, lines: list[str], start: int, next_start: int, shift: int) -> FilePatch:
    """One unidiff PatchedFile -> FilePatch, reading the header lines itself (names, modes)."""
    if pf.is_binary_file:
        raise ParseError("binary patch: binary files cannot be edited", file=_display_name(pf),
                         line=start - shift)
    git = _is_git(pf)
    header_end = pf[0][0].diff_line_no - 1 if pf else next_start  # the first '@@' line
    header = {}  # first line of each kind in a git file's header
    for n in range(start, header_end if git else start):
        raw = lines[n - 1].rstrip("\r\n")
        for key in ("--- ", "+++ ", "rename from ", "rename to ", "copy from ", "old mode ",
                    "new mode ", "new file mode ", "deleted file mode ", _GIT_HEADER):
            if raw.startswith(key):
                header.setdefault(key, (n, raw[len(key):]))
    if "copy from " in header:
        raise ParseError("git copies ('copy from'/'copy to') are not supported; write the new file "
                         "as a created file", line=header["copy from "][0] - shift)
    old_mode = _mode(header, "old mode ") or _mode(header, "deleted file mode ")
    new_mode = _mode(header, "new mode ") or _mode(header, "new file mode ")
    if not git:
        source, target = _clean_name(pf.source_file), _clean_name(pf.target_file)
    elif "--- " in header and "+++ " in header:
        source = _clean_name(RE_SOURCE_FILENAME.match("--- " + header["--- "][1]).group("filename"))
        target = _clean_name(RE_TARGET_FILENAME.match("+++ " + header["+++ "][1]).group("filename"))
    else:
        source, target = _git_names(header[_GIT_HEADER][1])
    if "new file mode " in header:
        source = None
    if "deleted file mode " in header:
        target = None
    if source is not None and target is not None and source.startswith("a/") \
            and target.startswith("b/"):
        source, target = source[2:], target[2:]
    elif source is None and target is not None:
        target = _strip_prefix(target, "b/")
    elif target is None and source is not None:
        source = _strip_prefix(source, "a/")
    if "rename from " in header:
        source = _clean_name(header["rename from "][1])
        target = _clean_name(header["rename to "][1]) if "rename to " in header else target
    is_rename = git and None not in (source, target) and source != target
    if source is None and target is None:
        raise ParseError("both sides of the file header are /dev/null", line=start - shift)
    name = target or source or None
    hunks = tuple(_hunk(h, number, name, shift) for number, h in enumerate(pf, 1))
    _check_no_newline_markers(hunks, name)
    return FilePatch(source, target, hunks, is_rename, old_mode, new_mode)


def _mode(header: dict, key: str) -> str | None:
    return header[key][1].strip() if key in header else None


def _hunk(h, number: int, name: str | None, shift: int) -> Hunk:
    header_line = h[0].diff_line_no - 1 - shift
    if (h.source_length and not h.source_start) or (h.target_length and not h.target_start):
        raise ParseError("a hunk with lines cannot start at line 0 (lines count from 1)",
                         file=name, line=header_line, hunk=number)
    lines: list[Line] = []
    for diff_line in h:
        if diff_line.line_type == "\\":
            if not lines:
                raise ParseError("'\\ No newline at end of file' before any line of the hunk",
                                 file=name, line=header_line + 1, hunk=number)
            last = lines[-1]
            lines[-1] = Line(last.kind, last.text, "")
        elif diff_line.line_type in (" ", "-", "+"):
            lines.append(Line(diff_line.line_type, *_split_line(diff_line.value)))
        # else: a blank line after the hunk (unidiff keeps it as an empty-type line)
    return Hunk(h.source_start, h.source_length, h.target_start, h.target_length, tuple(lines))


def _check_no_newline_markers(hunks: tuple[Hunk, ...], name: str | None) -> None:
    """`\\ No newline at end of file` may only follow the last line of a side of the last hunk."""
    for number, hunk in enumerate(hunks, 1):
        for side in (hunk.old, hunk.new):
            marked = [i for i, line in enumerate(side) if line.no_newline]
            if marked and (marked[0] != len(side) - 1 or number != len(hunks)):
                raise ParseError("'\\ No newline at end of file' after a line that is not the last "
                                 "line of the file", file=name, hunk=number)


def _clean_name(raw: str | None) -> str | None:
    """A header's file name: no CR, trailing blanks or timestamp; C-quoted names unquoted;
    None for /dev/null."""
    if raw is None:
        return None
    name = raw.rstrip("\r\n")
    if name.startswith('"'):
        end = _closing_quote(name)
        if end > 0:
            name = _unquote(name[1:end])
            return None if name == DEV_NULL else name
    name = _TIMESTAMP.sub("", name.split("\t")[0]).rstrip()
    return None if name == DEV_NULL else name


def _closing_quote(text: str) -> int:
    """Index of the quote closing the C string that opens text, or -1."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i
        else:
            i += 1
    return -1


def _unquote(body: str) -> str:
    """Git's C-style quoting: backslash escapes and octal bytes (UTF-8) -> text."""
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            octal = body[i + 1:i + 4]
            if re.fullmatch(r"[0-7]{3}", octal):
                out.append(int(octal, 8))
                i += 4
                continue
            if body[i + 1:i + 2] in _C_ESCAPES:
                out.append(_C_ESCAPES[body[i + 1]])
                i += 2
                continue
        out += ch.encode("utf-8")
        i += 1
    return out.decode("utf-8", errors="replace")


def _git_names(rest: str) -> tuple[str | None, str | None]:
    """The two names of a `diff --git` line (used when the file has no '---'/'+++' lines)."""
    rest = rest.rstrip("\r\n")
    if rest.startswith('"'):
        end = _closing_quote(rest)
        return _clean_name(rest[:end + 1]), _clean_name(rest[end + 1:].strip())
    half = (len(rest) - 1) // 2
    if len(rest) % 2 == 1 and rest[half] == " " and rest[2:half] == rest[half + 3:]:
        return rest[:half], rest[half + 1:]  # 'a/X b/X': the same name on both sides
    split = rest.rfind(" b/")
    if split < 0:
        split = rest.find(" ")
    return _clean_name(rest[:split]), _clean_name(rest[split + 1:])


def _strip_prefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


# --------------------------------------------------------------------------------------- render

_NEEDS_QUOTES = re.compile(r'["\\\x00-\x1f\x7f]|^\s|\s$')


def render(edit: Edit) -> str:
    """The canonical text: git-style headers, `@@ -l,n +l,n @@` with both counts, LF headers."""
    return "".join(_render_file(fp) for fp in edit.files)


def _render_file(fp: FilePatch) -> str:
    out = []
    if fp.source != UNNAMED or fp.target != UNNAMED:  # else headerless: the hunks alone
        old_name = fp.source if fp.source is not None else fp.target
        new_name = fp.target if fp.target is not None else fp.source
        # A plain '---'/'+++' pair with different names patches one file (GNU patch); a 'diff --git'
        # line would make it a rename. A created or deleted file needs its mode line under one.
        git = fp.is_rename or fp.old_mode or fp.new_mode or (
            old_name == new_name and not fp.is_new and not fp.is_deleted)
        if git:
            out.append(f"diff --git {_quote('a/' + old_name)} {_quote('b/' + new_name)}\n")
            if fp.is_new and fp.new_mode:
                out.append(f"new file mode {fp.new_mode}\n")
            elif fp.is_deleted and fp.old_mode:
                out.append(f"deleted file mode {fp.old_mode}\n")
            else:
                if fp.old_mode:
                    out.append(f"old mode {fp.old_mode}\n")
                if fp.new_mode:
                    out.append(f"new mode {fp.new_mode}\n")
            if fp.is_rename:
                out.append(f"rename from {_quote(fp.source)}\nrename to {_quote(fp.target)}\n")
        if fp.hunks or not git:  # without hunks, the git lines alone say what happens
            out.append("--- " + (DEV_NULL if fp.source is None else _quote("a/" + fp.source)) + "\n")
            out.append("+++ " + (DEV_NULL if fp.target is None else _quote("b/" + fp.target)) + "\n")
    for hunk in fp.hunks:
        out.append(hunk.header + "\n")
        for line in hunk.lines:
            out.append(line.kind + line.text + (line.eol or "\n\\ No newline at end of file\n"))
    return "".join(out)


def _quote(name: str) -> str:
    """Git's C-style quoting, for names with quotes, backslashes, control characters or edge
    blanks (which a plain header would lose)."""
    if not _NEEDS_QUOTES.search(name):
        return name
    escape = {code: letter for letter, code in _C_ESCAPES.items()}
    body = []
    for ch in name:
        code = ord(ch)
        if code in escape:
            body.append("\\" + escape[code])
        elif code < 0x20 or code == 0x7F:
            body.append(f"\\{code:03o}")
        else:
            body.append(ch)
    return '"' + "".join(body) + '"'


def diff(old: str | None, new: str | None, path: str, context: int = 3) -> Edit:
    """The edit that turns `old` into `new` (None: the file is absent), 3 lines of context.

    A created or deleted file gets mode 100644, so that it renders with git headers."""
    a = _split_with_ends(old or "")
    b = _split_with_ends(new or "")
    hunks = []
    matcher = difflib.SequenceMatcher(None, [t + e for t, e in a], [t + e for t, e in b],
                                      autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        lines = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [Line(" ", t, e) for t, e in a[i1:i2]]
                continue
            lines += [Line("-", t, e) for t, e in a[i1:i2]]
            lines += [Line("+", t, e) for t, e in b[j1:j2]]
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        hunks.append(Hunk(i1 + 1 if i2 > i1 else i1, i2 - i1, j1 + 1 if j2 > j1 else j1, j2 - j1,
                          tuple(lines)))
    return Edit((FilePatch(None if old is None else path, None if new is None else path,
                           tuple(hunks), old_mode="100644" if new is None else None,
                           new_mode="100644" if old is None else None),))


def _split_with_ends(text: str) -> list[tuple[str, str]]:
    """Text -> [(line without ending, ending)], ending "" for a last line without newline."""
    parts = text.split("\n")
    last = parts.pop()
    lines = [(p[:-1], "\r\n") if p.endswith("\r") else (p, "\n") for p in parts]
    if last:
        lines.append((last, ""))
    return lines


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")


def recount(text: str) -> str:
    """`text` with every hunk header's line counts recomputed from the hunk's lines.

    For model output: the decoding grammar fixes a diff's shape but cannot count, and a small model
    often miscounts. A hunk runs from its header to the next `@@ ` or `diff --git ` line (the shape
    the grammar allows: the first file's `---`/`+++` headers come before any hunk). Start lines are
    kept; the applier searches from them.
    """
    lines = text.split("\n")
    out: list[str] = []
    header_at = -1
    old = new = 0

    def close() -> None:
        if header_at >= 0:
            match = _HUNK_HEADER.match(out[header_at])
            out[header_at] = f"@@ -{match[1]},{old} +{match[2]},{new} @@{match[3]}"

    for line in lines:
        if line.startswith("@@ ") and _HUNK_HEADER.match(line):
            close()
            header_at, old, new = len(out), 0, 0
        elif line.startswith("diff --git "):
            close()
            header_at = -1
        elif header_at >= 0:
            if line.startswith((" ", "-")):
                old += 1
            if line.startswith((" ", "+")):
                new += 1
        out.append(line)
    close()
    return "\n".join(out)


def looks_like(text: str) -> bool:
    head = text.lstrip()
    return (head.startswith("@@ -") or head.startswith(_GIT_HEADER)
            or re.search(r"^--- [^\n]*\n\+\+\+ ", text, re.MULTILINE) is not None
            or re.search(r"^diff --git ", text, re.MULTILINE) is not None)


# ---------------------------------------------------------------------------------------- apply

def apply(files: Files, edit: Edit, *, target: str | None = None,
          partial: bool = False) -> list[FileChange]:
    """The changes the edit makes; raises ApplyError naming the file, hunk and line that failed."""
    return apply_with_report(files, edit, target=target, partial=partial).changes


def apply_with_report(files: Files, edit: Edit, *, target: str | None = None,
                      partial: bool = False) -> Applied:
    """`apply`, plus a note for every hunk placed at an offset or with fuzz."""
    if target is not None and len(edit.files) != 1:
        raise ApplyError(f"a target file needs a diff of one file; this one changes "
                         f"{len(edit.files)}: {', '.join(fp.name for fp in edit.files)}")
    staging = Staging(files)
    notes: list[HunkNote] = []
    for fp in edit.files:
        try:
            _apply_file(staging, fp, target, notes)
        except EditError as exc:
            if not partial:
                raise
            raise ApplyError(exc.message, applied=staging.changes(), file=exc.file, line=exc.line,
                             hunk=exc.hunk) from exc
    return Applied(staging.changes(), notes)


def _apply_file(staging: Staging, fp: FilePatch, target: str | None,
                notes: list[HunkNote]) -> None:
    """Stage one file's change; nothing is staged unless every hunk fits."""
    if target is None and UNNAMED in (fp.source, fp.target):
        raise ApplyError("the diff names no file (it starts with a hunk): give the target file")
    if fp.is_new:
        path = target or fp.target
        if staging.exists(path):
            raise ApplyError("the diff creates this file, but it already exists", file=path)
        staging.write(path, _patch_text("", fp.hunks, path, notes))
        return
    if target is not None:
        path = dest = target
    elif fp.is_deleted or fp.is_rename:
        path, dest = fp.source, fp.target
    else:  # like GNU patch: the old name when that file exists, else the new one
        path = fp.source if fp.source == fp.target or staging.exists(fp.source) else fp.target
        dest = path
    text = _patch_text(staging.read(path).text, fp.hunks, path, notes)
    if fp.is_deleted:
        if text:
            left = len(_split_with_ends(text))
            raise ApplyError(f"the diff deletes this file, but {left} line(s) would remain: its "
                             "hunks must remove the whole content", file=path)
        staging.delete(path)
    elif dest != path:
        if staging.exists(dest):
            raise ApplyError(f"cannot rename {path} to {dest}: {dest} already exists", file=path)
        staging.move(path, dest, text)
    else:
        staging.write(path, text)


def _patch_text(text: str, hunks: tuple[Hunk, ...], path: str, notes: list[HunkNote]) -> str:
    """Apply the hunks, in order, to one file's text."""
    lines = _split_with_ends(text)
    contents = [t for t, _ in lines]
    file_newline = newline_of(text) if "\n" in text else ""
    out: list[tuple[str, str]] = []
    copied = 0  # lines[:copied] are already in out (or replaced)
    carried = 0  # offset of the previous hunk, tried first for the next (as GNU patch does)
    prev_stated_start = 0
    for number, hunk in enumerate(hunks, 1):
        stated = hunk.source_start - 1 if hunk.source_len else hunk.source_start
        if number > 1 and stated < prev_stated_start:
            raise ApplyError(f"hunk {number} ({hunk.header}) precedes hunk {number - 1}, which starts at line "
                             f"{prev_stated_start + 1}; hunks must be in file order", file=path, line=stated + 1,
                             hunk=number)
        prev_stated_start = stated
        # A header that starts inside the previous hunk is a miscount (a model's line numbers are guesses): the
        # hunk is sought past the previous one, as any other offset; its lines are never matched twice.
        place = _locate(contents, hunk, stated + carried, copied)
        if place is None:
            raise ApplyError(_mismatch(contents, hunk, stated, copied), file=path,
                             line=stated + 1, hunk=number)
        start, fuzz, drop_lead, drop_trail = place
        carried = start - stated
        if carried or fuzz:
            notes.append(HunkNote(path, number, stated + 1, start + 1, fuzz))
        body = list(hunk.lines[drop_lead:len(hunk.lines) - drop_trail])
        region_start = start + drop_lead
        out += lines[copied:region_start]
        copied = region_start
        # An added line ends like the file line before it, so CRLF and mixed files keep their
        # endings; where the file has no ending to copy (a new or one-line file), like the diff's.
        nearby = lines[region_start - 1][1] if region_start else file_newline
        for line in body:
            if line.kind == "+":
                out.append((line.text, nearby or line.eol))
                continue
            nearby = lines[copied][1] or nearby
            if line.kind == " ":
                out.append(lines[copied])
            copied += 1
        last_new = [line for line in body if line.kind != "-"]
        if copied == len(lines) and last_new:
            # the hunk reaches the end of the file: the diff decides about the final newline
            final_text, final_eol = out[-1]
            out[-1] = (final_text, "" if last_new[-1].no_newline else (final_eol or nearby or "\n"))
    out += lines[copied:]
    # a line written without ending (the old last line) that is no longer last needs one
    return "".join(content + (eol or file_newline or "\n") for content, eol in out[:-1]) \
        + "".join(content + eol for content, eol in out[-1:])


def _trims(hunk: Hunk) -> list[tuple[int, int, int]]:
    """(fuzz, leading, trailing) context lines to ignore, in the order to try them.

    Fuzz F ignores up to F leading and F trailing context lines but always keeps one on each side;
    a hunk with context on one side only gets no fuzz (it sits at the start or end of the file)."""
    kinds = [line.kind for line in hunk.lines]
    lead = next((i for i, k in enumerate(kinds) if k != " "), len(kinds))
    trail = next((i for i, k in enumerate(reversed(kinds)) if k != " "), 0)
    trims = [(0, 0, 0)]
    if lead and trail:
        for fuzz in range(1, MAX_FUZZ + 1):
            trim = (fuzz, min(fuzz, lead - 1), min(fuzz, trail - 1))
            if trim[1:] != trims[-1][1:]:
                trims.append(trim)
    return trims


def _locate(contents: list[str], hunk: Hunk, guess: int, lo: int):
    """(start of the hunk in the file, fuzz, leading and trailing lines ignored), or None.

    Each fuzz level searches the whole file, nearest offset first, later offsets before earlier
    ones (GNU patch's order); never before `lo`, where the previous hunk ended."""
    old = [line.text for line in hunk.old]
    for fuzz, drop_lead, drop_trail in _trims(hunk):
        pattern = old[drop_lead:len(old) - drop_trail]
        found = _find(contents, pattern, guess + drop_lead, lo)
        if found is not None:
            return found - drop_lead, fuzz, drop_lead, drop_trail
    return None


def _find(contents: list[str], pattern: list[str], guess: int, lo: int) -> int | None:
    size = len(pattern)
    hi = len(contents) - size
    if not pattern:  # an insertion without context: only where the header says
        return guess if lo <= guess <= len(contents) else None
    first = pattern[0]
    # From a header's line number far outside the file, walking out one line at a time would take
    # for ever; starting at the nearest possible line visits the same places in the same order.
    guess = min(max(guess, lo), max(hi, lo))
    distance = 0
    while guess + distance <= hi or guess - distance >= lo:
        for at in (guess + distance, guess - distance) if distance else (guess,):
            if lo <= at <= hi and contents[at] == first and contents[at:at + size] == pattern:
                return at
        distance += 1
    return None


def _mismatch(contents: list[str], hunk: Hunk, stated: int, lo: int) -> str:
    """What did not match at the stated line, for the error message."""
    old = [line.text for line in hunk.old]
    tried = ("it was not found elsewhere in the file either (offset search"
             + (", fuzz 1-2)" if len(_trims(hunk)) > 1 else
                "; no fuzz: the hunk has context on one side only)"))
    if stated > len(contents):
        return (f"{hunk.header} starts past the end of the file ({len(contents)} lines); "
                + tried)
    for k, expected in enumerate(old):
        at = stated + k
        if at >= len(contents):
            return (f"{hunk.header} does not match at line {stated + 1}: line {at + 1} should "
                    f"be {expected!r} but the file ends after line {len(contents)}; " + tried)
        if contents[at] != expected:
            return (f"{hunk.header} does not match at line {stated + 1}: line {at + 1} should "
                    f"be {expected!r} but is {contents[at]!r}; " + tried)
    return (f"{hunk.header} matches at line {stated + 1} only, which overlaps the previous "
            f"hunk (it ends at line {lo}); hunks must not overlap")
