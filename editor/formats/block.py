"""Block edits: rewrite, insert or delete whole units of one file, named by their first line.

    *** Replace: def load_config(path):
    def load_config(path, strict=False):
        ...the unit's whole new text...
    *** Insert after: class Loader:
    def helper():
        ...a new unit, placed after the named one...
    *** Delete: def old_helper():
    *** End

A model rewriting a function gets it right far more often than it gets a line diff right (no offsets,
no context lines to copy exactly, no fragmented hunks), so the model never types old text and never
counts: it names a unit and writes new text. The units come from tree-sitter:

- code: top-level statements (functions, classes, imports, assignments, comments...) and the members
  of classes (methods, fields), recursively. A decorated definition is named by its `def`/`class`
  line and its text includes the decorators.
- Markdown: sections (a heading and everything under it, subsections included), named by the
  heading line, and the blocks in them (paragraphs, lists, code blocks...).
- anything else: paragraphs, runs of non-blank lines.

A unit's name is its first line without surrounding whitespace; when several units share a first
line, the second is named `<line> #2`, the third `<line> #3`, in file order. Every name refers to the
file before the edit, so the operations do not depend on each other's order; they must not overlap.

New text that is only a Python unit's body keeps the unit's header; new text that is only its header
(the new `def` line, ending in ':') keeps its body.

Old text is implied, so an edit serialises to an apply_patch (V4A) patch (`to_apply_patch`), which the
existing applier, validation and hooks take unchanged; `apply` gives the same text that patch does.
`edit_between(before, after, path)` goes the other way: the block edit that turns one text into another
(training targets, training/edit_render.py).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ApplyError, NoChangeError, ParseError
from ..files import FileChange, Files, Staging, newline_of
from ..validation import detect_language, parser_for
from . import apply_patch

REPLACE = "*** Replace: "
INSERT = "*** Insert after: "
DELETE = "*** Delete: "
END = "*** End"
KINDS = {REPLACE: "replace", INSERT: "insert", DELETE: "delete"}
BLANK_RUN = re.compile(r"\n(?:[ \t]*\r?\n)+")  # a line end and the blank lines after it
MARKER = "*** "  # a body line cannot start with it: the grammar keeps markers and text apart

# Languages whose tree-sitter tree has no useful top-level units (one object, one document): their
# files are cut into paragraphs, as text is.
PARAGRAPH_LANGUAGES = {"json", "yaml", "toml", "html"}
# Nodes whose body holds units of their own (methods, fields), by language family.
CLASS_TYPES = {"class_definition", "class_declaration", "abstract_class_declaration", "class",
               "interface_declaration", "class_specifier", "struct_specifier", "impl_item",
               "trait_item"}
# Wrappers whose unit is named by the definition inside: `@decorator` lines, `export`.
WRAPPED_FIELDS = ("definition", "declaration")
# A Python definition line, its name (as far as written) and the character after it, if any.
DEFINITION = re.compile(r"[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+(\w*)(.?)")
# An instruction that asks for a new name in words ("rename", "name it ..."): a Replace may rename freely.
RENAME_ASKED = re.compile(r"\b(?:re)?nam(?:e|ing)", re.IGNORECASE)
QUOTED_NAME = re.compile(r"""["'`]([A-Za-z_]\w*)["'`]""")
CODE_LIKE_NAME = re.compile(r"\b[A-Za-z_]*(?:_|\d|[A-Z])\w*")  # an underscore, a digit or a capital letter


@dataclass(frozen=True)
class Op:
    """Replace the unit `unit` by `lines`, insert `lines` after it, or delete it (no lines)."""

    kind: Literal["replace", "insert", "delete"]
    unit: str
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edit:
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Unit:
    """Lines `start` to `end` (0-based, end excluded) of the file, named `name`."""

    name: str
    start: int
    end: int


# ---------------------------------------------------------------------------------------------
# Units


def units(text: str, path: str) -> list[Unit]:
    """The units of `text`, the file `path` (its language from its name or shebang, as `apply`
    sees it), in file order, a container before its members."""
    lines, _ = apply_patch.split_lines(text)
    language = detect_language(path, text)
    if language is None or language in PARAGRAPH_LANGUAGES:
        spans = _paragraphs(lines)
    else:
        root = parser_for(language).parse(text.encode("utf-8")).root_node
        spans = list(_node_spans(root, lines, header_row=-1))
    named: list[Unit] = []
    taken: set[str] = set()
    for name_row, start, end in spans:
        base = name = lines[name_row].strip()
        number = 1
        while name in taken:  # a loop, not a count: the file may have a line "<base> #2" of its own
            number += 1
            name = f"{base} #{number}"
        taken.add(name)
        named.append(Unit(name, start, end))
    return named


def unit_names(text: str, path: str) -> list[str]:
    """The names a block edit of `text`, the file `path`, may use: what
    `grammars.document_grammar("block", units=...)` offers the model."""
    return [unit.name for unit in units(text, path)]


def unit_order(text: str, path: str) -> tuple[list[str], list[int]]:
    """The unit names (as `unit_names`) and, for each unit, the index of the first unit past its end
    (its members skipped): what the grammar needs to keep the operations top to bottom."""
    found = units(text, path)
    after = [next((j for j in range(i + 1, len(found)) if found[j].start >= unit.end), len(found))
             for i, unit in enumerate(found)]
    return [unit.name for unit in found], after


def _paragraphs(lines: list[str]) -> list[tuple[int, int, int]]:
    spans, start = [], None
    for i, line in enumerate(lines + [""]):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            spans.append((start, start, i))
            start = None
    return spans


def _node_spans(node, lines: list[str], header_row: int):
    """(name row, first row, end row) of each unit among `node`'s children, each followed by its
    members'. A child starting on `header_row` (the container's first line) or on the last line of
    the unit before it shares a line with that unit and stays part of it."""
    siblings: list[list] = []  # [name row, first row, end row, node holding its members or None]
    for child in node.named_children:
        if child.type.endswith("heading") or child.start_point.row <= header_row:
            continue  # a section's heading is its first line, not a unit of its own
        start, end = child.start_point.row, _end_row(child, lines)
        if siblings and start < siblings[-1][2]:
            siblings[-1][2] = max(siblings[-1][2], end)
            continue
        inner = _definition(child)
        members = child if child.type == "section" else (
            inner.child_by_field_name("body") if inner.type in CLASS_TYPES else None)
        siblings.append([inner.start_point.row, start, end, members])
    for name_row, start, end, members in siblings:
        yield name_row, start, end
        if members is not None:
            yield from _node_spans(members, lines, name_row)


def _definition(node):
    """The definition a wrapper holds (`@decorator` lines, `export`), else the node itself."""
    for field in WRAPPED_FIELDS:
        inner = node.child_by_field_name(field)
        if inner is not None:
            return _definition(inner)
    return node


def _end_row(node, lines: list[str]) -> int:
    """The row after the node's last non-blank line (Markdown blocks end past their blank lines)."""
    start = node.start_point.row
    end = max(node.end_point.row + (1 if node.end_point.column else 0), start + 1)
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


# ---------------------------------------------------------------------------------------------
# Parsing and rendering


def looks_like(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    return first.startswith(tuple(KINDS))


def parse(text: str) -> Edit:
    """The edit's operations. Raises ParseError naming the line."""
    ops: list[Op] = []
    kind = name = None
    body: list[str] = []
    opened = 0  # the line number of the operation being read

    def close() -> None:
        if kind is None:
            return
        while body and not body[-1].strip():
            body.pop()
        if kind == "delete" and body:
            raise ParseError(f"'{DELETE.strip()}' takes no lines: its unit goes", line=opened + 1)
        if kind != "delete" and not body:
            raise ParseError(f"no lines for {name!r}: write the unit's new text in full, or "
                             f"delete it with '{DELETE.strip()}'", line=opened)
        ops.append(Op(kind, name, tuple(body)))

    lines = [line.removesuffix("\r") for line in text.split("\n")]
    for number, line in enumerate(lines, 1):
        marker = next((m for m in KINDS if line.startswith(m)), None)
        if marker is not None:
            close()
            kind, name, body, opened = KINDS[marker], line[len(marker):].strip(), [], number
            if not name:
                raise ParseError("no unit named after the marker", line=number)
        elif line.rstrip() == END:
            close()
            if any(rest.strip() for rest in lines[number:]):
                raise ParseError(f"text after '{END}'", line=number + 1)
            if not ops:
                raise ParseError("no operation: expected '*** Replace: <unit>', "
                                 "'*** Insert after: <unit>' or '*** Delete: <unit>'", line=number)
            return Edit(tuple(ops))
        elif line.startswith(MARKER):
            raise ParseError(f"unknown marker {line!r}: expected '*** Replace: <unit>', "
                             f"'*** Insert after: <unit>', '*** Delete: <unit>' or '{END}'",
                             line=number)
        elif kind is not None:
            if body or line.strip():  # blank lines before a unit's text are spacing, not text
                body.append(line)
        elif line.strip():
            raise ParseError(f"expected '*** Replace: <unit>', '*** Insert after: <unit>' or "
                             f"'*** Delete: <unit>', found {line!r}", line=number)
    raise ParseError(f"missing '{END}' after the last operation", line=len(lines))


def closed(answer: str) -> str:
    """`answer` with the ends a block edit of code may also have (grammars.CODE_BLOCK_END) made its end line: a
    closing fence in place of it, or "*** End" written on at the end of the last line of code. Any other answer
    is returned as it is."""
    lines = answer.rstrip().split("\n")
    fenced = lines[-1].strip() == "```"
    if fenced:
        lines.pop()
    last = lines[-1].rstrip() if lines else ""
    if last.endswith(END) and last != END:  # "    return x *** End"
        code = last.removesuffix(END).rstrip()
        lines[-1:] = [code, END] if code.strip() else [END]
    elif not fenced:
        return answer
    elif last != END:
        lines.append(END)
    return "\n".join(lines) + "\n"


def name_check(instruction: str):
    """The document check a model's block edit of Python code is decoded under (`prefix_ok` bound to the names
    `instruction` offers), or None where the instruction asks for a rename."""
    if RENAME_ASKED.search(instruction):
        return None
    offered = QUOTED_NAME.findall(instruction) + CODE_LIKE_NAME.findall(instruction)
    return functools.partial(prefix_ok, frozenset(offered))


def prefix_ok(new_names: frozenset[str], partial_edit_text: str) -> bool:
    """False when the Replace being written gives the definition it rewrites a name that is neither its own nor
    one of `new_names`: the first definition line of its text (after blank, decorator and comment lines) must
    name the unit as its `*** Replace:` line does, or a name the instruction offers, and a name still being
    written must be on its way to one of them.

    Asked to fix a function, the 1.5B renamed it (`frequency_Of_Smallest` -> `frequency_of_smallest`,
    `check_Even_Odd_Parity` -> `check_Even_Parity`), and every caller broke (docs/BENCHMARKS.md, History). The
    applier takes renames (a person's edit is not wrong); only the model is held to the name."""
    lines = partial_edit_text.split("\n")
    complete = len(lines) - 1  # the last line may still be being written
    opened = [i for i in range(complete) if lines[i].startswith(REPLACE)]
    return all(_keeps_name(lines, i, new_names) for i in opened)


def _keeps_name(lines: list[str], opened: int, new_names: frozenset[str]) -> bool:
    """`prefix_ok` for the Replace whose marker is lines[opened]."""
    own = DEFINITION.match(lines[opened][len(REPLACE):])
    if own is None or not own.group(2):  # the unit is no definition
        return True
    text = (line for line in lines[opened + 1:] if line.strip() and not line.lstrip().startswith(("@", "#")))
    first = next(text, None)
    written = DEFINITION.match(first) if first is not None and not first.startswith(MARKER) else None
    if written is None:
        return True
    name, following = written.groups()
    names = new_names | {own.group(1)}
    if not following or following == "\ufffd":  # the name may go on (U+FFFD: a character not yet complete)
        return any(allowed.startswith(name) for allowed in names)
    return name in names


def render(edit: Edit) -> str:
    """Canonical text; parse(render(e)) == e."""
    markers = {kind: marker for marker, kind in KINDS.items()}
    out = []
    for op in edit.ops:
        out.append(markers[op.kind] + op.unit)
        out += op.lines
    out.append(END)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Applying


def apply_text(text: str, edit: Edit, path: str) -> str:
    """`text`, the file `path`, after the edit, in the file's own line ending. Raises ApplyError
    naming a unit the file does not have, or two operations that overlap."""
    lines, ends_with_newline = apply_patch.split_lines(text)
    by_name = {unit.name: unit for unit in units(text, path)}
    # (unit's lines, lines replaced, new lines, operation number): an insertion replaces no line, a
    # deletion also the blank lines beside its unit
    cuts = []
    for number, op in enumerate(edit.ops, 1):
        unit = by_name.get(op.unit)
        if unit is None:
            raise ApplyError(f"no unit {op.unit!r} in the file; a unit is named by its first line "
                             f"without indentation{_closest_name(op.unit, by_name)}",
                             file=path, hunk=number)
        indent = re.match(r"\s*", lines[unit.start]).group()
        span = (unit.start, unit.end)
        if op.kind == "replace":
            new = _indented(op.lines, indent)
            header = _header(lines, unit, op.lines)
            cuts.append((span, span, header + new if header else new + _body(lines, unit, op.lines), number))
        elif op.kind == "insert":
            at = (unit.end, unit.end)
            cuts.append((at, at, [""] * _gap(lines, unit) + _indented(op.lines, indent), number))
        else:
            cuts.append((span, _deleted(lines, unit), [], number))
    cuts.sort(key=lambda cut: cut[0])  # stable: inserts after one unit keep their order
    for before, after in zip(cuts, cuts[1:]):
        if after[0][0] < before[0][1]:
            first, second = sorted((before[3], after[3]))
            raise ApplyError(f"operations {first} ({edit.ops[first - 1].unit!r}) and {second} "
                             f"({edit.ops[second - 1].unit!r}) overlap: a unit and a unit inside "
                             "it, or one unit twice; rewrite the outer unit only", file=path,
                             hunk=second)
    new_lines, done = [], 0  # lines[:done] are dealt with
    for _, (start, end), new, _ in cuts:
        # Two deletions may both claim the blank lines between their units: the first takes them.
        new_lines += lines[done:start] + new
        done = max(done, end)
    new_lines += lines[done:]
    if not new_lines:
        return ""
    # As apply_patch: a missing final newline stays missing unless the edit reaches the last line.
    reaches_end = any(end >= len(lines) for _, (_, end), _, _ in cuts)
    newline = newline_of(text)
    return newline.join(new_lines) + (newline if ends_with_newline or reaches_end else "")


def _closest_name(name: str, by_name: dict[str, Unit]) -> str:
    close = difflib.get_close_matches(name, by_name, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _header_row(lines: list[str], unit: Unit) -> int | None:
    """The row of the unit's header when it is one line ending in ':' (`def f(x):`, `class C:`), else None."""
    names = {unit.name, re.sub(r" #\d+$", "", unit.name)}  # a duplicate's name carries its number
    row = next((r for r in range(unit.start, unit.end) if lines[r].strip() in names), None)
    return row if row is not None and lines[row].rstrip().endswith(":") else None


def _header(lines: list[str], unit: Unit, new: tuple[str, ...]) -> list[str]:
    """The unit's own lines up to its header (decorators, `def ...:`) when `new` is only a new body: every
    line of it indented deeper than a one-line header ending in ':'. Small models often write just the
    body of the function they were asked to change; kept, the header makes that a whole unit again."""
    row = _header_row(lines, unit)
    if row is None:
        return []
    depth = len(lines[row]) - len(lines[row].lstrip())
    written = [line for line in new if line.strip()]
    if written and all(len(line) - len(line.lstrip()) > depth for line in written):
        return lines[unit.start:row + 1]
    return []


def _body(lines: list[str], unit: Unit, new: tuple[str, ...]) -> list[str]:
    """The unit's own lines after its header when `new` is only a new header: its last line ends in ':',
    so nothing follows it, where the unit has a one-line header ending in ':'. Asked to change a signature,
    models write just the new `def` line (the 1.5B model on 3 of 60 EditEval block edits, each rejected
    for a missing body); kept, the body makes that a whole unit again."""
    row = _header_row(lines, unit)
    written = [line for line in new if line.strip()]
    if row is None or not written or not written[-1].rstrip().endswith(":"):
        return []
    return lines[row + 1:unit.end]


def _indented(lines: tuple[str, ...], indent: str) -> list[str]:
    """A unit's new text at its place: written flush left, it gets the unit's indentation (a method
    written as if it were a function)."""
    if not indent or lines[0][:1].isspace():
        return list(lines)
    return [indent + line if line.strip() else line for line in lines]


def _blank_run(lines: list[str], start: int, step: int) -> int:
    """How many blank lines there are from `start` on, going `step` (1: down, -1: up)."""
    count = 0
    while 0 <= start + count * step < len(lines) and not lines[start + count * step].strip():
        count += 1
    return count


def _gap(lines: list[str], unit: Unit) -> int:
    """Blank lines to put between a unit and one inserted after it: the smaller non-zero of the runs
    above and below the unit (one method apart, two functions apart...)."""
    runs = [run for run in (_blank_run(lines, unit.start - 1, -1), _blank_run(lines, unit.end, 1))
            if run]
    return min(runs, default=0)


def _deleted(lines: list[str], unit: Unit) -> tuple[int, int]:
    """The lines a deleted unit takes with it: the blank lines above it, or below it when it is the
    first thing in the file, so that its neighbours keep their spacing."""
    above = _blank_run(lines, unit.start - 1, -1)
    if unit.start - above > 0:
        return unit.start - above, unit.end
    return unit.start, unit.end + _blank_run(lines, unit.end, 1)


def apply(files: Files, edit: Edit, *, target: str | None = None,
          partial: bool = False) -> list[FileChange]:
    """Apply `edit` to the file `target`. A block edit changes one file, so it applies whole or not
    at all: `partial` changes nothing."""
    if target is None:
        raise ApplyError("a block edit does not name its file: give the target file")
    staging = Staging(files)
    staging.write(target, apply_text(staging.read(target).text, edit, target))
    return staging.changes()


def to_apply_patch(edit: Edit, text: str, path: str) -> str:
    """The edit as an apply_patch (V4A) patch of `path`, whose text is `text`: its old lines are the
    file's, so the usual applier, validation and hooks can take it. Applying the patch gives
    `apply_text(text, edit, path)`."""
    new = apply_text(text, edit, path)
    if new == text:
        raise NoChangeError("the edit changes nothing", file=path)
    return apply_patch.render(apply_patch.diff(text, new, path))


# ---------------------------------------------------------------------------------------------
# Making block edits


@dataclass(frozen=True)
class _Change:
    """Lines old[i1:i2] became new[j1:j2] (difflib's opcode, not "equal")."""

    i1: int
    i2: int
    j1: int
    j2: int

    @property
    def delta(self) -> int:
        return (self.j2 - self.j1) - (self.i2 - self.i1)


@dataclass
class _Group:
    """A run of sibling units, first to last (indices into the unit list), rewritten as one, and the changes
    that fall in it; with `insert_after`, the changes are new lines placed after unit `first` instead."""

    first: int
    last: int
    changes: list[_Change]
    insert_after: bool = False


def edit_between(before: str, after: str, path: str, *, any_blank_runs: bool = False) -> Edit:
    """A block edit of `before`, the file `path`, that `apply_text` turns into `after` exactly: each changed
    unit replaced, each new unit inserted after the unit above it, each removed unit deleted. A change that
    no single unit holds (it spans units, or touches the lines between them) rewrites the run of units it
    touches; where that cannot say it exactly either, the top-level units around it are rewritten.
    `any_blank_runs`: `apply_text` may give `after` with other numbers of blank lines in a row (an operation's
    text has no blank lines at its ends, so new units come spaced as the applier spaces them).
    ValueError when no block edit gives `after` (a change outside every unit, at a file's blank top)."""
    if before == after:
        raise ValueError("before and after are equal: there is nothing to edit")
    old, _ = apply_patch.split_lines(before)
    new, _ = apply_patch.split_lines(after)
    found = units(before, path)
    parents = unit_parents(found)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    changes = [_Change(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]
    # Finest first: the smallest unit holding each change, new units inserted, removed ones deleted; then
    # runs of whole units rewritten; then runs of top-level units.
    for fine, top in ((True, False), (False, False), (False, True)):
        groups = [_group_of(change, found, parents, old, fine, top) for change in changes]
        if None in groups:
            continue
        merged = _merged(groups, found, parents)
        if merged is None:
            continue
        edit = Edit(tuple(op for group in merged for op in _ops(group, found, parents, changes, new)))
        if edit.ops and _applies_to(before, edit, path, after, any_blank_runs):
            return edit
    raise ValueError("no block edit turns the old text into the new one (a change outside every unit)")


def _applies_to(before: str, edit: Edit, path: str, after: str, any_blank_runs: bool) -> bool:
    try:
        result = apply_text(before, edit, path)
    except ApplyError:
        return False
    if any_blank_runs:
        return BLANK_RUN.sub("\n\n", result) == BLANK_RUN.sub("\n\n", after)
    return result == after


def unit_parents(found: list[Unit]) -> list[int]:
    """For each unit, the index of the smallest unit around it (-1: the file)."""
    parents, open_units = [], []
    for index, unit in enumerate(found):
        while open_units and not (found[open_units[-1]].start <= unit.start
                                  and unit.end <= found[open_units[-1]].end):
            open_units.pop()
        parents.append(open_units[-1] if open_units else -1)
        open_units.append(index)
    return parents


def _holds(unit: Unit, change: _Change) -> bool:
    """Whether the change lies within the unit (an insertion strictly inside it, not at its edges)."""
    if change.i1 == change.i2:
        return unit.start < change.i1 < unit.end
    return unit.start <= change.i1 and change.i2 <= unit.end


def _group_of(change: _Change, found: list[Unit], parents: list[int], old: list[str], fine: bool,
              top: bool) -> _Group | None:
    """The run of units that rewrites `change`: the smallest unit holding it, else the siblings it touches
    (with the units on either side when it reaches into the blank lines between them). `fine`: a new unit
    between units is inserted, removed whole units are deleted; `top`: top-level units only. None when no
    run holds it."""
    holders = [i for i, unit in enumerate(found) if _holds(unit, change) and not (top and parents[i] != -1)]
    container = holders[-1] if holders else -1  # units come outer first: the last holder is the smallest
    siblings = [i for i in range(len(found)) if parents[i] == container]
    if container != -1 and (not siblings or top):
        return _Group(container, container, [change])
    starts_before = [i for i in siblings if found[i].end <= change.i1]
    if fine and change.i1 == change.i2 and starts_before:
        return _Group(starts_before[-1], starts_before[-1], [change], insert_after=True)
    touched = [i for i in siblings if found[i].start < max(change.i2, change.i1 + 1) and change.i1 < found[i].end]
    if fine and change.j1 == change.j2 and touched and _only_units(change, [found[i] for i in touched], old):
        return _Group(touched[0], touched[-1], [change])  # whole units removed: deleted
    run = touched or starts_before[-1:] + [i for i in siblings if found[i].start >= change.i2][:1]
    if run and change.i1 < found[run[0]].start and starts_before and starts_before[-1] not in run:
        run = [starts_before[-1]] + run
    after_run = [i for i in siblings if run and found[i].start >= found[run[-1]].end]
    if run and change.i2 > found[run[-1]].end and after_run:
        run = run + after_run[:1]
    if run and found[run[0]].start <= change.i1 and change.i2 <= found[run[-1]].end:
        return _Group(run[0], run[-1], [change])
    return _Group(container, container, [change]) if container != -1 else None


def _only_units(change: _Change, run: list[Unit], old: list[str]) -> bool:
    """Whether the lines the change removes are the whole units of `run` and blank lines."""
    inside = {row for unit in run for row in range(unit.start, unit.end)}
    return all(change.i1 <= unit.start and unit.end <= change.i2 for unit in run) and all(
        row in inside or not old[row].strip() for row in range(change.i1, change.i2))


def _span(group: _Group, found: list[Unit]) -> tuple[int, int]:
    if group.insert_after:
        end = found[group.first].end
        return end, end
    return found[group.first].start, found[group.last].end


def _merged(groups: list[_Group], found: list[Unit], parents: list[int]) -> list[_Group] | None:
    """The groups in file order, a group inside another (or an insertion after a unit another group
    rewrites) folded into it, overlapping runs of the same siblings joined. None when two overlap otherwise."""
    merged: list[_Group] = []
    for group in sorted(groups, key=lambda g: (_span(g, found)[0], -_span(g, found)[1])):
        if not merged:
            merged.append(group)
            continue
        last = merged[-1]
        (start, end), (last_start, last_end) = _span(group, found), _span(last, found)
        if group.insert_after and last.insert_after and group.first == last.first:
            last.changes += group.changes
        elif group.insert_after and last_start <= start <= last_end and not last.insert_after:
            last.changes += group.changes  # the new unit joins the rewritten one above it
        elif end <= last_end and start >= last_start and not (start == end == last_end) and not last.insert_after:
            last.changes += group.changes
        elif start < last_end:
            if parents[group.first] != parents[last.first] or last.insert_after or group.insert_after:
                return None
            last.last = max(last.last, group.last, key=lambda i: found[i].end)
            last.changes += group.changes
        else:
            merged.append(group)
    return merged


def _ops(group: _Group, found: list[Unit], parents: list[int], changes: list[_Change],
         new: list[str]) -> list[Op]:
    """The operations of one group: its run's new text (the new file's lines where the run stood)
    replacing the run's first unit and the rest deleted, or a new unit inserted."""
    name = found[group.first].name
    if group.insert_after:
        lines = _trimmed(new[min(c.j1 for c in group.changes):max(c.j2 for c in group.changes)])
        return [Op("insert", name, lines)] if lines else []
    start, end = _span(group, found)
    new_start = start + sum(c.delta for c in changes if c not in group.changes and c.i2 <= start)
    lines = _trimmed(new[new_start:new_start + end - start + sum(c.delta for c in group.changes)])
    run = [i for i in range(group.first, group.last + 1) if parents[i] == parents[group.first]]
    if not lines:
        return [Op("delete", found[i].name) for i in run]
    return [Op("replace", name, lines)] + [Op("delete", found[i].name) for i in run[1:]]


def _trimmed(lines: list[str]) -> tuple[str, ...]:
    """`lines` without the blank lines at either end (an operation's text has none there)."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return tuple(lines[start:end])
