"""`edit FILE INSTRUCTION`: a local model proposes a structured edit; shown as a diff, written on yes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from .. import daemon
from ..errors import EditError
from ..files import read_document
from ..propose import DEFAULT_RETRIES, RECAST_FORMATS
from . import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, app
from .apply import print_diff

SERVER_HELP = ("Generate on an OpenAI-compatible server (vLLM) at this URL instead of a local model; the grammar "
               "goes with each request. Auth: $EDIT_SERVER_TOKEN. See docs/SERVING.md.")
SERVER_MODEL_HELP = "The served model's name (default: the server's only model). --model still names the tokenizer."
ADAPTER_HELP = ("A LoRA adapter folder (`edit model train-edit`'s output) to merge into the model's weights at load, "
                "instead of the one shipped for it.")
NO_ADAPTER_HELP = "Load the model without any LoRA adapter, not even the shipped one (the untuned model, to compare)."
AS_HELP = (f"Hand the edit out in this format ({', '.join(RECAST_FORMATS)}), whatever format the model wrote: "
           "printed instead of the diff (with --json: its `edit`). `--format auto --as ot` gives OT as correct as "
           "`auto`'s edits, which the model's own OT is not (docs/FORMATS.md).")
GRAMMAR_HELP = ("Constrain the output with the format's grammar (--no-grammar: for a server that takes none; the "
                "applier still checks every edit).")


@app.command()
def propose(
    file: Path = typer.Argument(..., help="The file to edit."),
    instruction: str = typer.Argument(..., help="What to change, in words."),
    format: str = typer.Option("auto", "--format", "-f",
                               help="auto, apply_patch, udiff, ot, rule, block, excerpt (rewrite the part of a long file "
                                    "the instruction is about) or whole (rewrite the file)."),
    model: str = typer.Option(None, "--model", "-m",
                              help="default, 1.5b, a local HF folder, a hub id or a .gguf path."),
    as_format: str = typer.Option(None, "--as", help=AS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the diff; never write."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Write without asking."),
    as_json: bool = typer.Option(False, "--json", help="Print the edit, diff, stats and errors as JSON."),
    max_retries: int = typer.Option(DEFAULT_RETRIES, "--max-retries", help="Tries after a rejected edit, with the error fed back."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 is greedy."),
    no_spec: bool = typer.Option(False, "--no-spec", help="Plain decoding: no copy or MTP drafts."),
    mtp: bool = typer.Option(True, "--mtp/--no-mtp", help="Also draft with the model's MTP heads (float32, float16 and bfloat16 models; on by default)."),
    quantize: str = typer.Option("auto", "--quantize", help="auto (bfloat16 on CPUs with AMX; float16 on other AVX2 CPUs in the daemon that keeps the model loaded, float32 with --keep-alive 0, where packing float16 would cost more than it saves on one edit; else none), none (float32), float16 (weights in float16, activations float32: "
                                                                   "half the bytes a step reads; MTP heads apply), bfloat16 (x86 CPUs with AVX-512 "
                                                                   "or AMX: the decoder in bfloat16, logits float32; prefill ~4x faster) or int8 (about 3x faster, "
                                                                   "different greedy picks; no MTP heads)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: min(2, cores) or $EDIT_THREADS)."),
    language: str = typer.Option(None, "--language", help="Override the language detected from the file name."),
    server: str = typer.Option(None, "--server", help=SERVER_HELP),
    server_model: str = typer.Option(None, "--server-model", help=SERVER_MODEL_HELP),
    grammar: bool = typer.Option(True, "--grammar/--no-grammar", help=GRAMMAR_HELP),
    adapter: Path = typer.Option(None, "--adapter", file_okay=False, help=ADAPTER_HELP),
    no_adapter: bool = typer.Option(False, "--no-adapter", help=NO_ADAPTER_HELP),
    keep_alive: float = typer.Option(None, "--keep-alive", help="Seconds the model stays loaded after this edit, "
                                     "in a background daemon that the next `edit` with the same options reuses "
                                     "(default 300, or $EDIT_KEEP_ALIVE); 0 loads it in this process only."),
) -> None:
    """Propose an edit of FILE with a local model (also: `edit FILE INSTRUCTION`)."""
    err = Console(stderr=True)
    if not file.is_file():
        err.print(f"[red]error:[/] {file}: no such file")
        raise typer.Exit(EXIT_USAGE)
    if as_format is not None and as_format not in RECAST_FORMATS:
        err.print(f"[red]error:[/] --as {as_format}: choose one of {', '.join(RECAST_FORMATS)}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    chosen_adapter = adapter_choice(adapter, no_adapter)
    options = {"model": Path(model) if model and Path(model).exists() else model, "quantize": quantize,
               "threads": threads, "spec": not no_spec, "mtp": mtp, "max_retries": max_retries,
               "temperature": temperature, "grammar": grammar, "adapter": chosen_adapter}
    on_progress = None if as_json else _progress(err)
    try:
        seconds_kept = daemon.keep_alive_seconds(keep_alive)
    except daemon.DaemonError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        from decoding.model_registry import ModelError
        from decoding.server_client import ServerError

        result = None
        if server is None and seconds_kept > 0:
            try:
                result = _propose_in_daemon(err, options, seconds_kept, file,
                                            instruction, format, language, on_progress)
            except daemon.DaemonError as exc:
                err.print(f"[yellow]warning:[/] {exc}; loading the model in this process", highlight=False)
        if result is None:
            from decoding.model_loading import resolve_quantize

            with err.status("loading the model..." if server is None else "loading the tokenizer..."):
                editor = make_editor(**{**options, "model": model,
                                        "quantize": resolve_quantize(quantize, single_edit=True)},
                                     server=server, server_model=server_model)
            result = editor.edit(file, instruction, format=format, language=language, on_progress=on_progress)
        result.path = str(file)
        if as_format is not None:
            result = result.recast(as_format)
    except (EditError, ModelError, ServerError) as exc:
        if as_json:
            print(json.dumps({"ok": False, "errors": [{"file": str(file), "line": None, "message": str(exc)}]}))
        else:
            err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_REJECTED if isinstance(exc, EditError) else EXIT_USAGE)
    if not as_json:
        err.print()  # end the progress line
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    elif not result.ok:
        for problem in result.diagnostics:
            err.print(f"[red]rejected[/] (try {problem['attempt']}): {problem['message']}")
        err.print(f"[red]no acceptable edit after {result.stats['attempts']} tries; nothing written[/]")
    else:
        if as_format is not None:
            print(result.edit_text, end="" if result.edit_text.endswith("\n") else "\n")
        else:
            print_diff(result.diff)
        s = result.stats
        written_as = f" (handed out as {result.handed_out_as})" if result.handed_out_as else ""
        err.print(f"{result.format}{written_as}: {s['output_tokens']} tokens in {s['seconds']:.1f} s "
                  f"({s['tokens_per_s']:.1f} tokens/s{_per_call(s['verifications'], s['mean_accepted'])}), "
                  f"{s['attempts']} tr{'y' if s['attempts'] == 1 else 'ies'}"
                  f"{_branched(s.get('branches', 0), s.get('first_answer', ''), s.get('cut_to_complete_hunks'))}"
                  + (f"; the model took the instruction to be about {s['about']}" if s.get("about") else ""))
    if not result.ok:
        raise typer.Exit(EXIT_REJECTED)
    if dry_run or not result.changes:
        raise typer.Exit(EXIT_OK)
    if not yes and not _confirm(err, f"Write {file}?"):
        err.print("nothing written")
        raise typer.Exit(EXIT_OK)
    from ..applying import write_proposal

    errors = write_proposal(file, result.old_text, result.new_text, language=language)
    for error in errors:
        err.print(f"[red]error:[/] {error}", highlight=False)
    if errors:
        err.print("rejected, nothing written")
        raise typer.Exit(EXIT_REJECTED)
    err.print(f"wrote {file}")


def _propose_in_daemon(err: Console, options: dict, keep_alive: float, file: Path, instruction: str, format: str,
                       language: str | None, on_progress):
    """The edit from the daemon that keeps the model loaded (`editor.daemon`); a spinner until it decodes."""
    status = err.status("loading the model (kept loaded for the next edit)...")
    status.start()

    def report(stats) -> None:
        status.stop()
        if on_progress is not None:
            on_progress(stats)

    try:
        return daemon.propose(options, keep_alive, name=file.name, text=read_document(file).text,
                              instruction=instruction, format=format, language=language, on_progress=report)
    finally:
        status.stop()


def adapter_choice(adapter: Path | None, no_adapter: bool) -> bool | Path:
    """`Editor(adapter=...)` from --adapter DIR and --no-adapter: the folder, False, or True (the shipped one)."""
    if adapter is not None and no_adapter:
        raise typer.BadParameter("give --adapter DIR or --no-adapter, not both", param_hint="--adapter")
    return adapter if adapter is not None else not no_adapter


def make_editor(**options):
    from ..propose import Editor

    return Editor(**options)


def _confirm(err: Console, question: str) -> bool:
    if not sys.stdin.isatty():
        return False  # never write without an answer: scripts pass --yes
    err.print(f"{question} [y/N] ", end="")
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _progress(err: Console):
    def report(stats) -> None:
        err.file.write(f"\r  {stats.new_tokens} tokens, {stats.tokens_per_s:.1f} tokens/s"
                       f"{_per_call(stats.verifications, stats.mean_accepted)}   ")
        err.file.flush()
    return report


def _branched(branches: int, first_answer: str = "", cut: bool = False) -> str:
    """What the summary line says when the edit is not the model's first answer as written: a branch
    (`Editor._branch`), the user sees why the first answer was decoded again and that this is its runner-up;
    or the first answer cut to the hunks or units it completed (`Editor._complete_hunks`)."""
    if cut:
        return ", the first answer cut to what it completed (it ran on unfinished)"
    if not branches or not first_answer:  # no branch, or none taken: the first answer stands
        return ""
    plural = "es" if branches > 1 else ""
    return f", {branches} branch{plural} from the least sure token (the first answer {first_answer})"


def _per_call(verifications: int, mean_accepted: float) -> str:
    # a server's generation counts no verification steps of ours: it drafts (or not) on its own
    return f", {mean_accepted:.2f} tokens per model call" if verifications else ""
