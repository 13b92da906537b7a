"""`edit model train-mtp` (MTP heads for a model that ships none; the run: training/mtp_run.py) and `edit model
train-edit` (a LoRA adapter that teaches a model our edit formats; the run: training/edit_trainer.py)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from ..files import replace_text
from . import EXIT_REJECTED, model_app


@model_app.command("train-mtp")
def train_mtp(
    model: str = typer.Option("default", "--model", help="Model name, .gguf file or model folder."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder for the heads, card, cache and checkpoint."),
    heads: int = typer.Option(1, "--heads", min=1, help="MTP layers; 1 saves in the Qwen3.5 mtp.* layout "
                                                        "(chained at inference), more in the DeepSeek layout."),
    steps: int = typer.Option(600, "--steps", min=1, help="Most training steps (one sequence each)."),
    data: list[Path] | None = typer.Option(None, "--data", exists=True,
                                           help="Source folders or files (default: the Python stdlib and "
                                                "site-packages, whose vendored packages give real diffs)."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the cache and continue from the checkpoint."),
    minutes: float = typer.Option(40.0, "--minutes", min=0.01, help="Wall-time budget of the whole run."),
    sequences: int = typer.Option(300, "--sequences", min=1, help="Most training sequences to cache."),
    eval_sequences: int = typer.Option(16, "--eval-sequences", min=1, help="Held-out sequences."),
    cache_share: float = typer.Option(0.45, "--cache-share", min=0.05, max=0.9,
                                      help="Share of --minutes for caching the base model's targets."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (default: $EDIT_THREADS or 2)."),
    origins: int = typer.Option(48, "--origins", min=1, help="Loss origins sampled per sequence and step."),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Peak learning rate."),
    generated: int = typer.Option(0, "--generated", min=0,
                                  help="Also train on this many edit requests answered by the model itself "
                                       "(generated first, kept in OUT/generated; 1/16 as many held out)."),
    generated_repeat: int = typer.Option(3, "--generated-repeat", min=1,
                                         help="Times each generated sequence comes up per epoch."),
    answers: list[Path] | None = typer.Option(None, "--answers", exists=True, file_okay=False,
                                              help="Also train on the model's answers that earlier runs kept "
                                                   "(their OUT/generated folders), held out by file as "
                                                   "--generated's are."),
    init: Path | None = typer.Option(None, "--init", exists=True,
                                     help="Heads to start from (a file or folder saved by train-mtp) instead "
                                          "of the base's last layer."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train MTP heads by self-distillation on code and edit outputs, then measure held-out acceptance."""
    from decoding.model_loading import HEADS_FILE
    from decoding.model_registry import ModelError
    from training import mtp_run

    err = Console(stderr=True)
    with progress_bars(err) as on_progress:
        try:
            card = mtp_run.run(model, out, heads=heads, steps=steps, data=data, resume=resume, minutes=minutes,
                               sequences=sequences, eval_sequences=eval_sequences, cache_share=cache_share,
                               threads=threads, origins=origins, lr=lr, generated=generated,
                               generated_repeat=generated_repeat, answers=answers, init=init, seed=seed,
                               command=invocation("train-mtp"), on_progress=on_progress, say=err.print)
        except (ModelError, ValueError) as error:
            err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
    err.print(f"saved {out / HEADS_FILE} ({(out / HEADS_FILE).stat().st_size / 2**20:.1f} MiB); "
              f"held-out accept at k=1..4: {', '.join(f'{a:.2f}' for a in card['acceptance']['all']['accept'])}")


@model_app.command("train-edit")
def train_edit(
    model: str = typer.Option("default", "--model", help="Model name, .gguf file or model folder (trained without "
                                                         "any adapter of its own)."),
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False,
                              help="Examples JSONL: {repo, path, format, messages, answer} per line."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder for the adapter, its card and the checkpoint."),
    steps: int = typer.Option(200, "--steps", min=1, help="Optimizer steps (one packed sequence each)."),
    rank: int = typer.Option(8, "--rank", min=1, help="LoRA rank (alpha is twice it)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=16,
                                   help="Tokens per packed sequence; longer examples are dropped (and counted)."),
    lr: float = typer.Option(2e-4, "--lr", min=0.0, help="Peak learning rate."),
    eval_every: int = typer.Option(25, "--eval-every", min=1, help="Steps between held-out evaluations and checkpoints."),
    eval_examples: int = typer.Option(48, "--eval-examples", min=1, help="Most held-out examples evaluated each time."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT's checkpoint (same data and settings)."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda (bf16 autocast)."),
    minutes: float = typer.Option(None, "--minutes", min=0.01, help="Wall-time budget: stop, evaluate and save "
                                                                    "within it."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (default: $EDIT_THREADS or 2)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Teach a model our edit formats: LoRA on the attention and MLP projections, loss on the answers only,
    held-out loss on whole held-out repositories. The adapter merges into the weights at load (`edit --adapter OUT`)."""
    from decoding.model_registry import ModelError
    from training import edit_trainer

    err = Console(stderr=True)
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"expected cpu or cuda, not {device!r}", param_hint="--device")
    config = edit_trainer.TrainConfig(steps=steps, rank=rank, max_tokens=max_tokens, lr=lr, eval_every=eval_every,
                                      eval_examples=eval_examples, seed=seed)
    with progress_bars(err) as on_progress:
        try:
            card = edit_trainer.run(model, data, out, config, resume=resume, device=device, minutes=minutes,
                                    threads=threads, command=invocation("train-edit"), on_progress=on_progress,
                                    say=err.print)
        except (ModelError, ValueError) as error:
            err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
    err.print(f"saved the adapter in {out} after {card['steps']} steps ({card['seconds_per_step']:.2f} s a step, "
              f"stopped by {card['stopped_by']}); held-out loss {card['held_out_loss_before']:.3f} -> "
              f"{card['held_out_loss_after']:.3f}")


def invocation(command: str) -> str:
    """The command line as typed, for the card."""
    return " ".join([f"edit model {command}", *sys.argv[3:]])


@contextmanager
def progress_bars(err: Console):
    """A progress bar with ETA per phase; yields the `on_progress(phase, done, total, info)` the runs call."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        tasks = {}

        def on_progress(phase: str, done: int, total: int, info: dict) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total, info="")
            elif done < progress.tasks[tasks[phase]].completed:  # a phase run again (held-out loss): a fresh bar
                progress.reset(tasks[phase], total=total)
            text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
            progress.update(tasks[phase], completed=done, total=total, info=text)

        yield on_progress


@model_app.command("edit-data")
def edit_data(
    repos: list[Path] = typer.Option(..., "--repos", exists=True, file_okay=False,
                                     help="Git histories to read (bare mirrors or clones), each under a permissive "
                                          "licence."),
    out: Path = typer.Option(..., "--out", dir_okay=False, help="The triplets (JSONL)."),
    data_card: list[Path] | None = typer.Option(None, "--data-card", dir_okay=False,
                                                help="Write the data card here: Markdown for a .md name, else JSON "
                                                     "(give it twice for both)."),
    examples: Path | None = typer.Option(None, "--examples", dir_okay=False,
                                         help="Also write the rendered training examples (JSONL, every format)."),
    max_lines: int = typer.Option(300, "--max-lines", min=1, help="Longest file, before or after."),
    max_changed_lines: int = typer.Option(60, "--max-changed-lines", min=1, help="Most added plus removed lines."),
    limit_per_repo: int | None = typer.Option(None, "--limit-per-repo", min=1, help="Most triplets per repository."),
    benchmarks: Path | None = typer.Option(None, "--benchmarks", exists=True, file_okay=False,
                                           help="Folder of editeval.jsonl and humanevalfix_python.jsonl to "
                                                "decontaminate against (default: ../shared/benchmarks)."),
) -> None:
    """Turn git histories into (instruction, before, after) triplets of single-file commits (training/edit_data.py)."""
    from training.edit_data import EditDataError, build, card_markdown

    err = Console(stderr=True)
    command = invocation("edit-data")
    with progress_bars(err) as on_progress:  # a bar per repository: commits read, triplets kept
        try:
            card = build(repos, out, examples=examples, max_lines=max_lines, max_changed_lines=max_changed_lines,
                         limit_per_repo=limit_per_repo, benchmarks=benchmarks, command=command,
                         on_progress=on_progress)
        except EditDataError as error:
            err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
    for path in data_card or []:
        text = card_markdown(card) if path.suffix == ".md" else json.dumps(card, indent=1) + "\n"
        replace_text(path, text)
    totals = card["totals"]
    err.print(f"{totals['triplets']} triplets from {totals['commits_scanned']} commits -> {out}"
              + (f"; {card['examples']['total']} examples -> {examples}" if examples else ""), highlight=False)
