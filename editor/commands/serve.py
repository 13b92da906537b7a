"""`edit serve`: the MCP server (tools propose_edit, apply_edit, validate) on stdin/stdout."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app


@app.command("serve")
def serve_command(
    root: Path = typer.Option(Path("."), "--root", exists=True, file_okay=False,
                              help="Folder the tools work in; nothing outside it is read or written."),
    model: str = typer.Option("default", "--model", help="Model for propose_edit: a name from "
                                                         "`edit model list`, a .gguf file or a folder."),
) -> None:
    """Serve the edit tools to an agent over MCP (stdio). See docs/AGENTS.md."""
    from ..server import serve

    serve(root, model)
