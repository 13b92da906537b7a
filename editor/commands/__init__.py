"""The CLI's Typer app. Each command lives in its own module here and registers itself on `app`.

Heavy imports (torch, transformers) happen inside the commands that need them, so `edit apply`
starts fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Structured edits for code and text: propose them with a local model, "
                       "apply them safely.")
model_app = typer.Typer(no_args_is_help=True, help="Install and list models.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results go to docs/BENCHMARKS.md).")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")

# Exit codes shared by every command.
EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
