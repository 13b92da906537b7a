"""The pre-commit hooks' entry points (see .pre-commit-hooks.yaml and docs/PRECOMMIT.md).

pre-commit appends the staged file names to a hook's command line, so these commands take the
files as their arguments and everything else as options:

    edit hook-rules [--rules DIR]... [--check] FILE...       `edit rules`, the files last
    edit hook-instruction --instruction TEXT FILE...         the model applies TEXT to each file

Both are fixers: exit 1 when they changed a file (pre-commit then fails the commit so the change
can be reviewed and re-staged), 0 when there was nothing to do.
"""

from __future__ import annotations

import glob
from pathlib import Path

import typer

from ..applying import commit
from ..errors import EditError
from ..files import FileChange, Workspace, normalize
from . import EXIT_OK, EXIT_REJECTED, app
from .apply import console, print_diff
from .propose import SERVER_HELP, SERVER_MODEL_HELP
from .rules import DEFAULT_RULES, run


@app.command("hook-rules")
def hook_rules_command(
    files: list[str] = typer.Argument(None, metavar="FILES", show_default=False,
                                      help="The files to fix (pre-commit passes the staged ones)."),
    rules: list[Path] = typer.Option([], "--rules", metavar="RULES",
                                     help=f"Rule file or folder (default: {DEFAULT_RULES}); repeat "
                                          "for several."),
    check: bool = typer.Option(False, "--check", help="Only report the matches; write nothing."),
) -> None:
    """pre-commit hook edit-rules: `edit rules`, taking the files as arguments."""
    if not files:
        raise typer.Exit(EXIT_OK)
    # the names are files, not patterns: a '[' in one must not make it a glob
    raise typer.Exit(run(rules, [glob.escape(f) for f in files], root=Path("."), check=check))


@app.command("hook-instruction")
def hook_instruction_command(
    files: list[str] = typer.Argument(None, metavar="FILES", show_default=False,
                                      help="The files to edit (pre-commit passes the staged ones)."),
    instruction: str | None = typer.Option(None, "--instruction",
                                           help="What the model should do to each file. Without "
                                                "it the hook does nothing."),
    format: str = typer.Option("auto", "--format", help="The edit format the model writes."),
    model: str = typer.Option("default", "--model", help="Model: a name from `edit model list`, a "
                                                           ".gguf file or a folder."),
    server: str = typer.Option(None, "--server", help=SERVER_HELP),
    server_model: str = typer.Option(None, "--server-model", help=SERVER_MODEL_HELP),
) -> None:
    """pre-commit hook edit-instruction: the local model applies one instruction to each file.

    Slow (seconds to a minute per file on a CPU) and off unless configured with --instruction.
    The changes are validated with tree-sitter and written atomically: all of them or none.
    """
    if not instruction or not instruction.strip():
        typer.echo("edit-instruction: no --instruction configured "
                   "(args: [--instruction, '...']); nothing to do", err=True)
        raise typer.Exit(EXIT_OK)
    from decoding.model_registry import ModelError
    from decoding.server_client import ServerError

    from ..propose import Editor

    workspace = Workspace(".")
    changes: list[FileChange] = []
    errors: list[EditError] = []
    try:
        editor = Editor(model=model, server=server, server_model=server_model)
        for path in files or []:
            try:
                old = workspace.read(path)
                result = editor.edit(workspace.resolve(path), instruction, format=format,
                                     path=normalize(path))
            except EditError as exc:
                errors.append(exc)
                continue
            if not result.ok:
                last = result.diagnostics[-1]["message"] if result.diagnostics else "no edit"
                errors.append(EditError(f"every edit the model proposed was rejected; the last: {last}",
                                        file=result.path))
            elif result.new_text != old.text:
                changes.append(FileChange(result.path, old, result.new_text))
    except (ModelError, ServerError) as exc:
        typer.echo(f"edit-instruction: {exc}", err=True)
        raise typer.Exit(EXIT_REJECTED) from None
    write_errors = commit(workspace, changes)
    if not write_errors:
        out = console()
        for change in changes:
            print_diff(change.diff(), out)
    for error in errors + write_errors:
        typer.echo(f"error: {error}", err=True)
    if write_errors:
        typer.echo("rejected, nothing written", err=True)
    raise typer.Exit(EXIT_REJECTED if changes or errors else EXIT_OK)
