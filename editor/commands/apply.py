"""`edit apply EDIT` and `edit validate FILE...`.

Output: the unified diff of what changed (coloured on a terminal, plain otherwise or with NO_COLOR)
and a one-line summary on stdout; errors on stderr as `file:line: message`. `--json` prints one
JSON object instead. Exit codes: 0 applied, 1 rejected (nothing written; with --partial, the
changes before the failing hunk are), 2 usage error.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from .. import validation
from ..applying import FORMATS, ApplyResult, apply_edit
from ..errors import EditError
from ..files import MAX_FILE_BYTES, decode, read_document, read_regular
from . import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, app

FormatName = Enum("FormatName", {name: name for name in FORMATS}, type=str)

# Diff lines `edit apply` prints at most; past them it says how many more there are.
DIFF_LINES = 2000
DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"),
               ("\\", "dim"))


@app.command("apply")
def apply_command(
    edit: str = typer.Argument(..., metavar="EDIT",
                               help="File holding the edit, or '-' for stdin. With --format rule, "
                                    "a one-line rule ('print($A) => logger.info($A)') may be given as is."),
    format: FormatName = typer.Option("auto", "--format", help="The edit's format (auto: detect it)."),
    file: list[str] = typer.Option([], "--file", "-f", metavar="TARGET",
                                   help="Target file: the one an OT edit, single-file diff or bare "
                                        "apply_patch body applies to; the files (globs allowed) a rule "
                                        "runs over. Repeat for several."),
    root: Path = typer.Option(Path("."), "--root", help="Folder the edit's paths are relative to; "
                                                         "nothing outside it is touched."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    partial: bool = typer.Option(False, "--partial", help="When a hunk fails, keep the ones before it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: ok, files, errors."),
    allow_syntax_errors: bool = typer.Option(False, "--allow-syntax-errors",
                                             help="Apply even if the edit introduces syntax errors."),
    language: str | None = typer.Option(None, "--language", help="Validate as this language "
                                                                  "(default: from extension or shebang)."),
    force: bool = typer.Option(False, "--force", help="Rewrite read-only files too."),
) -> None:
    """Apply an edit (apply_patch, unified diff, OT ops or an ast-grep rule): validate, then write atomically."""
    if not root.is_dir():
        usage_error(f"--root {root}: not a folder")
    text = _read_edit(edit, format.value)
    try:
        result = apply_edit(text, format=format.value, root=str(root), targets=file, partial=partial,
                            allow_syntax_errors=allow_syntax_errors, language=language, dry_run=dry_run,
                            force=force)
    except ValueError as exc:
        usage_error(str(exc))
    except Exception as exc:  # a bug, not bad input: still no traceback, and nothing was written
        typer.echo(f"edit apply: internal error ({type(exc).__name__}: {exc}); nothing written", err=True)
        raise typer.Exit(EXIT_REJECTED)
    shown = result.changes if (result.written or (dry_run and not result.errors)) else []
    if as_json:
        typer.echo(json.dumps({
            "ok": result.ok,
            "files": [{"path": c.dest, "status": c.status, "diff": c.diff()} for c in shown],
            "errors": [_error_json(e) for e in result.errors],
        }))
    else:
        out = console()
        print_changes(shown, out)
        for error in result.errors:
            typer.echo(f"error: {error}", err=True)
        out.print(Text(_summary(result, shown, dry_run)))
    raise typer.Exit(EXIT_OK if result.ok else EXIT_REJECTED)


@app.command("validate")
def validate_command(
    paths: list[Path] = typer.Argument(..., metavar="FILE...", exists=True, dir_okay=False,
                                       help="Files to check for syntax errors."),
    language: str | None = typer.Option(None, "--language", help="Parse as this language "
                                                                  "(default: from extension or shebang)."),
) -> None:
    """List syntax errors (tree-sitter ERROR and MISSING nodes) as file:line:col; exit 1 if any."""
    if language is not None:
        try:
            validation.canonical_language(language)
        except ValueError as exc:
            usage_error(str(exc))
    failed = False
    unknown: list[str] = []
    for path in paths:
        try:
            text = read_document(path).text
        except EditError as exc:
            typer.echo(f"{exc}", err=True)
            failed = True
            continue
        except OSError as exc:
            typer.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            failed = True
            continue
        lang, issues = validation.syntax_issues(str(path), text, language)
        if lang is None:
            unknown.append(str(path))
        for issue in issues:
            typer.echo(f"{path}:{issue.line}:{issue.column}: {issue.describe()}")
        failed = failed or bool(issues)
    if unknown:
        what = "nothing was validated" if len(unknown) == len(paths) else "not validated"
        typer.echo(f"{what}: unknown language for {', '.join(unknown)} (name one with --language)",
                   err=True)
    raise typer.Exit(EXIT_REJECTED if failed else EXIT_OK)


def _read_edit(edit: str, format: str) -> str:
    path = Path(edit)
    if edit == "-" or path.is_file():
        try:
            if edit == "-":
                data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
            else:
                data = read_regular(path, edit)[0]
            if len(data) > MAX_FILE_BYTES:
                usage_error(f"cannot read EDIT: stdin holds over {MAX_FILE_BYTES} bytes")
            return decode(data, "<stdin>" if edit == "-" else edit).text
        except EditError as exc:
            usage_error(f"cannot read EDIT: {exc}")
        except OSError as exc:
            usage_error(f"cannot read EDIT {edit}: {exc.strerror or exc}")
    if format == "rule" and "=>" in edit:  # the one-line rule form, given literally
        return edit
    usage_error(f"cannot read EDIT {edit!r}: no such file (give a path, or '-' for stdin)")


def usage_error(message: str) -> NoReturn:
    """Print `edit: message` on stderr and exit 2 (a usage error: nothing was tried)."""
    typer.echo(f"edit: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _error_json(error: EditError) -> dict:
    message = error.message + (f" (hunk {error.hunk})" if error.hunk else "")
    return {"file": error.file, "line": error.line, "message": message}


def console() -> Console:
    """A stdout console for diffs. rich already writes plain text when stdout is not a terminal;
    for NO_COLOR it drops colours but keeps bold, so no colour system at all keeps it fully plain."""
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(highlight=False, soft_wrap=True, color_system=None if plain else "auto")


def print_diff(diff: str, out: Console | None = None) -> None:
    """A unified diff on stdout: coloured on a terminal, plain otherwise or with NO_COLOR."""
    _print_lines(diff.splitlines(), out or console())


def print_changes(changes: list, out: Console) -> None:
    """The diffs of `changes`, DIFF_LINES lines at most; then how many lines were left out."""
    room = DIFF_LINES
    left_out = 0
    for change in changes:
        lines = change.diff().splitlines()
        _print_lines(lines[:room], out)
        left_out += max(len(lines) - room, 0)
        room = max(room - len(lines), 0)
    if left_out:
        noun = "file" if len(changes) == 1 else "files"
        out.print(Text(f"... {left_out} more diff lines ({len(changes)} {noun} changed)", style="dim"))


def _print_lines(lines: list[str], out: Console) -> None:
    for line in lines:
        style = next((s for prefix, s in DIFF_STYLES if line.startswith(prefix)), "")
        out.print(Text(line, style=style))


def _summary(result: ApplyResult, shown: list, dry_run: bool) -> str:
    parts = []
    if shown:
        statuses = Counter(change.status for change in shown)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        noun = "file" if len(shown) == 1 else "files"
        verb = "would change" if dry_run else "changed"
        if result.written and result.errors:
            verb = "changed before the failure"
        parts.append(f"{len(shown)} {noun} {verb}: {counts}")
    elif result.ok:
        parts.append("no changes")
    else:
        parts.append("rejected, nothing written")
    languages = sorted({r.language for r in result.reports if r.validated})
    broken = [r.path for r in result.reports if r.new_issues]
    unknown = [r.path for r in result.reports if not r.validated]
    if broken:
        parts.append(f"new syntax errors in {', '.join(broken)}")
    elif languages:
        parts.append(f"validated: {', '.join(languages)}")
    if unknown:
        parts.append(f"not validated: unknown language ({', '.join(unknown)})")
    return "; ".join(parts)
