"""`edit rules [RULES...] --file FILE...`: ast-grep rewrite rules as a fixer or a check.

RULES are rule files (YAML, a `---` stream of rules, or JSON; see docs/FORMATS.md) or folders of them
(every *.yml, *.yaml and *.json below, in name order); without any, the folder `.edit-rules` under
--root. FILE names the files to run over, globs allowed, relative to --root.

Fixing (the default), like other pre-commit fixers: every match of a rule with a `fix` is
rewritten, the changed files are validated with tree-sitter and written atomically (all or none),
and the exit code is 1 when a file changed (re-stage it) or a rule without a `fix` matched, 0 when
nothing matched. `--check` writes nothing: it prints `file:line:col: rule-id: matched text` for
each match and exits 1 if there is any. Exit 2: bad rules or usage.
"""

from __future__ import annotations

from pathlib import Path
import typer

from ..applying import commit, expand_targets
from ..errors import EditError, ParseError
from ..files import Workspace, decode
from ..formats import rule
from . import EXIT_OK, EXIT_REJECTED, app
from .apply import usage_error

DEFAULT_RULES = ".edit-rules"
RULE_SUFFIXES = (".yml", ".yaml", ".json")


@app.command("rules")
def rules_command(
    rules: list[Path] = typer.Argument(None, metavar="RULES", show_default=False,
                                       help=f"Rule files or folders of them (default: {DEFAULT_RULES} "
                                            "under --root)."),
    file: list[str] = typer.Option([], "--file", "-f", metavar="FILE",
                                   help="File to run the rules over (globs allowed); repeat for several."),
    check: bool = typer.Option(False, "--check", help="Only report the matches; write nothing."),
    root: Path = typer.Option(Path("."), "--root", help="Folder the files are relative to; nothing "
                                                         "outside it is touched."),
) -> None:
    """Rewrite files with ast-grep rules (exit 1 if any changed), or --check for matches."""
    raise typer.Exit(run(rules or [], file, root=root, check=check))


def run(sources: list[Path], patterns: list[str], *, root: Path, check: bool) -> int:
    """Run the rules of `sources` over the files `patterns` name; print what happened; the exit code."""
    if not root.is_dir():
        usage_error(f"--root {root}: not a folder")
    if not patterns:
        usage_error("no files: name them with --file (globs allowed)")
    workspace = Workspace(root)
    try:
        ruleset = load_rules(sources or [root / DEFAULT_RULES])
        paths = expand_targets(workspace, patterns)
    except EditError as exc:
        usage_error(str(exc))
    try:
        found = rule.matches(workspace, ruleset, paths)
        fixing = rule.RuleSet(tuple(r for r in ruleset.rules if r.fix is not None))
        changes = [] if check or not fixing.rules else rule.apply_to_paths(workspace, fixing, paths)
    except EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_REJECTED
    fixed_ids = {r.id for r in fixing.rules}
    changed = {change.path for change in changes}
    for match in found:
        # in fix mode, the matches left for the user: fixes that changed nothing are not news
        if check or match.rule_id not in fixed_ids or match.path in changed:
            typer.echo(format_match(match))
    if check:
        return EXIT_REJECTED if found else EXIT_OK
    errors = commit(workspace, changes)
    for error in errors:
        typer.echo(f"error: {error}", err=True)
    if errors:
        typer.echo("rejected, nothing written", err=True)
        return EXIT_REJECTED
    unfixable = [m for m in found if m.rule_id not in fixed_ids]
    if changes:
        typer.echo(f"fixed {len(changes)} file{'s' if len(changes) != 1 else ''}: "
                   f"{', '.join(sorted(changed))}")
    if unfixable:
        typer.echo(f"{len(unfixable)} match{'es' if len(unfixable) != 1 else ''} of rules without "
                   "a fix: change them by hand")
    return EXIT_REJECTED if changes or unfixable else EXIT_OK


def load_rules(sources: list[Path]) -> rule.RuleSet:
    """Every rule of the rule files and folders `sources`; errors name the rule file and line."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file())
        elif source.is_file():
            files.append(source)
        else:
            raise EditError("no such rule file or folder", file=str(source))
    rules: list[rule.Rule] = []
    defined_in: dict[str, Path] = {}  # rule id -> its file: matches are told apart by id
    for path in files:
        try:
            parsed = rule.parse(decode(path.read_bytes(), str(path)).text).rules
        except ParseError as exc:
            raise ParseError(exc.message, file=str(path), line=exc.line, hunk=exc.hunk) from None
        for number, parsed_rule in enumerate(parsed, 1):
            if parsed_rule.id in defined_in:
                raise ParseError(f"rule id {parsed_rule.id!r} is also used in {defined_in[parsed_rule.id]}; "
                                 "give each rule its own `id`", file=str(path), hunk=number)
            defined_in[parsed_rule.id] = path
        rules += parsed
    if not rules:
        raise EditError(f"no rules found (looked for {', '.join('*' + s for s in RULE_SUFFIXES)})",
                        file=", ".join(map(str, sources)))
    return rule.RuleSet(tuple(rules))


def format_match(match: rule.Match) -> str:
    """`file:line:col: rule-id: matched text` (its first line; '...' marks more)."""
    first, *rest = match.text.split("\n")
    return f"{match.path}:{match.line}:{match.column}: {match.rule_id}: {first}{' ...' if rest else ''}"
