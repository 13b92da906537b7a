"""Lark grammars, one per edit format, shipped inside the package.

`document_grammar` narrows a format's grammar to edits of one document. For that, every format
grammar defines these terminals, each on ONE line of its own that starts with the name and a colon:

    DOC_LINE: ...   the content of a context or removed line -> only the document's own lines
    PATH: ...       a file path                              -> only the given paths
    LANGUAGE: ...   an ast-grep rule's language              -> only the given language
    UNIT: ...       a block edit's unit name                 -> only the given names
"""

from __future__ import annotations

import json
import re
from importlib.resources import files

# A terminal that matches no string: an empty document has no line to quote, an empty path list
# no path to name. llguidance still allows the token that ends the lexeme before it (a context
# line's " "), and reports a dead end (NoExtensionBias) at the next mask.
NOTHING = r"/[^\s\S]/"
MARKERS = ("DOC_LINE", "PATH", "LANGUAGE", "UNIT")
# A line of new code, its "\n" included, in a block edit's text (TEXT_LINE) or an apply_patch's added line (after
# its "+"): never a Markdown fence, nor anything starting "**" or "++" (a marker mistyped: "***", "+++"). None of
# these starts a line of code in a language we parse (a line inside a multi-line string, or a JavaScript "++i;"
# at column 0, aside: rare, and refused here). The default model, shown an excerpt, closed a unit's text with a
# fence, wrote "***Insert after:" as text, and ended patches with "+++ End Patch", "+++END PATCH" or "+++"
# (added lines: syntax errors).
CODE_LINE_TEXT = r"([^*+`\n][^\n]*|\*([^*\n][^\n]*)?|\+([^+\n][^\n]*)?|`([^`\n][^\n]*)?|``([^`\n][^\n]*)?)?"
CODE_TEXT_LINE = "/" + CODE_LINE_TEXT + r"\n/"
# The end of a block edit of code (its rule `end`): "*** End" on a line of its own, or where the model closed the
# code otherwise: a closing fence in its place, or "*** End" written on at the end of the last line. The default
# model, editing an excerpt of a long file, ended 8 of 128 block answers so; held to the end line alone, it wrote a
# near-fence ("`` `") or went on in prose to the output budget (`editor.formats.block.closed` reads both as the end).
# The text before a glued "*** End" is a line of code, never a marker: were any text allowed there, every line would
# stay open until its newline, and the model wrote an operation the grammar refuses (a unit named twice) on, in one
# line, to a glued end.
CODE_BLOCK_END = ('end: "*** End" "\\n"? | GLUED_END | FENCE_END\n'
                  'GLUED_END: /' + CODE_LINE_TEXT + r'\*\*\* End/' + '\n'
                  'FENCE_END: "```" "\\n"?')


class GrammarError(ValueError):
    """A format grammar that does not follow the marker convention above."""


def load(name: str) -> str:
    """The text of `grammars/<name>.lark`."""
    return files(__name__).joinpath(f"{name}.lark").read_text(encoding="utf-8")


def document_grammar(format: str, *, document: str | None = None, paths: list[str] | None = None,
                     language: str | None = None, units: list[str] | None = None,
                     unit_after: list[int] | None = None, code: bool = False) -> str:
    """The grammar of `format`, with DOC_LINE, PATH, LANGUAGE and UNIT narrowed to what is given."""
    return narrow(load(format), document=document, paths=paths, language=language, units=units,
                  unit_after=unit_after, code=code, source=f"grammars/{format}.lark")


def markers(format: str) -> list[str]:
    """The terminals of `format`'s grammar that `document_grammar` can narrow."""
    grammar = load(format)
    return [name for name in MARKERS if re.search(rf"^{name}:", grammar, flags=re.MULTILINE)]


def narrow(grammar: str, *, document: str | None = None, paths: list[str] | None = None,
           language: str | None = None, units: list[str] | None = None, unit_after: list[int] | None = None,
           code: bool = False, source: str = "grammar") -> str:
    """`grammar` with DOC_LINE, PATH, LANGUAGE and UNIT narrowed; `source` names it in errors. With
    `unit_after` (for each unit, the index of the first unit past its end), a block edit's operations
    must name units top to bottom, none twice and none inside one already named. `code`: the document is
    code, and a block edit's TEXT_LINE and a patch's ADDED line take CODE_TEXT_LINE's text."""
    if document is not None:
        grammar = _redefine(grammar, source, "DOC_LINE", document_lines(document))
        if re.search(r"^hunks:", grammar, flags=re.MULTILINE):
            grammar = _ordered_hunks(grammar, document)
    if paths is not None:
        grammar = _redefine(grammar, source, "PATH", list(dict.fromkeys(paths)))
    if language is not None:
        grammar = _redefine(grammar, source, "LANGUAGE", [language])
    if units is not None:
        grammar = _redefine(grammar, source, "UNIT", list(dict.fromkeys(units)))
    if units is not None and unit_after is not None and len(units) <= CONTIGUOUS_MAX_LINES:
        grammar = _units_in_order(grammar, units, unit_after)  # its chains, as a hunk's, overflow past that
    if code:
        grammar = re.sub(r"^TEXT_LINE:.*$", lambda _: "TEXT_LINE: " + CODE_TEXT_LINE, grammar, count=1,
                         flags=re.MULTILINE)
        grammar = re.sub(r"^end:.*$", lambda _: CODE_BLOCK_END, grammar, count=1, flags=re.MULTILINE)
        grammar = re.sub(r'^ADDED: "\+" .*?( NO_NEWLINE\?)?$', lambda m: 'ADDED: "+" ' + CODE_TEXT_LINE + (m[1] or ""),
                         grammar, count=1, flags=re.MULTILINE)
    return grammar


def document_lines(text: str) -> list[str]:
    """The distinct lines of `text` in order of first use, without their "\\n" or "\\r\\n"."""
    lines = text.split("\n")
    if lines[-1] == "":  # text ends with a newline (or is empty): no line after it
        lines.pop()
    return list(dict.fromkeys(line.removesuffix("\r") for line in lines))


# Past this many lines a hunk may quote any document line in any order (the DOC_LINE narrowing only):
# the contiguity rules grow with the document, and so do the grammar's compile time and the depth of
# llguidance's recursion over their chains, which crashed the process (a segmentation fault, the stack
# overflowed) at 1,800 lines, as 3,000 here once allowed.
CONTIGUOUS_MAX_LINES = 1000


def _ordered_hunks(grammar: str, document: str) -> str:
    """`grammar` with its one-line rule `hunks` (a file's hunks: `(HEADER hunk_lines TRAILER)+`, where a
    hunk's body holds context ' ', removed '-' and added '+' lines) narrowed so that each hunk's context and
    removed lines are a contiguous run of the document's lines, in order, and each hunk's run starts past
    the one before it: every hunk then matches the file, where the applier looks for it (after the hunk
    before), and no hunk can quote lines again. The default model's unified diffs repeated one changed
    line pair until the output budget ran out (41 of 60 EditEval items), and the 1.5B model's apply_patch
    edits copied a whole function as context, then again as a second hunk, and a third (4 of 60 EditEval
    items, each refused for a hunk not found). `ADDED` lines stay free; a hunk of added lines alone (the
    applier appends it) keeps the position. A hunk of context alone is let through (the applier says that
    the edit changes nothing): the default model, having copied a whole function as context and found
    nothing to change, otherwise had to add a line to end the hunk, and added "+++ End Patch" (a syntax
    error, reported as one). Used by apply_patch and udiff, the grammars with a `hunks` rule.

        hunks: hunk_header start_0
        start_j: ADDED+ (any_rest_j | next_j) | any_from_j     a hunk's body, its lines from line j on
        any_from_j: from_j | any_from_<j+1>                      (any_rest_j likewise)
        from_i: KEEP_k (ADDED+ (rest_<i+1> | next_<i+1>) | from_<i+1> | next_<i+1>)
              | DROP_k ADDED* (rest_<i+1> | next_<i+1>)         nothing changed yet
        rest_i: (KEEP_k | DROP_k) ADDED* (rest_<i+1> | next_<i+1>)   something changed
        next_j: TRAILER (hunk_header start_j)?                   the hunk ends; any next one from line j on
    where line i of the document is its distinct line k, KEEP_k = " " + line, DROP_k = "-" + line.
    """
    lines = [line.removesuffix("\r") for line in document.split("\n")]
    if lines[-1] == "":
        lines.pop()
    if not lines or len(lines) > CONTIGUOUS_MAX_LINES:
        return grammar
    definition = re.search(r"^hunks: \((.*) hunk_lines ?(.*)\)\+$", grammar, flags=re.MULTILINE)
    header, trailer = definition.group(1), definition.group(2)
    count = len(lines)
    distinct = {line: k for k, line in enumerate(dict.fromkeys(lines))}
    rules = ["hunks: hunk_header start_0", f"hunk_header: {header}", f"start_{count}: ADDED+ next_{count}"]
    for j in range(count + 1):
        rules.append(f"next_{j}: " + " ".join(part for part in (trailer, f"(hunk_header start_{j})?") if part))
    for i, line in enumerate(lines):
        k, last = distinct[line], i + 1 == count
        ended = f"next_{i + 1}" if last else f"(rest_{i + 1} | next_{i + 1})"
        further = "" if last else f" | any_from_{i + 1}"
        rules.append(f"start_{i}: ADDED+ (any_rest_{i} | next_{i}) | any_from_{i}")
        rules.append(f"any_from_{i}: from_{i}{further}")
        rules.append(f"any_rest_{i}: rest_{i}" + ("" if last else f" | any_rest_{i + 1}"))
        rules.append(f"from_{i}: KEEP_{k} (ADDED+ {ended}" + ("" if last else f" | from_{i + 1}")
                     + f" | next_{i + 1}) | DROP_{k} ADDED* {ended}")
        rules.append(f"rest_{i}: (KEEP_{k} | DROP_{k}) ADDED* {ended}")
    # A unified diff marks a last line without its newline (the file's text ends without one).
    unended = lines[-1] if not document.endswith("\n") and re.search(r"^NO_NEWLINE:", grammar, re.MULTILINE) else None
    for line, k in distinct.items():
        quoted = json.dumps(line + "\n", ensure_ascii=False) + (" NO_NEWLINE?" if line == unended else "")
        rules.append(f'KEEP_{k}: " " {quoted}')
        rules.append(f'DROP_{k}: "-" {quoted}')
    return grammar[:definition.start()] + "\n".join(rules) + grammar[definition.end():]


def _units_in_order(grammar: str, units: list[str], after: list[int]) -> str:
    """`grammar` with its one-line rule `operations` (a block edit's operations, then its end) narrowed so
    that the operations name units in file order, each at most once, and none inside a unit already
    named (`after[i]`: the first unit past unit i). A small model otherwise names the unit it just
    rewrote again, or rewrites a class and then one of its methods.

        operations: first_0
        first_i: op_i more_<after[i]> | first_<i+1>      at least one operation, from unit i on
        more_i: op_i more_<after[i]> | more_<i+1>        more operations from unit i on, or the end
        op_i: REPLACE_i TEXT_LINE+ | INSERT_AFTER_i TEXT_LINE+ | DELETE_i
    """
    definition = re.search(r"^operations:.*$", grammar, flags=re.MULTILINE)
    if definition is None or not units:
        return grammar
    end = re.search(r"^operations: operation\+ (.*)$", grammar, flags=re.MULTILINE).group(1)
    count = len(units)
    rules = ["operations: first_0", f"more_{count}: {end}"]
    for i, name in enumerate(units):
        quoted = json.dumps(name + "\n", ensure_ascii=False)
        rest = f"more_{after[i]}"
        rules.append(f"first_{i}: op_{i} {rest}" + (f" | first_{i + 1}" if i + 1 < count else ""))
        rules.append(f"more_{i}: op_{i} {rest} | more_{i + 1}")
        rules.append(f"op_{i}: REPLACE_{i} TEXT_LINE+ | INSERT_AFTER_{i} TEXT_LINE+ | DELETE_{i}")
        rules += [f'REPLACE_{i}: "*** Replace: " {quoted}', f'INSERT_AFTER_{i}: "*** Insert after: " {quoted}',
                  f'DELETE_{i}: "*** Delete: " {quoted}']
    return grammar[:definition.start()] + "\n".join(rules) + grammar[definition.end():]


def _redefine(grammar: str, source: str, terminal: str, literals: list[str]) -> str:
    """`grammar` with the one-line definition of `terminal` made an alternation of `literals`."""
    definitions = list(re.finditer(rf"^{terminal}:.*$", grammar, flags=re.MULTILINE))
    if len(definitions) != 1:
        raise GrammarError(f"{source}: expected one line starting with "
                           f"'{terminal}:', found {len(definitions)}")
    definition = definitions[0]
    following = grammar[definition.end():].lstrip("\n").split("\n", 1)[0]
    if re.match(r"\s+\|", following):
        line = grammar.count("\n", 0, definition.start()) + 1
        raise GrammarError(f"{source}, line {line}: the definition of {terminal} "
                           "goes on over the next line; it must be one line")
    # JSON string escapes are valid Lark string escapes in llguidance (quotes, backslashes, tabs,
    # control characters); other characters stay as they are, UTF-8 like the grammar.
    body = " | ".join(json.dumps(literal, ensure_ascii=False) for literal in literals) or NOTHING
    return grammar[:definition.start()] + f"{terminal}: {body}" + grammar[definition.end():]
