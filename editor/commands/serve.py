"""`edit serve`: the MCP server (tools propose_edit, apply_edit, validate) on stdin/stdout."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .propose import GRAMMAR_HELP, SERVER_HELP, SERVER_MODEL_HELP


@app.command("serve")
def serve_command(
    root: Path = typer.Option(Path("."), "--root", exists=True, file_okay=False,
                              help="Folder the tools work in; nothing outside it is read or written."),
    model: str = typer.Option("default", "--model", help="Model for propose_edit: a name from "
                                                         "`edit model list`, a .gguf file or a folder."),
    server: str = typer.Option(None, "--server", help=SERVER_HELP),
    server_model: str = typer.Option(None, "--server-model", help=SERVER_MODEL_HELP),
    grammar: bool = typer.Option(True, "--grammar/--no-grammar", help=GRAMMAR_HELP),
) -> None:
    """Serve the edit tools to an agent over MCP (stdio). See docs/AGENTS.md."""
    from ..server import serve

    serve(root, model, server=server, server_model=server_model, grammar=grammar)
