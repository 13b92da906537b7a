"""Excerpts of long files: the units an instruction is about, shown to the model without the rest.

Asked to change one function of an 800-line file, a whole-file rewrite reads 800 lines and types them all
again, and the 0.5B model mostly drops most of them (docs/BENCHMARKS.md, long sets). An `excerpt` edit
shows the model only the file's imports and the top-level units the instruction is about (`focus`), as if they
were the whole file; the model rewrites them as it rewrites a short file, and `View.splice` puts the new lines
in place. Lines left out are never shown, so they are never changed or lost.

Nothing marks where lines are left out: with a marker line (`# ... (40 lines not shown)`) and a prompt saying
so, the 0.5B model changed nothing on 18 of 40 long HumanEvalFix items and passed 3; shown the excerpt as a
file, under the whole-file prompt, it changed something on all 40 and passed 5, as it does on the short items.

Which units: the instruction's words scored against each top-level unit (BM25 over the file's units; a unit
whose defined name the instruction says outright wins), the best one, and the units beside it that use a name
it defines or define a name it uses (a class and its subclass, a function and its caller).
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property

from .files import newline_of
from .formats import apply_patch, block

# The lines before the first unit that is not one of these are the file's header, always shown: an edit may
# need a new import.
HEADER_LINE = re.compile(r"\s*($|#|//|/\*|\*|\"\"\"|'''|import\b|from\b|use\b|package\b|require\b|using\b"
                         r"|extern crate\b|const \w+ = require\()")
HEADER_MAX_LINES = 40
# A line that starts a top-level statement: code at column 0 that does not close a bracket.
TOP_LEVEL_START = re.compile(r"[^\s)\]}]")
COMMENT_LINE = re.compile(r"\s*($|#|//|--|/\*|\*)")
# Lines this long tell whether an excerpt's rewrite kept a unit or left it out (`_kept`); shorter ones
# (`else:`, `pass`) are in every unit.
KEPT_LINE_MIN = 8
# An instruction that may mean units to go: an excerpt's rewrite may then leave out the units it names.
REMOVAL = re.compile(r"\b(delete|remove|drop|strip|eliminate|get rid of|clean up|trim|replace|merge|combine|refactor)",
                     re.I)
# Units beside the best one are added while the excerpt stays under this many lines (the best unit itself is
# always shown whole). The model rewrites every line shown: at 200, editeval-long's five slowest items were
# 190-200-line excerpts (~1,700 output tokens, 135-140 s each with the 1.5B); at 120 the longest is 125 lines,
# and 46 of the 60 items' own units are shown against 47 (`python -m bench.excerpts --max-lines 200,120`).
EXCERPT_MAX_LINES = 120
DEFINITION = re.compile(r"\b(?:def|class|function|fn|func|struct|enum|trait|interface|type|impl|module)\s+"
                        r"([A-Za-z_]\w*)")
ASSIGNMENT = re.compile(r"(?:export\s+)?(?:const\s+|let\s+|var\s+)?([A-Za-z_]\w*)\s*(?::[^=]*)?=[^=]")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CAMEL_PART = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# Words of instructions that say what to do, not where.
STOPWORDS = set("""the and for that this with from into onto should would could make makes change changes
modify modifies add adds remove removes use uses using fix fixes bug bugs code function functions method methods
class file instead also not are was were its it's all any each one two has have had can will new old them then
than there their when where which while what who why how does doing done only just more less so such very
return returns instruction rewrite update edit""".split())
BM25_K1, BM25_B = 1.2, 0.75
NAME_BONUS = 10.0  # a unit the instruction names outright beats any spread of common words
PART_BONUS = 5.0  # a unit whose name is part of a word of the instruction (Animal in create_animal)
# Without a unit named outright, the excerpt holds the best few (each with its neighbours) and the model,
# which understands the instruction better than word counts do, edits the one it means.
MAX_GROUPS = 3
# The unit the model picked (`focus(about=...)`) is shown alone, as a unit named outright is: shown beside the words'
# best units (in file order), the 1.5B edited one of those instead (editeval-long EditEval/20: asked to make "the
# function" return two lists, it picked filter_integers, then changed statistics.median_grouped shown beside it).
PICKED_GROUPS = 1


@dataclass(frozen=True)
class View:
    """The lines `spans` (0-based, end excluded, in file order, apart) of `text`: the excerpt."""

    text: str
    spans: tuple[tuple[int, int], ...]

    @cached_property
    def _split(self) -> tuple[list[str], bool]:
        return apply_patch.split_lines(self.text)

    @property
    def lines(self) -> list[str]:
        """The file's lines as block edits count them (only "\n" ends a line; a CRLF file's "\r"s dropped)."""
        return self._split[0]

    @cached_property
    def shown(self) -> tuple[int, ...]:
        """The indices of the file's lines the excerpt holds, in order."""
        return tuple(i for start, end in self.spans for i in range(start, end))

    @cached_property
    def excerpt(self) -> str:
        lines = self.lines
        return "".join(lines[i] + "\n" for i in self.shown)

    def excerpt_after(self, after: str) -> str | None:
        """The excerpt of `after` (the file changed) that `splice` turns into `after`: what a right answer about
        this excerpt is. None when the change touches lines the excerpt leaves out."""
        old, new = self.lines, apply_patch.split_lines(after)[0]
        shown, out = set(self.shown), []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
            if tag == "equal":
                out.extend(new[j1 + k] for k in range(i2 - i1) if i1 + k in shown)
            elif all(i in shown for i in range(i1, i2)) and (i1 < i2 or i1 - 1 in shown or i1 in shown):
                out.extend(new[j1:j2])
            else:
                return None
        candidate = "".join(line + "\n" for line in out)
        return candidate if self.splice(candidate) == after else None

    def splice(self, new_excerpt: str) -> str:
        """The file with the excerpt replaced by `new_excerpt`: each changed run of shown lines replaced in
        place, added lines placed after the shown line above them (before the first, at the excerpt's top),
        lines left out untouched."""
        lines, shown = self.lines, self.shown
        new = [line.removesuffix("\r") for line in new_excerpt.removesuffix("\n").split("\n")] if new_excerpt else []
        if new and shown and shown[-1] + 1 < len(lines):
            # The blank lines the excerpt ends with part it from lines left out, which the model never saw: an
            # answer that ends without them (a rewrite mostly does) keeps them.
            new += [""] * max(_blank_tail([lines[i] for i in shown]) - _blank_tail(new), 0)
        matcher = difflib.SequenceMatcher(None, [lines[i] for i in shown], new, autojunk=False)
        placed: dict[int, list[str]] = defaultdict(list)  # new lines to write before the file's line i
        deleted: set[int] = set()
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            deleted.update(shown[i1:i2])
            at = shown[i1] if i1 < i2 else shown[i1 - 1] + 1 if i1 else shown[0] if shown else 0
            # New lines written where shown lines meet across lines left out (a gap), or replacing a run
            # across one, go above the gap up to their first line that starts a top-level statement other
            # than an import or a comment, and below it from there. Placed all above, the head of a class
            # written around the function below the gap stayed above the lines left out, cut from its body
            # (editeval-long, the 1.5B model).
            start = j1
            for p in range(max(i1, 1), max(i2, i1 + 1)):
                if p < len(shown) and shown[p] != shown[p - 1] + 1:
                    split = next((j for j in range(start, j2) if TOP_LEVEL_START.match(new[j])
                                  and not HEADER_LINE.match(new[j])), j2)
                    placed[at].extend(new[start:split])
                    at, start = shown[p], split
            placed[at].extend(new[start:j2])
        out = []
        for i in range(len(lines) + 1):
            out.extend(placed.get(i, ()))
            if i < len(lines) and i not in deleted:
                out.append(lines[i])
        newline, ended = newline_of(self.text), self._split[1]
        return newline.join(out) + (newline if ended else "") if out else ""


def _blank_tail(lines: list[str]) -> int:
    """How many blank lines `lines` ends with."""
    count = 0
    while count < len(lines) and not lines[-1 - count].strip():
        count += 1
    return count


def units_kept(excerpt: str, answer: str, path: str, instruction: str = "") -> str:
    """`answer` (a rewrite of `excerpt`, the file `path`) with the top-level units it left out put back where
    they were: a unit the answer shows no sign of keeping (`_kept`), unless the `instruction` asks for a
    removal (REMOVAL) and names that unit. An answer that kept no unit is new code, and goes after them. A
    rewrite that leaves a unit out is a model that wrote only what it changed, not one that deletes: shown
    textwrap.py cut to dedent and its neighbours and asked to change dedent, the 0.5B model stopped after
    dedent, and the two functions after it would have been deleted.
    A removal word alone deletes nothing: "Modify the function to remove all nested structures" is about
    the function's body, and taken as leave to delete, it cost the two unnamed functions shown beside it."""
    old = apply_patch.split_lines(excerpt)[0]
    new = answer.removesuffix("\n").split("\n") if answer else []
    said = {line.strip() for line in new}
    top = top_units(excerpt, path)
    named = set(WORD.findall(instruction)) if REMOVAL.search(instruction) else set()
    written = {match.group(1) for line in new for match in [DEFINITION.search(line)] if match}
    owns = [{line.strip() for line in old[u.start:u.end] if len(line.strip()) >= KEPT_LINE_MIN} for u in top]
    units_having = Counter(line for own in owns for line in own)  # how many units have each line
    left_out = []
    for unit, own in zip(top, owns):
        defines = defined_names(old[unit.start:unit.end])
        if not _kept(unit, own, units_having, defines, said, written) and not defines & named:
            left_out.append(unit)
    if not left_out:
        return answer
    rows = set()
    for unit in left_out:  # the unit and the blank lines above it (below it, for the first)
        start, end = unit.start, unit.end
        while start > 0 and not old[start - 1].strip():
            start -= 1
        while start == 0 and end < len(old) and not old[end].strip():
            end += 1
        rows.update(range(start, end))
    # The answer rewrites the excerpt without those units: align it with that, and put each unit back whole
    # before the first line that followed it. Aligned with the whole excerpt instead, the answer's blank
    # lines matched blank lines inside a unit it left out, and its new code landed in the middle of that unit
    # (inside a docstring, between an `if` and its `else`).
    rest = [i for i in range(len(old)) if i not in rows]
    pending = sorted(rows)
    out: list[str] = []
    # The blank lines that followed the last unit put back, owed to the answer's next line unless that line is
    # blank itself: an answer of the one function it changed has none above it, and the units put back above
    # would otherwise run into it.
    owed: list[str] = []

    def put_back(before: int) -> None:  # the left-out lines above the excerpt's line `before`
        nonlocal owed
        row = None
        while pending and pending[0] < before:
            row = pending.pop(0)
            out.append(old[row])
        if row is not None:
            after = row + 1
            while after < len(old) and not old[after].strip() and after not in rows:
                after += 1
            owed = old[row + 1:after]

    def add(line: str) -> None:
        nonlocal owed
        if line.strip():
            out.extend(owed)
        owed = []
        out.append(line)

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, [old[i] for i in rest], new,
                                                        autojunk=False).get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                put_back(rest[i1 + k])
                add(new[j1 + k])
            continue
        put_back(rest[i1] if i1 < len(rest) else len(old))  # new code goes after a unit put back above it
        for line in new[j1:j2]:
            add(line)
    put_back(len(old))
    return "".join(line + "\n" for line in out)


def _kept(unit: block.Unit, own: set[str], units_having: Counter, defines: set[str], said: set[str],
          written: set[str]) -> bool:
    """Whether an answer whose lines (stripped) are `said`, defining the names `written`, kept `unit`, rewritten
    or not: it defines every name the unit defines (`defines`; `def f(*lists)` for `def f(a, b, c)`), or has,
    among the unit's telling lines (of its `own` lines, KEPT_LINE_MIN characters or more, those no other unit
    has, `units_having` counting the units that have each line; all of them, for a unit with none of its own),
    its name line (its `def` line) or more than half of them. One shared line (`return None`, a docstring's)
    is no sign: taken as one, an answer that kept one unit, or wrote new code, lost the unit beside it."""
    telling = {line for line in own if units_having[line] == 1} or own
    name = re.sub(r" #\d+$", "", unit.name)  # a duplicate's name carries its number
    return (bool(defines) and defines <= written or name in telling & said
            or 2 * len(telling & said) > len(telling))


def focus(text: str, path: str, instruction: str, language: str | None = None, about: str | None = None) -> View:
    """The view of `text` (the file `path`) an edit for `instruction` needs: its header and the top-level
    units the instruction is about. When it says nothing of any unit, the last units (up to EXCERPT_MAX_LINES):
    a whole 800-line file took a whole rewrite minutes and came back with code dropped, and new code ("Add a
    function xor") mostly goes at the end. `about`: the name (`outline`) of the unit the model picked as the
    one the instruction means, shown instead of the units the words point to (PICKED_GROUPS)."""
    lines = apply_patch.split_lines(text)[0]
    header_end, candidates = _candidates(text, path, lines)
    scores = rank(candidates, lines, instruction)
    order = sorted((i for i in range(len(candidates)) if scores[i] > 0), key=lambda i: -scores[i])
    picked = [i for i, unit in enumerate(candidates)
              if about is not None and definition_name(lines[unit.start:unit.end]) == about]
    order = picked + [i for i in order if i not in picked]
    if not candidates:
        return View(text, ((0, len(lines)),) if lines else ())
    if not order:  # the instruction says nothing of any unit: the last ones, where new code mostly goes
        first = len(candidates) - 1
        while first > 0 and candidates[-1].end - candidates[first - 1].start <= EXCERPT_MAX_LINES:
            first -= 1
        spans = ([(0, header_end)] if header_end else []) + [(candidates[first].start, candidates[-1].end)]
        return View(text, _closed(spans, lines))
    # Named outright: that unit; picked by the model: that one. Otherwise the few best, so that the model, which
    # reads them, picks.
    groups = 1 if scores[order[0]] >= NAME_BONUS else PICKED_GROUPS if picked else MAX_GROUPS
    spans, shown = [], 0
    for best in order:
        if len(spans) == groups:
            break
        if any(start <= candidates[best].start < end for start, end in spans):
            continue
        first, last = _widened(candidates, best, lines)
        size = candidates[last].end - candidates[first].start
        if spans and shown + size > EXCERPT_MAX_LINES:
            continue
        spans.append((candidates[first].start, candidates[last].end))
        shown += size
    return View(text, _closed(([(0, header_end)] if header_end else []) + spans, lines))


def names_a_unit(text: str, path: str, instruction: str) -> bool:
    """Whether `instruction` says the defined name of one of the file's top-level units outright (`rank`'s
    NAME_BONUS): then `focus` needs no pick (`outline`)."""
    lines = apply_patch.split_lines(text)[0]
    return any(score >= NAME_BONUS for score in rank(_candidates(text, path, lines)[1], lines, instruction))


def outline(text: str, path: str) -> list[tuple[str, str]]:
    """(name, first line) of each top-level unit past the file's header that defines a name: what a model reads
    to pick the unit an instruction is about when the instruction names none ("Make the function a member
    function."). Word counts pick a wrong unit of a long file there; the 1.5B, shown these lines, picked the
    right one on most (docs/BENCHMARKS.md, "The model picks the unit")."""
    lines = apply_patch.split_lines(text)[0]
    found = []
    for unit in _candidates(text, path, lines)[1]:
        first = _first_code_line(lines[unit.start:unit.end])
        name = _defined_by(first)
        if name:
            found.append((name, first.rstrip()))
    return found


def definition_name(unit_lines: list[str]) -> str | None:
    """The name a unit's first line of code defines (`def f`, `class C`, `X = ...`), if any."""
    return _defined_by(_first_code_line(unit_lines))


def _defined_by(line: str) -> str | None:
    match = line and (DEFINITION.search(line) or ASSIGNMENT.match(line.lstrip()))
    return match.group(1) if match else None


def _first_code_line(unit_lines: list[str]) -> str:
    """The first line that is not blank, a comment or a decorator ("" if none)."""
    return next((line for line in unit_lines if not COMMENT_LINE.match(line) and not line.lstrip().startswith("@")),
                "")


def _candidates(text: str, path: str, lines: list[str]) -> tuple[int, list[block.Unit]]:
    """The end of the file's header, and the top-level units past it (comments joined to what they precede):
    what an excerpt is made of."""
    top = top_units(text, path)
    header_end = _header_end(lines, top)
    return header_end, _comments_joined([unit for unit in top if unit.start >= header_end], lines)


def _widened(candidates: list[block.Unit], best: int, lines: list[str]) -> tuple[int, int]:
    """The run of candidates around `best` that share names with it (and with each other), within
    EXCERPT_MAX_LINES."""
    first = last = best
    size = candidates[best].end - candidates[best].start
    grew = True
    while grew:
        grew = False
        chosen = candidates[first:last + 1]
        for index in (first - 1, last + 1):
            if 0 <= index < len(candidates) and _related(candidates[index], chosen, lines):
                extra = candidates[index].end - candidates[index].start
                if size + extra > EXCERPT_MAX_LINES:
                    continue
                size += extra
                first, last, grew = min(first, index), max(last, index), True
    return first, last


def rank(units: list[block.Unit], lines: list[str], instruction: str) -> list[float]:
    """BM25 of the instruction's words against each unit's text, plus NAME_BONUS for a unit whose defined name
    the instruction says (as a word, case kept)."""
    texts = ["\n".join(lines[unit.start:unit.end]) for unit in units]
    counts = [Counter(terms(text)) for text in texts]
    if not counts:
        return []
    average = sum(sum(c.values()) for c in counts) / len(counts) or 1.0
    frequency = Counter(term for c in counts for term in c)
    said = set(WORD.findall(instruction))
    query = set(terms(instruction))
    scores = []
    for unit, count, text in zip(units, counts, texts):
        length = sum(count.values())
        score = 0.0
        for term in query & count.keys():
            idf = math.log(1 + (len(units) - frequency[term] + 0.5) / (frequency[term] + 0.5))
            tf = count[term]
            score += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / average))
        names = defined_names(lines[unit.start:unit.end])
        if names & said:
            score += NAME_BONUS
        elif {name.lower() for name in names} & query:
            score += PART_BONUS
        scores.append(score)
    return scores


def terms(text: str) -> list[str]:
    """The words of `text` a match counts: identifiers lowercased, and their snake_case and camelCase parts,
    three letters or more, less STOPWORDS."""
    found = []
    for word in WORD.findall(text):
        parts = {word.lower()} | {part.lower() for piece in word.split("_") for part in CAMEL_PART.findall(piece)}
        found.extend(part for part in parts if len(part) >= 3 and part not in STOPWORDS)
    return found


def defined_names(unit_lines: list[str]) -> set[str]:
    """The names a unit defines: its definition's name (`def f`, `class C`, `fn f`...) or the name it assigns,
    and the definitions inside it (a class's methods; not a function's local variables), dunders left out."""
    names, indent = set(), None
    for line in unit_lines:
        stripped = line.lstrip()
        if not stripped or stripped.startswith(("@", "#", "//", "/*", "*")):
            continue
        depth = len(line) - len(stripped)
        if indent is None:
            indent = depth
            match = DEFINITION.search(stripped) or ASSIGNMENT.match(stripped)
        elif depth > indent:
            match = DEFINITION.match(stripped)
        else:
            continue
        if match and not match.group(1).startswith("__"):
            names.add(match.group(1))
    return names


def _related(unit: block.Unit, chosen: list[block.Unit], lines: list[str]) -> bool:
    """Whether `unit` uses a name the chosen units define, or defines one they use."""
    text = "\n".join(lines[unit.start:unit.end])
    others = "\n".join("\n".join(lines[u.start:u.end]) for u in chosen)
    defines = defined_names(lines[unit.start:unit.end])
    defined = set().union(*(defined_names(lines[u.start:u.end]) for u in chosen))
    return bool(defines & set(WORD.findall(others))) or bool(defined & set(WORD.findall(text)))


def top_units(text: str, path: str) -> list[block.Unit]:
    """The units of `text` (the file `path`) that no other unit holds, in file order."""
    found = block.units(text, path)
    return [unit for unit, parent in zip(found, block.unit_parents(found)) if parent == -1]


def _comments_joined(units: list[block.Unit], lines: list[str]) -> list[block.Unit]:
    """The units with each run of comment-only units joined to the unit after it (a comment says what
    follows it, and must not stand between a class and its subclass)."""
    joined, pending = [], None
    for unit in units:
        start = unit.start if pending is None else pending
        if all(COMMENT_LINE.match(line) for line in lines[unit.start:unit.end]):
            pending = start
            continue
        joined.append(block.Unit(unit.name, start, unit.end))
        pending = None
    if pending is not None:
        joined.append(block.Unit(units[-1].name, pending, units[-1].end))
    return joined


def _header_end(lines: list[str], top: list[block.Unit]) -> int:
    """The end of the file's header: the leading units that are imports, comments or docstrings (at most
    HEADER_MAX_LINES lines)."""
    end = 0
    for unit in top:
        if unit.end > HEADER_MAX_LINES or not all(HEADER_LINE.match(line) or line.startswith((" ", "\t"))
                                                  for line in lines[unit.start:unit.end]):
            break
        end = unit.end
    return end


def _closed(spans: list[tuple[int, int]], lines: list[str]) -> tuple[tuple[int, int], ...]:
    """The spans with the blank lines around them taken in, merged where only blank lines lie between them."""
    closed: list[list[int]] = []
    for start, end in sorted(spans):
        while start > 0 and not lines[start - 1].strip():
            start -= 1
        while end < len(lines) and not lines[end].strip():
            end += 1
        if closed and start <= closed[-1][1]:
            closed[-1][1] = max(closed[-1][1], end)
        else:
            closed.append([start, end])
    return tuple((start, end) for start, end in closed)
