"""Training examples from (instruction, before, after) triplets: one per edit format, each answer built by the format's
own code from the before/after pair and checked the way the editor would take it.

For every format the answer is
  block        `block.edit_between` (changed units replaced, new units inserted, removed ones deleted), rendered
  apply_patch  `apply_patch.diff`, rendered
  udiff        `udiff.diff`, rendered (3 lines of context; the hunk counts right)
  ot           `ot.diff` put in the quoting form the model writes (`ot.quote`: seeks and quoted deletes), rendered
  rule         a one-pattern ast-grep rule (`simple_rule`), only where one reproduces the whole change
  whole        the new file in one code block, as the editor reads a `whole` answer (`propose.whole_text`)
  excerpt      the new excerpt in one code block, for a file past a screenful (below, it is `whole`)
and it is kept only when (1) applying it to `before` through the editor's own applier gives exactly `after`, and
(2) the format's grammar narrowed to the file, as `edit` decodes it (`request.format_grammar`), admits it (OT also
passes `ot.prefix_ok`, its document check while decoding). The messages are the editor's (`prompting.messages`), with
the file named by its base name, as `edit FILE ...` names it. Past a screenful (`propose.FOCUS_MIN_LINES`) the
editor shows every format but a rule and `whole` an excerpt of the file (editor/focus.py), and so do the examples:
the answer is about the excerpt before and after the change (`View.excerpt_after`), and a change to lines the
excerpt leaves out gives no example in those formats.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

from decoding.constraint import grammar_admits
from editor import prompting
from editor.applying import apply_edit
from editor.files import MemoryFiles
from editor.formats import apply_patch, block, ot, rule, udiff
from editor.propose import FORMATS, view_for, whole_text
from editor.request import REWRITES, format_grammar
from editor.validation import parser_for

from .edit_data import Triplet

# A rule's pattern and fix stay on one line and this short: past that a "rule" is a rewrite of one spot.
RULE_MAX_CHARS = 120
RULE_ID_WORDS = 5
CALL = re.compile(r"^([^()\n]+)\((.*)\)$")


@dataclass(frozen=True)
class Example:
    format: str
    messages: list[dict[str, str]]  # the chat the editor sends (system, example, its answer, the request)
    answer: str  # the assistant's reply to learn
    repo: str
    path: str  # the file's path in its repository (the messages name it by its base name)

    def to_json(self) -> dict:
        return {"repo": self.repo, "path": self.path, "format": self.format, "messages": self.messages,
                "answer": self.answer}


def examples_for(triplet: Triplet, tally: Counter | None = None, formats: tuple[str, ...] = FORMATS,
                 check_grammar: bool = True) -> list[Example]:
    """The checked examples of one triplet, one per format in `formats` that can say its change. `tally` counts
    "<format>: <outcome>" for each format: kept, cannot say it (the format's builder refused), no simple rule,
    does not apply back, grammar refuses."""
    tally = Counter() if tally is None else tally
    name = PurePosixPath(triplet.path).name
    examples = []
    for fmt in formats:
        # Past a screenful the editor shows an excerpt (`propose.view_for`), and the answer is about it.
        view = view_for(fmt, name, triplet.before, triplet.instruction, triplet.language)
        before, after = (view.excerpt, view.excerpt_after(triplet.after)) if view else (triplet.before, triplet.after)
        if fmt == "excerpt" and view is None:
            outcome, answer = "short file (whole)", ""
        elif after is None:
            outcome, answer = "change outside the excerpt", ""
        else:
            outcome, answer = _checked_answer(fmt, name, before, after, triplet, check_grammar)
        tally[f"{fmt}: {outcome}"] += 1
        if outcome == "kept":
            messages = prompting.messages(fmt, path=name, text=before, instruction=triplet.instruction,
                                          language=triplet.language)
            examples.append(Example(fmt, messages, answer, triplet.repo, triplet.path))
    return examples


def _checked_answer(fmt: str, name: str, before: str, after: str, triplet: Triplet,
                    check_grammar: bool) -> tuple[str, str]:
    """(outcome, answer): "kept" with the answer that turns `before` (the file or the excerpt shown) into
    `after`, or why there is none."""
    try:
        answer = answer_for(fmt, name, before, after, triplet.language, triplet.instruction)
    except ValueError:
        return "cannot say it", ""
    if answer is None:
        return "no simple rule", ""
    if applied(fmt, name, before, answer, triplet.language) != after:
        return "does not apply back", ""
    if check_grammar and not admitted(fmt, name, before, answer, triplet.language):
        return "grammar refuses", ""
    return "kept", answer


def answer_for(fmt: str, name: str, before: str, after: str, language: str | None,
               instruction: str = "") -> str | None:
    """The answer in `fmt` that turns `before` (the file `name`) into `after`, unchecked; None for a rule when no
    simple one says the change. ValueError when the format cannot say it (apply_patch: a final newline dropped...)."""
    if fmt == "apply_patch":
        return apply_patch.render(apply_patch.diff(before, after, name))
    if fmt == "udiff":
        return udiff.render(udiff.diff(before, after, name))
    if fmt == "ot":
        return ot.render(ot.quote(before, ot.diff(before, after)))
    if fmt == "block":
        return block.render(block.edit_between(before, after, name))
    if fmt == "rule":
        found = simple_rule(before, after, language, instruction)
        return rule.render(rule.RuleSet((found,))) if found is not None else None
    if fmt in REWRITES:
        return "```\n" + after.removesuffix("\n") + "\n```"
    raise ValueError(f"unknown format {fmt!r}")


def applied(fmt: str, name: str, before: str, answer: str, language: str | None) -> str | None:
    """`before` after the answer, as the editor reads and applies it (None when it is refused)."""
    if fmt in REWRITES:
        return whole_text(answer, before)
    result = apply_edit(answer, format=fmt, files=MemoryFiles({name: before}), targets=[name], language=language,
                        dry_run=True)
    if not result.ok:
        return None
    return next((change.new_text for change in result.changes if change.path == name), before)


def admitted(fmt: str, name: str, before: str, answer: str, language: str | None) -> bool:
    """Whether constrained decoding of the answer, as `edit` decodes `fmt` for this file, could produce it."""
    grammar = format_grammar(fmt, name, before, language)
    if grammar is None:
        return True
    if fmt == "ot" and not ot.prefix_ok(before, answer):
        return False
    return grammar_admits(grammar, answer)


# ---------------------------------------------------------------------------------------------
# Rules


def simple_rule(before: str, after: str, language: str | None, instruction: str = "") -> rule.Rule | None:
    """A one-pattern ast-grep rule that turns `before` into `after` exactly, or None. The candidates are the syntax
    nodes around the first change, smallest first, while they fit on one line: the node's text is the pattern, its
    new text the fix, and a call whose arguments stay is generalised to `f($$$ARGS)` -> `g($$$ARGS)`. A candidate
    counts when rewriting every match in `before` gives `after` (the change is that one rewrite, wherever it
    applies); the generalised call wins, as the prompt's example teaches, else the smallest literal."""
    sg_language = rule.normalize_language(language or "")
    changes = _char_changes(before, after)
    if sg_language is None or not changes:
        return None
    source = before.encode("utf-8")
    first_start, first_end, _ = changes[0]
    start_byte = len(before[:first_start].encode("utf-8"))
    end_byte = len(before[:first_end].encode("utf-8"))
    node = parser_for(language).parse(source).root_node.named_descendant_for_byte_range(start_byte, end_byte)
    literal = None
    while node is not None and node.parent is not None:
        start = len(source[:node.start_byte].decode("utf-8", "replace"))
        end = start + len(source[node.start_byte:node.end_byte].decode("utf-8", "replace"))
        pattern = before[start:end]
        if "\n" in pattern or len(pattern) > RULE_MAX_CHARS:
            break
        grown = sum(len(new) - (stop - begin) for begin, stop, new in changes if start <= begin and stop <= end)
        fix = after[start:end + grown]
        if pattern != fix and "\n" not in fix:
            general = _generalised_call(pattern, fix, sg_language, instruction)
            if general is not None and _rewrites(before, after, sg_language, general):
                return general
            if literal is None:
                candidate = rule.Rule(_rule_id(instruction), sg_language, {"pattern": pattern}, fix=fix)
                literal = candidate if _rewrites(before, after, sg_language, candidate) else None
        node = node.parent
    return literal


def _rule_id(instruction: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", instruction.lower())[:RULE_ID_WORDS]) or "edit"


def _generalised_call(pattern: str, fix: str, language: str, instruction: str) -> rule.Rule | None:
    """`f(args)` -> `g(args)` with the same arguments as the rule `f($$$ARGS)` -> `g($$$ARGS)`; else None."""
    old_call, new_call = CALL.match(pattern), CALL.match(fix)
    if not (old_call and new_call and old_call.group(2) == new_call.group(2) and old_call.group(2)):
        return None
    return rule.Rule(_rule_id(instruction), language, {"pattern": old_call.group(1) + "($$$ARGS)"},
                     fix=new_call.group(1) + "($$$ARGS)")


def _rewrites(before: str, after: str, language: str, candidate: rule.Rule) -> bool:
    try:
        return rule.rewrite(before, language, [candidate]) == after
    except Exception:  # ast-grep refuses the pattern (a fragment it cannot read): no rule
        return False


def _char_changes(before: str, after: str) -> list[tuple[int, int, str]]:
    """(start, end, new text) of each changed stretch of `before`, in code points, from `ot.diff`."""
    changes: list[tuple[int, int, str]] = []
    cursor = 0
    for op in ot.diff(before, after).ops:
        if isinstance(op, ot.Retain):
            cursor += op.length
            continue
        if not changes or changes[-1][1] != cursor:
            changes.append((cursor, cursor, ""))
        begin, stop, new = changes[-1]
        if isinstance(op, ot.Delete):
            changes[-1] = (begin, stop + op.length, new)
            cursor += op.length
        else:
            changes[-1] = (begin, stop, new + op.text)
    return changes
