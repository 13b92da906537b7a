"""`edit recover [--root DIR]`: finish off commits that were cut short.

A commit killed mid-way (SIGKILL, a crash, a power loss) leaves its journal in the root; every
read or commit under that root rolls it back first, and so does this command, which also deletes
`*.edit-tmp` files that no running commit is using. Exit 0 (whether or not there was anything to
do), 1 if rolling back failed, 2 usage error.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..files import recover, sweep_temps
from . import EXIT_OK, EXIT_REJECTED, app
from .apply import usage_error


@app.command("recover")
def recover_command(
    root: Path = typer.Option(Path("."), "--root", help="Folder whose interrupted commits to undo."),
) -> None:
    """Roll back interrupted commits under --root (all files as before) and delete stray temp files."""
    if not root.is_dir():
        usage_error(f"--root {root}: not a folder")
    try:
        done = recover(root) + sweep_temps(root)
    except OSError as exc:
        typer.echo(f"edit recover: {exc}", err=True)
        raise typer.Exit(EXIT_REJECTED)
    for line in done:
        typer.echo(line)
    typer.echo(f"{len(done)} recovered" if done else "nothing to recover")
    raise typer.Exit(EXIT_OK)
