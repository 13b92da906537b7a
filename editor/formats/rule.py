"""ast-grep rewrite rules as an edit format.

An edit is one or more ast-grep rules (YAML, a `---` stream of them, or JSON), each with a `fix`:

    id: print-to-logger
    language: python
    rule:
      pattern: print($A)
    fix: |-
      logger.info($A)

or, for the command line, the one-line form `print($A) => logger.info($A)` (the language then comes
from the file). Matching is ast-grep's own (`ast_grep_py`, rule/constraints/transform passed through
as a config); the fix is filled here, because ast-grep-py finds but does not rewrite:

- `$A` is the text of the node captured as A, `$$$ARGS` the source from the first to the last node
  captured as ARGS (separators and line breaks between them kept); names starting with `_` capture
  nothing, and a fix naming a metavariable the rule never captures is refused when parsed.
- Multi-line text keeps its shape relative to the match: a captured node's later lines move with it
  to where the template puts it, and the whole replacement's later lines get the match's
  indentation.
- Every match of every rule is found on the original text; where matches overlap, the one starting
  first wins (the outer one when nested, the earlier rule when equal), and all are applied in one
  pass.

Offsets from ast-grep-py (`range().start.index`) count code points, so they index Python strings
directly (checked in the tests with non-ASCII text before a match).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import yaml
from ast_grep_py import SgNode, SgRoot

from .. import timelimit
from ..errors import ApplyError, EditError, ParseError
from ..files import FileChange, Files, Staging, newline_of

# The languages ast-grep-py ships, by their canonical names.
LANGUAGES = frozenset({
    "bash", "c", "cpp", "csharp", "css", "elixir", "go", "haskell", "hcl", "html", "java",
    "javascript", "json", "kotlin", "lua", "nix", "php", "python", "ruby", "rust", "scala",
    "solidity", "swift", "tsx", "typescript", "yaml",
})
_ALIASES = {
    "py": "python", "js": "javascript", "jsx": "javascript", "ts": "typescript", "rs": "rust",
    "golang": "go", "c++": "cpp", "cs": "csharp", "c#": "csharp", "sh": "bash", "shell": "bash",
    "yml": "yaml", "rb": "ruby", "kt": "kotlin", "ex": "elixir", "hs": "haskell",
    "terraform": "hcl",
}
EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".rs": "rust", ".go": "go", ".java": "java", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp",
    ".hxx": "cpp", ".cs": "csharp", ".json": "json", ".yaml": "yaml", ".yml": "yaml",
    ".sh": "bash", ".bash": "bash", ".html": "html", ".htm": "html", ".css": "css",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby", ".kt": "kotlin", ".kts": "kotlin",
    ".lua": "lua", ".php": "php", ".scala": "scala", ".swift": "swift", ".ex": "elixir",
    ".exs": "elixir", ".hs": "haskell", ".nix": "nix", ".sol": "solidity", ".hcl": "hcl",
    ".tf": "hcl",
}

# The keys of a rule, in the order `render` writes them.
_RULE_KEYS = ("id", "language", "message", "rule", "constraints", "transform", "fix")
_IGNORED_KEYS = frozenset({"severity", "note", "url", "metadata", "labels"})  # reporting only
_UNSUPPORTED_KEYS = {
    "utils": "utility rules are not supported; write the rule inline",
    "rewriters": "rewriters are not supported",
    "files": "`files` globs are not supported; choose the files on the command line",
    "ignores": "`ignores` globs are not supported; choose the files on the command line",
}
_FIX_KEYS = ("template", "expandStart", "expandEnd")

# `$NAME` / `$$$NAME` in a pattern or a fix; ast-grep's names are upper-case, digits and `_`.
_METAVAR = re.compile(r"\$\$\$([A-Z_][A-Z0-9_]*)|\$([A-Z_][A-Z0-9_]*)")
_ONELINE_ARROW = " => "

# Mappings and lists inside one another, the document included. Real rules stay far below; deeper
# ones are attacks on the parser (recursion) or on ast-grep (matching time grows with each level).
MAX_NESTING = 50
# Seconds all the matching of one edit or check may take: ast-grep can spend hours on a bad rule
# (nested `has`/`inside` with `stopBy: end` over deeply nested code).
TIME_LIMIT = 30.0


@dataclass(frozen=True)
class Rule:
    """One ast-grep rule. `language` None: the target file's. `fix` None: it only reports matches.

    `rule`, `constraints` and `transform` are ast-grep's own mappings, passed to ast-grep-py as they
    are; `fix` is a template string or ast-grep's FixConfig mapping (`template`, `expandStart`,
    `expandEnd`). Treat the mappings as read-only.
    """

    id: str
    language: str | None
    rule: dict
    constraints: dict | None = None
    transform: dict | None = None
    fix: str | dict | None = None
    message: str | None = None

    def config(self) -> dict:
        """The config ast-grep-py's `find_all` takes."""
        config: dict[str, Any] = {"rule": self.rule}
        if self.constraints:
            config["constraints"] = self.constraints
        if self.transform:
            config["transform"] = self.transform
        return config

    @property
    def template(self) -> str | None:
        return self.fix["template"] if isinstance(self.fix, dict) else self.fix


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]


class Match(NamedTuple):
    """A match for `--check`: 1-based line and column (in characters)."""

    path: str
    line: int
    column: int
    rule_id: str
    text: str


# ---------------------------------------------------------------------------------------------
# Languages


def normalize_language(name: str) -> str | None:
    """ast-grep's canonical name for a language name or alias; None if ast-grep has no such one."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in LANGUAGES else None


def language_of(path: str) -> str | None:
    """The ast-grep language of a file, from its extension; None if unknown."""
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def _sg_root(text: str, language: str, path: str | None = None) -> SgRoot:
    try:
        return SgRoot(text, language)
    except BaseException as exc:  # pyo3 turns a Rust panic into PanicException, a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise ApplyError(f"ast-grep cannot parse {language!r}: {exc}", file=path) from None


def _library_message(exc: Exception) -> str:
    """ast-grep's error chain on one line, without the Rust backtrace."""
    text = str(exc).split("Stack backtrace:")[0]
    head, _, causes = text.partition("Caused by:")
    parts = [head.strip()] + [re.sub(r"^\d+:\s*", "", line.strip())
                              for line in causes.strip().splitlines() if line.strip()]
    return re.sub(r"\s+", " ", ": ".join(p for p in parts if p))


# ---------------------------------------------------------------------------------------------
# Parsing


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one), anchors and
    aliases (a kilobyte of nested aliases expands to billions of nodes when walked), and nesting
    past MAX_NESTING (the composer recurses once per level)."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ParseError("YAML anchors (&) and aliases (*) are not supported; write the rule "
                             "out in full", line=event.start_mark.line + 1)
        if self._depth >= MAX_NESTING and isinstance(event, (yaml.MappingStartEvent,
                                                             yaml.SequenceStartEvent)):
            raise ParseError(f"nested deeper than {MAX_NESTING} levels; flatten the rule",
                             line=event.start_mark.line + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


@dataclass
class _Doc:
    """One rule as read: the data, and where it and each of its keys start (1-based lines)."""

    data: Any
    line: int | None
    key_lines: dict


def parse(text: str) -> RuleSet:
    """YAML rules (a `---` stream), JSON (an object or a list of them), or `PATTERN => FIX`."""
    if not text.strip():
        raise ParseError("empty rule edit")
    oneline = _split_oneline(text)
    if oneline is not None:
        return RuleSet((_oneline_rule(*oneline, language=None),))
    docs = _json_docs(text) if text.lstrip().startswith(("{", "[")) else _yaml_docs(text)
    if not docs:
        raise ParseError("no rule found")
    rules = tuple(_rule_from(doc, number) for number, doc in enumerate(docs, 1))
    ids = [r.id for r in rules]
    for number, rule in enumerate(rules, 1):
        if ids.index(rule.id) != number - 1:
            raise ParseError(f"duplicate rule id {rule.id!r}", line=docs[number - 1].line,
                             hunk=number)
    return RuleSet(rules)


def parse_oneline(text: str, language: str | None) -> Rule:
    """`PATTERN => FIX` (one line; the first ` => ` outside brackets and quotes splits it)."""
    split = _split_oneline(text)
    if split is None:
        raise ParseError("expected one line `PATTERN => FIX`", line=1)
    return _oneline_rule(*split, language=language)


def _oneline_rule(pattern: str, fix: str, *, language: str | None) -> Rule:
    rule = Rule(id=_default_id(1), language=_checked_language(language, None, 1),
                rule={"pattern": pattern}, fix=fix)
    _check_fix_names(rule, line=1, number=1)
    if rule.language:
        _compile_check(rule, line=1, number=1)
    return rule


def _split_oneline(text: str) -> tuple[str, str] | None:
    """(pattern, fix) if text is one line with a top-level ` => `, else None."""
    line = text.strip()
    if "\n" in line or _ONELINE_ARROW not in line:
        return None
    depth, quote, i = 0, "", 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and line.startswith(_ONELINE_ARROW, i):
            pattern, fix = line[:i].strip(), line[i + len(_ONELINE_ARROW):].strip()
            if not pattern or not fix:
                raise ParseError("`PATTERN => FIX` needs both a pattern and a fix", line=1)
            return pattern, fix
        i += 1
    return None


def _yaml_docs(text: str) -> list[_Doc]:
    try:
        loader = _Loader(text)  # reads the stream at once: refuses control characters here
    except yaml.YAMLError as exc:
        raise ParseError(f"not valid YAML: {exc}") from None
    docs: list[_Doc] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            if data is None:  # an empty document, e.g. after a trailing `---`
                continue
            docs.append(_Doc(data, node.start_mark.line + 1, _key_lines(node)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ParseError(f"not valid YAML: {problem}",
                         line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ParseError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return docs


def _key_lines(node) -> dict:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value
            if isinstance(key, yaml.ScalarNode)}


def _json_docs(text: str) -> list[_Doc]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not valid JSON: {exc.msg} (column {exc.colno})",
                         line=exc.lineno) from None
    except RecursionError:  # nested about a thousand levels
        raise ParseError(f"nested deeper than {MAX_NESTING} levels; flatten the rule") from None
    if _nesting(data) > MAX_NESTING:
        raise ParseError(f"nested deeper than {MAX_NESTING} levels; flatten the rule")
    return [_Doc(item, None, {}) for item in (data if isinstance(data, list) else [data])]


def _nesting(value: Any) -> int:
    """How many lists and mappings deep `value` goes (a scalar: 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if items is not None:
            deepest = max(deepest, depth)
            stack += [(item, depth + 1) for item in items]
    return deepest


def _default_id(number: int) -> str:
    return f"rule-{number}"


def _rule_from(doc: _Doc, number: int) -> Rule:
    data = doc.data

    def fail(message: str, key: str | None = None) -> ParseError:
        return ParseError(message, line=doc.key_lines.get(key, doc.line), hunk=number)

    if not isinstance(data, dict):
        raise fail(f"a rule must be a mapping with `rule` and `fix`, not {type(data).__name__}")
    for key in data:
        if key in _UNSUPPORTED_KEYS:
            raise fail(_UNSUPPORTED_KEYS[key], key)
        if key not in _RULE_KEYS and key not in _IGNORED_KEYS:
            raise fail(f"unknown key {key!r}; a rule has {', '.join(_RULE_KEYS)}", key)
    if "rule" not in data:
        raise fail("missing `rule` (what to match, e.g. `rule: {pattern: print($A)}`)")
    rule_id = data.get("id", _default_id(number))
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise fail("`id` must be a non-empty string", "id")
    for key in ("rule", "constraints", "transform"):
        value = data.get(key)
        if value is not None and (not isinstance(value, dict) or not value):
            raise fail(f"`{key}` must be a non-empty mapping", key)
    for name in data.get("constraints") or {}:
        if not isinstance(name, str) or not _METAVAR.fullmatch("$" + name):
            raise fail(f"constraint key {name!r} is not a metavariable name (like A or ARGS)",
                       "constraints")
    message = data.get("message")
    if message is not None and not isinstance(message, str):
        raise fail("`message` must be a string", "message")
    language = data.get("language")
    if language is not None and not isinstance(language, str):
        raise fail("`language` must be a string", "language")
    rule = Rule(
        id=rule_id, language=_checked_language(language, doc.key_lines.get("language", doc.line),
                                               number),
        rule=data["rule"], constraints=data.get("constraints"), transform=data.get("transform"),
        fix=_checked_fix(data.get("fix"), fail), message=message)
    _check_fix_names(rule, line=doc.key_lines.get("fix", doc.line), number=number)
    if rule.language:
        _compile_check(rule, line=doc.key_lines.get("rule", doc.line), number=number)
    return rule


def _checked_language(language: str | None, line: int | None, number: int) -> str | None:
    if language is None:
        return None
    canonical = normalize_language(language)
    if canonical is None:
        raise ParseError(f"unknown language {language!r}; ast-grep knows "
                         f"{', '.join(sorted(LANGUAGES))}", line=line, hunk=number)
    return canonical


def _checked_fix(fix: Any, fail) -> str | dict | None:
    if fix is None or isinstance(fix, str):
        return fix
    if isinstance(fix, list):
        raise fail("a list of fixes is not supported; give one `fix`", "fix")
    if not isinstance(fix, dict):
        raise fail(f"`fix` must be a string or a mapping with `template`, not "
                   f"{type(fix).__name__}", "fix")
    unknown = [k for k in fix if k not in _FIX_KEYS and k != "title"]
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} in `fix`; it has {', '.join(_FIX_KEYS)}", "fix")
    if not isinstance(fix.get("template"), str):
        raise fail("`fix` as a mapping needs a string `template`", "fix")
    for key in ("expandStart", "expandEnd"):
        if key in fix and (not isinstance(fix[key], dict) or not fix[key]):
            raise fail(f"`fix.{key}` must be a rule mapping", "fix")
    return {k: fix[k] for k in _FIX_KEYS if k in fix}


def _captured_names(rule: Any) -> set[str]:
    """The metavariables a rule captures: named ones in every `pattern` (and pattern `context`)."""
    names: set[str] = set()
    if isinstance(rule, list):
        for item in rule:
            names |= _captured_names(item)
    elif isinstance(rule, dict):
        for key, value in rule.items():
            if key == "pattern":
                text = value.get("context") if isinstance(value, dict) else value
                if isinstance(text, str):
                    names |= {m.group(1) or m.group(2) for m in _METAVAR.finditer(text)}
            else:
                names |= _captured_names(value)
    return {name for name in names if not name.startswith("_")}


def _check_fix_names(rule: Rule, *, line: int | None, number: int) -> None:
    template = rule.template
    if template is None:
        return
    captured = _captured_names(rule.rule)
    available = captured | set(rule.transform or {})
    for m in _METAVAR.finditer(template):
        name = m.group(1) or m.group(2)
        if name.startswith("_"):
            raise ParseError(f"fix uses {m.group(0)}, but metavariables starting with `_` "
                             "capture nothing; name it (e.g. $A) in the pattern", line=line,
                             hunk=number)
        if name not in available:
            known = ", ".join("$" + n for n in sorted(available)) or "none"
            raise ParseError(f"fix uses {m.group(0)}, which rule {rule.id!r} does not capture "
                             f"(captured: {known})", line=line, hunk=number)


def _compile_check(rule: Rule, *, line: int | None, number: int) -> None:
    """Let ast-grep compile the rule (on an empty file) so a bad rule fails at parse time."""
    root = _sg_root("", rule.language).root()
    expansions = [rule.fix[key] for key in ("expandStart", "expandEnd")
                  if isinstance(rule.fix, dict) and key in rule.fix]
    try:
        root.find_all(rule.config())
        for relation in expansions:
            matcher, stop = _expansion(relation)
            root.matches(**matcher)
            if isinstance(stop, dict):
                root.matches(**stop)
    except Exception as exc:  # ast-grep-py raises plain Exception/RuntimeError for bad rules
        raise ParseError(f"rule {rule.id!r}: {_library_message(exc)}", line=line,
                         hunk=number) from None


def _find_all(root: SgNode, rule: Rule, path: str | None = None) -> list[SgNode]:
    try:
        return root.find_all(rule.config())
    except Exception as exc:  # ast-grep-py raises plain Exception/RuntimeError for bad rules
        raise ApplyError(f"rule {rule.id!r}: {_library_message(exc)}", file=path) from None


# ---------------------------------------------------------------------------------------------
# Rendering


# A plain YAML scalar the grammar (grammars/rule.lark, PLAIN) also accepts.
_PLAIN = re.compile(r"""[^\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\s"'#&*!|>%@`\[\]{},?:\-]([^\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\n:#]|:[^\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\s#]|[^\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\s:]#)*""")
_BLOCK_KEYS = frozenset({"fix", "template"})  # always a `|-` block: no escaping for the model
_MULTILINE_KEYS = frozenset({"pattern", "context"})  # a block if multi-line (grammar: value_N)


def render(edit: RuleSet) -> str:
    """Canonical YAML, one document per rule (`---` between them), in the grammar's shape."""
    return "---\n".join(_render_rule(rule) for rule in edit.rules)


def _render_rule(rule: Rule) -> str:
    values = {"id": rule.id, "language": rule.language, "message": rule.message,
              "rule": rule.rule, "constraints": rule.constraints, "transform": rule.transform,
              "fix": rule.fix}
    lines: list[str] = []
    for key in _RULE_KEYS:
        if values[key] is not None:
            lines += _entry(key, values[key], 0)
    return "\n".join(lines) + "\n"


def _entry(key: str, value: Any, col: int) -> list[str]:
    """`key: value` for a key at column `col`: the first line unindented, the rest indented."""
    head = f"{_scalar(key)}:"
    if isinstance(value, dict) and value:
        return [head] + _mapping(value, col + 2)
    if isinstance(value, list) and value:
        return [head] + _sequence(value, col)
    if isinstance(value, str) and (key in _BLOCK_KEYS or key in _MULTILINE_KEYS and "\n" in value):
        block = _block(value, col + 2)
        if block is not None:
            return [f"{head} {block[0]}"] + block[1:]
    return [f"{head} {_scalar(value)}"]


def _mapping(mapping: dict, col: int) -> list[str]:
    lines: list[str] = []
    for key, value in mapping.items():
        first, *rest = _entry(key, value, col)
        lines += [" " * col + first] + rest
    return lines


def _sequence(items: list, col: int) -> list[str]:
    """Block sequence with `- ` at `col` (the parent key's column), mapping items at col + 2."""
    lines: list[str] = []
    for item in items:
        if isinstance(item, dict) and item:
            first, *rest = _mapping(item, col + 2)
            lines += [" " * col + "- " + first[col + 2:]] + rest
        else:
            lines.append(" " * col + "- " + _scalar(item))
    return lines


def _block(text: str, col: int) -> list[str] | None:
    """A literal block scalar (`|-`, or `|` for one final newline) indented to `col`, if it can
    hold `text` exactly; else None."""
    body = text[:-1] if text.endswith("\n") else text
    if (not body or body[0] in " \t\n" or body.endswith("\n") or "\r" in body
            or not all(line.isprintable() for line in body.replace("\t", " ").split("\n"))):
        return None
    lines = ["|" if text.endswith("\n") else "|-"]
    lines += [" " * col + line if line else "" for line in body.split("\n")]
    return lines if _reads_back("\n".join(lines) + "\n", text) else None


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and _reads_back(value, value):
            return value
        return _quote(value)
    return json.dumps(value, ensure_ascii=False)  # a nested list: flow style is valid YAML


def _reads_back(rendered: str, value: str) -> bool:
    """Does YAML read `k: <rendered>` as `value`?"""
    try:
        return yaml.safe_load("k: " + rendered) == {"k": value}
    except yaml.YAMLError:
        return False


def _quote(text: str) -> str:
    """A YAML double-quoted scalar using only JSON's escapes (plus \\U for astral controls)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def looks_like(text: str) -> bool:
    """A YAML/JSON mapping with `rule:` and one of `id`/`language`/`fix`, or `PATTERN => FIX`."""
    has_rule = re.search(r'(^|[{,])\s*"?rule"?\s*:', text, re.M)
    has_other = re.search(r'(^|[{,])\s*"?(id|language|fix)"?\s*:', text, re.M)
    if has_rule and has_other:
        return True
    try:
        return _split_oneline(text) is not None
    except ParseError:
        return False


# ---------------------------------------------------------------------------------------------
# Applying


def apply(files: Files, edit: RuleSet, *, target: str | None = None,
          partial: bool = False) -> list[FileChange]:
    """Rewrite `target` with every rule that has a fix and fits its language."""
    if target is None:
        raise ApplyError("a rule edit rewrites a file; name the target file")
    _require_fix(edit)
    language = language_of(target)
    named = sorted({r.language for r in edit.rules if r.fix is not None and r.language})
    if language is None:
        if len(named) != 1:
            raise ApplyError("cannot tell the file's language from its name; give the rule a "
                             "`language`", file=target)
        language = named[0]  # an extension ast-grep does not know: the rule says what it is
    rules = _rules_for(edit, language, fixing=True)
    if not rules:
        raise ApplyError(f"the rules are for {', '.join(named)}, but this is a {language} file",
                         file=target)
    return _rewrite_files(files, [(target, language, rules)], partial)


def apply_to_paths(files: Files, edit: RuleSet, paths: list[str], *,
                   partial: bool = False) -> list[FileChange]:
    """Rewrite each of `paths` whose language (from its extension) some fixing rule is for."""
    _require_fix(edit)
    plan = []
    for path in paths:
        language = language_of(path)
        rules = _rules_for(edit, language, fixing=True) if language else []
        if rules:
            plan.append((path, language, rules))
    return _rewrite_files(files, plan, partial)


def matches(files: Files, edit: RuleSet, paths: list[str]) -> list[Match]:
    """Every match of every rule (with or without a fix) in `paths`, for `--check`."""
    return _within_time_limit(_matches, files, edit, paths)


def _matches(files: Files, edit: RuleSet, paths: list[str]) -> list[Match]:
    found: list[Match] = []
    for path in paths:
        language = language_of(path)
        if language is None:
            continue
        rules = _rules_for(edit, language, fixing=False)
        if not rules:
            continue
        timelimit.note(path)
        root = _sg_root(files.read(path).text, language, path).root()
        hits = []
        for order, rule in enumerate(rules):
            for node in _find_all(root, rule, path):
                start = node.range().start
                hits.append((start.index, order, Match(path, start.line + 1, start.column + 1,
                                                       rule.id, node.text())))
        found += [hit for _, _, hit in sorted(hits, key=lambda h: h[:2])]
    return found


def _require_fix(edit: RuleSet) -> None:
    if not any(rule.fix is not None for rule in edit.rules):
        raise ApplyError("no rule has a `fix`, so there is nothing to rewrite (check mode lists "
                         "matches)")


def _rules_for(edit: RuleSet, language: str, *, fixing: bool) -> list[Rule]:
    return [rule for rule in edit.rules if rule.language in (None, language)
            and (rule.fix is not None or not fixing)]


def _rewrite_files(files: Files, plan: list[tuple[str, str, list[Rule]]],
                   partial: bool) -> list[FileChange]:
    return _within_time_limit(_rewrite_staged, files, plan, partial)


def _within_time_limit(function, *args):
    """`function(*args)` in a child process killed after TIME_LIMIT seconds (see timelimit)."""
    try:
        return timelimit.run(TIME_LIMIT, function, *args)
    except timelimit.TimeLimitError as exc:
        raise ApplyError(f"the rules did not finish matching in {exc.seconds:g} s; simplify them "
                         "(nested `has`/`inside` with `stopBy: end` can take hours on deeply "
                         "nested code)", file=exc.note or None) from None
    except ChildProcessError as exc:
        raise ApplyError(f"ast-grep crashed: {exc}") from None


def _rewrite_staged(files: Files, plan: list[tuple[str, str, list[Rule]]],
                    partial: bool) -> list[FileChange]:
    staging = Staging(files)
    for path, language, rules in plan:
        timelimit.note(path)
        try:
            text = staging.read(path).text
            new_text = rewrite(text, language, rules, path)
        except EditError as exc:
            raise ApplyError(exc.message, file=exc.file or path, line=exc.line, hunk=exc.hunk,
                             applied=staging.changes() if partial else None) from None
        if new_text != text:
            staging.write(path, new_text)
    return staging.changes()


def rewrite(text: str, language: str, rules: list[Rule], path: str | None = None) -> str:
    """`text` with every non-overlapping match of `rules` (all with a fix) replaced."""
    root = _sg_root(text, language, path).root()
    edits = []  # (start, -end, rule order, end, replacement): sorted, outer and earlier first
    for order, rule in enumerate(rules):
        for node in _find_all(root, rule, path):
            start, end = _fix_range(node, rule, path)
            edits.append((start, -end, order, end, _fill(rule, node, text)))
    edits.sort(key=lambda e: e[:3])
    out: list[str] = []
    done = 0  # text[:done] is settled
    for start, _, _, end, replacement in edits:
        if start < done:  # inside or across a match already replaced
            continue
        out += [text[done:start], replacement]
        done = end
    out.append(text[done:])
    return "".join(out)


def _fix_range(node: SgNode, rule: Rule, path: str | None) -> tuple[int, int]:
    """The span the fix replaces: the match, widened by `expandStart`/`expandEnd` if given."""
    span = node.range()
    start, end = span.start.index, span.end.index
    if not isinstance(rule.fix, dict):
        return start, end
    try:
        if "expandStart" in rule.fix:
            reached = _expand_to(node, rule.fix["expandStart"], forward=False)
            start = reached.range().start.index if reached else start
        if "expandEnd" in rule.fix:
            reached = _expand_to(node, rule.fix["expandEnd"], forward=True)
            end = reached.range().end.index if reached else end
    except Exception as exc:  # a bad expansion rule, from ast-grep-py
        raise ApplyError(f"rule {rule.id!r}: fix expansion: {_library_message(exc)}",
                         file=path) from None
    return start, end


def _expansion(relation: dict) -> tuple[dict, Any]:
    """(the rule a sibling must match, stopBy); ast-grep's default stopBy is `neighbor`."""
    matcher = {k: v for k, v in relation.items() if k != "stopBy"}
    return matcher, relation.get("stopBy", "neighbor")


def _expand_to(node: SgNode, relation: dict, *, forward: bool) -> SgNode | None:
    """The first sibling after (before) `node` that matches, searched as far as stopBy allows."""
    matcher, stop = _expansion(relation)
    if stop == "neighbor":
        nearest = node.next() if forward else node.prev()
        siblings = [nearest] if nearest is not None else []
    else:
        siblings = node.next_all() if forward else node.prev_all()  # nearest first
    for sibling in siblings:
        if sibling.matches(**matcher):
            return sibling
        if isinstance(stop, dict) and sibling.matches(**stop):
            return None
    return None


def _fill(rule: Rule, node: SgNode, text: str) -> str:
    """The rule's fix template with its metavariables filled from the match `node`."""
    template = rule.template
    transformed = set(rule.transform or {})
    out: list[str] = []
    length = 0  # len("".join(out))
    verbatim: set[int] = set()  # offsets of line starts to leave unindented (see below)
    pos = 0

    def emit(piece: str) -> None:
        nonlocal length
        out.append(piece)
        length += len(piece)

    for m in _METAVAR.finditer(template):
        emit(template[pos:m.start()])
        pos = m.end()
        name = m.group(1) or m.group(2)
        indent = _indent_at(template, m.start())
        if name in transformed:
            value = node.get_transformed(name) or ""  # None: its source was not captured
            first, *rest = value.split("\n")  # ast-grep de-indents it already
            emit(first + "".join("\n" + (indent + line if line else "") for line in rest))
            continue
        span = _captured_span(node, name)
        if span is None:  # captured by a branch of `any` that did not match: empty, as ast-grep
            continue
        start, end = span
        source_indent = _indent_at(text, start)
        first, *rest = text[start:end].split("\n")
        emit(first)
        for line in rest:
            emit("\n")
            if line.strip() and line.startswith(source_indent):
                emit(indent + line[len(source_indent):])
            else:
                # Blank, or less indented than the captured node's own line: text the indentation
                # does not own (e.g. the inside of a multi-line string). It stays exactly as it was.
                verbatim.add(length)
                emit(line)
    emit(template[pos:])
    filled = _indent_later_lines("".join(out), _indent_at(text, node.range().start.index),
                                 verbatim)
    if newline_of(text) == "\r\n":
        filled = re.sub(r"(?<!\r)\n", "\r\n", filled)
    return filled


def _captured_span(node: SgNode, name: str) -> tuple[int, int] | None:
    """(start, end) of what `name` captured: one node, or first to last of a `$$$` list."""
    single = node.get_match(name)
    if single is not None:
        span = single.range()
        return span.start.index, span.end.index
    many = node.get_multiple_matches(name)
    if many:
        return many[0].range().start.index, many[-1].range().end.index
    return None


def _indent_at(text: str, offset: int) -> str:
    """The leading spaces and tabs of the line holding `offset`."""
    line_start = text.rfind("\n", 0, offset) + 1
    return re.match(r"[ \t]*", text[line_start:offset]).group(0)


def _indent_later_lines(text: str, indent: str, verbatim: set[int]) -> str:
    """Prefix every line after the first with `indent`, except empty ones and `verbatim` starts."""
    if not indent:
        return text
    out = []
    offset = 0
    for i, line in enumerate(text.split("\n")):
        out.append(line if i == 0 or not line or offset in verbatim else indent + line)
        offset += len(line) + 1
    return "\n".join(out)
