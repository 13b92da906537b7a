"""Syntax validation with tree-sitter: does an edit introduce syntax errors the file did not have?

A file's language comes from an explicit override, its extension, or its shebang. Both the old and the
new text are parsed; the issues (ERROR and MISSING nodes) of the new tree that the old tree did not
already have are the edit's fault. Issues are compared by what they are (kind + text), not where they
are, so an edit above an old error, which shifts it down, does not blame the edit for it.

The new text is parsed first, and the old one only when the new one has issues. Trees of the last
few texts are cached, so the next edit of a file reparses incrementally from the previous one.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import tree_sitter

# language name -> (grammar module, function returning the language pointer)
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "rust": ("tree_sitter_rust", "language"),
    "go": ("tree_sitter_go", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "json": ("tree_sitter_json", "language"),
    "yaml": ("tree_sitter_yaml", "language"),
    "toml": ("tree_sitter_toml", "language"),
    "bash": ("tree_sitter_bash", "language"),
    "markdown": ("tree_sitter_markdown", "language"),  # the block grammar; inline text never fails
    "html": ("tree_sitter_html", "language"),
    "css": ("tree_sitter_css", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
}

ALIASES = {"py": "python", "js": "javascript", "jsx": "javascript", "node": "javascript",
           "ts": "typescript", "rs": "rust", "golang": "go", "c++": "cpp", "cxx": "cpp",
           "yml": "yaml", "sh": "bash", "shell": "bash", "md": "markdown", "htm": "html",
           "rb": "ruby"}

EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".rs": "rust", ".go": "go", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".sh": "bash", ".bash": "bash",
    ".md": "markdown", ".markdown": "markdown",
    ".html": "html", ".htm": "html", ".css": "css",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby",
}

FILENAMES = {"Rakefile": "ruby", "Gemfile": "ruby", ".bashrc": "bash", ".bash_profile": "bash",
             "Pipfile": "toml"}

# interpreter named by a shebang (version suffix stripped) -> language
INTERPRETERS = {"python": "python", "pypy": "python", "bash": "bash", "sh": "bash", "dash": "bash",
                "node": "javascript", "nodejs": "javascript", "ruby": "ruby", "ts-node": "typescript"}

SNIPPET_CHARS = 40


@dataclass(frozen=True)
class SyntaxIssue:
    """An ERROR node (text tree-sitter could not parse) or a MISSING node (a token it had to invent).

    `line` and `column` are 1-based; `column` counts characters. `snippet` is the start of the
    unparsable text for ERROR, the invented token for MISSING.
    """

    line: int
    column: int
    kind: str  # "ERROR" | "MISSING"
    snippet: str

    def describe(self) -> str:
        if self.kind == "MISSING":
            return f"MISSING {self.snippet!r}"
        return f"ERROR near {self.snippet!r}"


@dataclass(frozen=True)
class Report:
    """What validating one file found. `validated` is False when its language is unknown."""

    path: str
    language: str | None
    validated: bool
    new_issues: list[SyntaxIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.new_issues

    def summary(self) -> str:
        if not self.validated:
            return "not validated: unknown language"
        if self.new_issues:
            return f"{len(self.new_issues)} new syntax error(s) ({self.language})"
        return f"validated: {self.language}"


def canonical_language(name: str) -> str:
    """A language name or alias -> the name in GRAMMARS; ValueError for one without a grammar."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in GRAMMARS:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(sorted(GRAMMARS))}")
    return key


def detect_language(path: str, text: str = "", language: str | None = None) -> str | None:
    """The file's language: the override, else its name or extension, else its shebang; None if unknown."""
    if language:
        return canonical_language(language)
    name = PurePosixPath(path.replace("\\", "/")).name
    if name in FILENAMES:
        return FILENAMES[name]
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    return _shebang_language(text)


def _shebang_language(text: str) -> str | None:
    if not text.startswith("#!"):
        return None
    words = text[2:].split("\n", 1)[0].split()
    if not words:
        return None
    program = PurePosixPath(words[0]).name
    if program == "env":  # `#!/usr/bin/env -S python3 -u`: the first word that is not an option
        program = next((w for w in words[1:] if not w.startswith("-")), "")
    program = re.sub(r"[\d.]+$", "", program)  # python3.11 -> python
    return INTERPRETERS.get(program)


@functools.cache
def parser_for(language: str) -> tree_sitter.Parser:
    """One cached Parser per language (loading a grammar costs more than parsing a small file)."""
    module, function = GRAMMARS[language]
    pointer = getattr(importlib.import_module(module), function)()
    return tree_sitter.Parser(tree_sitter.Language(pointer))


def syntax_issues(path: str, text: str, language: str | None = None) -> tuple[str | None, list[SyntaxIssue]]:
    """(language, every ERROR/MISSING node in `text`), in document order; (None, []) for an unknown language."""
    lang = detect_language(path, text, language)
    if lang is None:
        return None, []
    source = text.encode("utf-8")
    return lang, [issue for issue, _ in _issues(_parse(lang, source), source)]


def check(path: str, old_text: str, new_text: str, language: str | None = None) -> Report:
    """The syntax issues `new_text` has that `old_text` did not (both texts are of file `path`)."""
    lang = detect_language(path, new_text, language) or detect_language(path, old_text, language)
    if lang is None:
        return Report(path, None, False)
    old_source, new_source = old_text.encode("utf-8"), new_text.encode("utf-8")
    new_tree = _parse(lang, new_source, previous=old_source)
    if not new_tree.root_node.has_error:  # the common case: one parse, no walk
        return Report(path, lang, True, _python_compile_issues(lang, old_text, new_text))
    new_found = _issues(new_tree, new_source)
    old_tree = _parse(lang, old_source)
    issues = _new_issues(_issues(old_tree, old_source), new_found, old_text, new_text)
    issues = issues or _python_compile_issues(lang, old_text, new_text)
    if not issues and not new_found and not old_tree.root_node.has_error:
        # The tree has an error but no ERROR or MISSING node shows where (a statement run on
        # without its separator, e.g. `import a * b`): refuse all the same.
        issues = [SyntaxIssue(1, 1, "ERROR", "a syntax error tree-sitter does not locate")]
    return Report(path, lang, True, issues)


# compile() costs about 1 ms per 60 lines here: past this size a file gets tree-sitter's check only.
COMPILE_MAX_LINES = 1500


def _python_compile_issues(lang: str, old_text: str, new_text: str) -> list[SyntaxIssue]:
    """tree-sitter-python accepts some code Python refuses (an indented block with no header above
    it parses as a statement); compile() catches those, when the old text compiled."""
    if lang != "python" or new_text.count("\n") > COMPILE_MAX_LINES:
        return []
    issue = _compile_error(new_text)
    if issue is None or _compile_error(old_text) is not None:
        return []  # it compiles, or the file was already broken: the error is not the edit's
    return [issue]


def _compile_error(text: str) -> SyntaxIssue | None:
    """Why Python refuses to compile `text`; None if it compiles."""
    try:
        compile(text, "<edit>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        snippet = (exc.text or "").strip()[:SNIPPET_CHARS]
        return SyntaxIssue(exc.lineno or 1, exc.offset or 1, "ERROR", f"{exc.msg}: {snippet}")
    except (RecursionError, MemoryError):  # the compiler's stacks: Python cannot run it either
        return SyntaxIssue(1, 1, "ERROR", "nested too deeply for Python to compile")
    except ValueError:  # NUL bytes: refused earlier by the file reader
        pass
    return None


TREE_CACHE_SIZE = 16
_trees: OrderedDict[tuple[str, bytes], tree_sitter.Tree] = OrderedDict()  # (language, source) -> tree


def forget_trees() -> None:
    """Drop the cached parse trees (memory, or a benchmark that wants cold parses)."""
    _trees.clear()


def _parse(language: str, source: bytes, previous: bytes | None = None) -> tree_sitter.Tree:
    """Parse `source`, reparsing incrementally when the tree of `previous` is cached.

    An agent edits the same file again and again, and each edit's old text is the new text the
    last check parsed: reusing that tree costs a couple of milliseconds instead of a full parse.
    """
    key = (language, source)
    tree = _trees.get(key)
    if tree is None:
        old_tree = _trees.get((language, previous)) if previous is not None else None
        if old_tree is not None:
            old_tree = old_tree.copy()
            old_tree.edit(**_edit_span(previous, source))
            tree = parser_for(language).parse(source, old_tree)
        else:
            tree = parser_for(language).parse(source)
    _trees[key] = tree
    _trees.move_to_end(key)
    while len(_trees) > TREE_CACHE_SIZE:
        _trees.popitem(last=False)
    return tree


def _edit_span(old: bytes, new: bytes) -> dict:
    """The one byte range that differs between `old` and `new`, as `Tree.edit` takes it."""
    limit = min(len(old), len(new))
    prefix = _largest(limit, lambda n: old[:n] == new[:n])
    suffix = _largest(limit - prefix, lambda n: old[len(old) - n:] == new[len(new) - n:])
    old_end, new_end = len(old) - suffix, len(new) - suffix
    return {"start_byte": prefix, "old_end_byte": old_end, "new_end_byte": new_end,
            "start_point": _point(old, prefix), "old_end_point": _point(old, old_end),
            "new_end_point": _point(new, new_end)}


def _largest(limit: int, same) -> int:
    """The largest n <= limit with same(n), by bisection (same(n) holds up to some n, then fails)."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if same(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _point(source: bytes, byte: int) -> tuple[int, int]:
    """(row, byte column) of a byte offset, as tree-sitter counts them."""
    return source.count(b"\n", 0, byte), byte - (source.rfind(b"\n", 0, byte) + 1)


Found = list[tuple[SyntaxIssue, tuple]]  # (issue, key that survives line shifts)


def _issues(tree: tree_sitter.Tree, source: bytes) -> Found:
    found: Found = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_missing:
            found.append(_issue(node, source, "MISSING", node.type))
        elif node.is_error:
            text = source[node.start_byte:node.end_byte].decode("utf-8", "replace")
            found.append(_issue(node, source, "ERROR", text))
        if node.has_error:  # only subtrees holding an error are worth walking
            stack.extend(reversed(node.children))
    return found


def _issue(node: tree_sitter.Node, source: bytes, kind: str, text: str) -> tuple[SyntaxIssue, tuple]:
    row, _ = node.start_point
    line_start = source.rfind(b"\n", 0, node.start_byte) + 1
    column = len(source[line_start:node.start_byte].decode("utf-8", "replace")) + 1
    first_line = text.strip().split("\n", 1)[0].strip()
    snippet = first_line if len(first_line) <= SNIPPET_CHARS else first_line[:SNIPPET_CHARS - 3] + "..."
    parent = node.parent.type if node.parent is not None else ""
    key = (kind, parent, " ".join(text.split()))  # whitespace-insensitive, position-free
    return SyntaxIssue(row + 1, column, kind, snippet), key


def _new_issues(old: Found, new: Found, old_text: str, new_text: str) -> list[SyntaxIssue]:
    """Issues of `new` beyond the count of the same key in `old`.

    When a key has both old and new occurrences, the ones reported are those on lines the edit
    changed (an unchanged line carries its old issue along), falling back to document order.
    """
    old_counts = Counter(key for _, key in old)
    by_key: dict[tuple, list[SyntaxIssue]] = defaultdict(list)
    for issue, key in new:
        by_key[key].append(issue)
    reported: list[SyntaxIssue] = []
    changed_lines: set[int] | None = None
    for key, issues in by_key.items():
        extra = len(issues) - old_counts[key]
        if extra <= 0:
            continue
        if extra < len(issues):
            if changed_lines is None:
                changed_lines = _changed_lines(old_text, new_text)
            issues = sorted(issues, key=lambda issue: issue.line not in changed_lines)
        reported.extend(issues[:extra])
    return sorted(reported, key=lambda issue: (issue.line, issue.column))


def _changed_lines(old_text: str, new_text: str) -> set[int]:
    """1-based numbers of the lines of `new_text` that are not unchanged lines of `old_text`."""
    matcher = difflib.SequenceMatcher(None, old_text.splitlines(), new_text.splitlines(), autojunk=False)
    changed: set[int] = set()
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            changed.update(range(j1 + 1, j2 + 1))
    return changed
