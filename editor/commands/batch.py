"""`edit batch TASKS.jsonl`: many edits, sent concurrently to a server (or one at a time to the local model)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import EditError
from ..propose import DEFAULT_RETRIES
from . import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, app
from .propose import GRAMMAR_HELP, SERVER_HELP, SERVER_MODEL_HELP


@app.command("batch")
def batch_command(
    tasks_file: Path = typer.Argument(..., metavar="TASKS.jsonl", help='One task a line: {"file": PATH, '
                                      '"instruction": TEXT, "format": FORMAT (optional, default auto)}.'),
    server: str = typer.Option(None, "--server", help=SERVER_HELP),
    server_model: str = typer.Option(None, "--server-model", help=SERVER_MODEL_HELP),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1,
                                    help="Edits in flight at once (the server batches them); 1 without --server."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the results here as JSONL, in input order, after "
                                                       "every task; a rerun skips the tasks done (resumable). "
                                                       "Without it, the results go to stdout at the end."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Write each accepted edit. Without it nothing is written."),
    model: str = typer.Option("default", "--model", "-m", help="The local model, or with --server the tokenizer "
                                                               "that builds the prompts."),
    max_retries: int = typer.Option(DEFAULT_RETRIES, "--max-retries", help="Tries after a rejected edit, with the error fed back."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 is greedy."),
    grammar: bool = typer.Option(True, "--grammar/--no-grammar", help=GRAMMAR_HELP),
) -> None:
    """Edit many files, many edits in flight at once against a vLLM server; results keep the input order."""
    from decoding.model_registry import ModelError
    from decoding.server_client import ServerError

    from ..batch import read_results, read_tasks, run_batch, write_results

    err = Console(stderr=True)
    if server is None and concurrency > 1:
        err.print("the local model edits one file at a time: concurrency 1 (pass --server URL for more)")
        concurrency = 1
    try:
        tasks = read_tasks(tasks_file)
        previous = read_results(out) if out is not None else {}
    except (EditError, OSError) as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        from .propose import make_editor

        with err.status("loading the model..." if server is None else "loading the tokenizer..."):
            editor = make_editor(model=model, max_retries=max_retries, temperature=temperature, server=server,
                                 server_model=server_model, grammar=grammar)
        if server is not None and grammar:
            editor.backend.client.check_grammar()  # a server that takes no grammar: one clear error, up front
    except (ModelError, ServerError) as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("edits", total=len(tasks))

        def advance(rows, task) -> None:
            progress.update(bar, completed=len(rows))
            if out is not None:
                write_results(out, rows)

        rows = run_batch(editor, tasks, concurrency=concurrency, write=yes, previous=previous, on_result=advance)
        progress.update(bar, completed=len(rows))
    if out is None:
        for row in rows:
            print(json.dumps(row))
    statuses = ("written", "proposed", "rejected", "error")
    counts = {status: sum(r["status"] == status for r in rows) for status in statuses}
    err.print(", ".join(f"{n} {status}" for status, n in counts.items()) + (f"; results in {out}" if out else "")
              + ("" if yes or not counts["proposed"] else "; nothing written (--yes writes)"), highlight=False)
    raise typer.Exit(EXIT_OK if not counts["rejected"] and not counts["error"] else EXIT_REJECTED)
