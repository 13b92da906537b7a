"""`edit bench apply|decode|quality`: the CLI of the `bench` package (the benchmarks themselves live there)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from bench.decode import DECODE_CONFIGS, check_decode_configs
from bench.items import DEFAULT_DATA, MissingDataError, load_items

from ..propose import DEFAULT_RETRIES
from . import EXIT_REJECTED, EXIT_USAGE, bench_app
from .propose import ADAPTER_HELP, NO_ADAPTER_HELP, adapter_choice

DATA_HELP = f"Folder holding editeval.jsonl and humanevalfix_python.jsonl (default: {DEFAULT_DATA})."


def items_or_exit(benchmark: str, limit: int | None, data: Path | None) -> list:
    """The benchmark's items, or a one-line error and exit 2 when its data is not there."""
    try:
        return load_items(benchmark, limit, data)
    except (MissingDataError, ValueError) as error:
        Console(stderr=True).print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


@bench_app.command("apply")
def bench_apply(
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON here."),
    runs: int = typer.Option(50, "--runs", min=1, help="Timed runs per measurement (median reported)."),
) -> None:
    """Applier speed: apply + validate one hunk on a 5,000-line file; parse throughput per format."""
    from bench import apply as applier_bench

    results = applier_bench.run(runs=runs)
    typer.echo(applier_bench.to_markdown(results))
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


@bench_app.command("decode")
def bench_decode(
    model: str = typer.Option("default", "--model", "-m"),
    limit: int = typer.Option(4, "--limit", help="EditEval items to decode."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    quantize: str = typer.Option("none", "--quantize", help="none (float32), float16, bfloat16 or int8."),
    heads: Path = typer.Option(None, "--heads", exists=True,
                               help="MTP heads to measure instead of the model's own: an mtp.safetensors file, "
                                    "or a folder holding one (and draft_vocab.safetensors, if any)."),
    float_heads: bool = typer.Option(False, "--float-heads", help="Draft with the heads in float32, not in "
                                                                    "int8 as `edit` does."),
    grammar: str = typer.Option("both", "--grammar", help="on, off or both: decode with the format's grammar."),
    fmt: str = typer.Option("apply_patch", "--format", help="The outputs decoded: apply_patch, or whole (the file "
                                                            "rewritten: no grammar, what `edit` writes for short files)."),
    configs: str = typer.Option(",".join(DECODE_CONFIGS), "--configs", help="Comma-separated, plain first."),
    json_out: Path = typer.Option(None, "--json", help="Write the results as JSON here (after every config)."),
    data: Path = typer.Option(None, "--data", file_okay=False, help=DATA_HELP),
    server: str = typer.Option(None, "--server", help="Measure a server's decoding instead (vLLM, docs/SERVING.md): "
                                                      "the same requests, one at a time; --model names the tokenizer."),
) -> None:
    """Decoding speed: plain / copy / MTP k=1..4 / MTP+copy, grammar on and off, speed-ups measured in one run."""
    from decoding.model_loading import load_drafting_heads, load_model

    from bench.decode import decode, markdown_decode

    modes = {"on": (True,), "off": (False,), "both": (True, False)}
    if grammar not in modes:
        raise typer.BadParameter(f"expected on, off or both, not {grammar!r}", param_hint="--grammar")
    if fmt not in ("apply_patch", "whole"):
        raise typer.BadParameter(f"expected apply_patch or whole, not {fmt!r}", param_hint="--format")
    if fmt == "whole" and grammar != "off":
        raise typer.BadParameter("whole outputs have no grammar: add --grammar off", param_hint="--format")
    chosen = tuple(c.strip() for c in configs.split(","))
    try:
        check_decode_configs(chosen)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--configs") from None
    items = items_or_exit("editeval", limit, data)
    err = Console(stderr=True)
    if server is not None:
        decode_on_server(server, model, items, fmt, max_new_tokens, modes[grammar], json_out, err)
        return
    with err.status("loading the model..."):
        model_obj, tokenizer = load_model(model, quantize=quantize)
        mtp_heads = load_drafting_heads(model, model_obj, heads, int8=not float_heads)  # as `edit` drafts
    report = {"model": f"{model} ({quantize})", "items": len(items), "format": fmt, "max_new_tokens": max_new_tokens,
              "heads": str(heads) if heads else "shipped" if mtp_heads is not None else None,
              "heads_dtype": None if mtp_heads is None else "int8" if mtp_heads.int8 else "float32", "configs": []}

    def save(rows: list[dict]) -> None:
        report["configs"] = rows
        err.print(f"{rows[-1]['config']}: {rows[-1]['tokens_per_s']:.2f} tokens/s", highlight=False)
        if json_out:
            json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    decode(model_obj, tokenizer, items, heads=mtp_heads, max_new_tokens=max_new_tokens, fmt=fmt, configs=chosen,
           grammar_modes=modes[grammar], on_row=save)
    print(markdown_decode(report))


def decode_on_server(server, model, items, fmt, max_new_tokens, grammar_modes, json_out, err) -> None:
    from bench.decode import decode_server, markdown_decode_server
    from decoding.model_loading import load_tokenizer
    from decoding.server_client import ServerClient, ServerError

    report = {"server": server, "model": model, "items": len(items), "format": fmt, "max_new_tokens": max_new_tokens,
              "configs": []}

    def save(rows: list[dict]) -> None:
        report["configs"] = rows
        if json_out:
            json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    try:
        decode_server(ServerClient(server), load_tokenizer(model), items, max_new_tokens=max_new_tokens, fmt=fmt,
                      grammar_modes=grammar_modes, on_row=save)
    except ServerError as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    print(markdown_decode_server(report))


@bench_app.command("quality")
def bench_quality(
    benchmark: str = typer.Option("editeval", "--benchmark",
                                  help="editeval, humanevalfix, or either's long set: editeval-long, humanevalfix-long "
                                       "(each item inside 300-800 lines of stdlib functions)."),
    format: str = typer.Option("all", "--format", "-f",
                               help="A format, several comma-separated, all (every format and whole), or auto (what `edit` picks per item)."),
    model: str = typer.Option("default", "--model", "-m"),
    item_set: str = typer.Option("all", "--set", help="all, or steer: the fixed sample of docs/BENCHMARKS.md "
                                                       "(60 EditEval, 40 HumanEvalFix items)."),
    span: str = typer.Option(None, "--items", help="Only the set's items START to END-1, given as START:END (e.g. 0:20 or 40:)."),
    limit: int = typer.Option(None, "--limit", help="Only the first N items (of the set, after --items)."),
    quantize: str = typer.Option("auto", "--quantize", help="auto (as the Editor: bfloat16 on CPUs with AMX, float16 on "
                                                           "other AVX2 CPUs, else none), none (float32), float16, "
                                                           "bfloat16 or int8."),
    max_retries: int = typer.Option(DEFAULT_RETRIES, "--max-retries", help="Tries after a rejected edit (default: as `edit`)."),
    cache: Path = typer.Option(None, "--cache", file_okay=False,
                               help="Keep each item's result here; a rerun skips the items done (resumable)."),
    cached_only: bool = typer.Option(False, "--cached-only",
                                     help="Run nothing: report the items every format has in --cache (a partial run)."),
    rescored: bool = typer.Option(False, "--rescore",
                                  help="Run no model: score each answer kept in --cache again with the applier as "
                                       "it is now, and keep the new results there (rows cached before answers "
                                       "were kept stay as they are)."),
    json_out: Path = typer.Option(None, "--json", help="Write the results as JSON here."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG bar chart here."),
    data: Path = typer.Option(None, "--data", file_okay=False, help=DATA_HELP),
    server: str = typer.Option(None, "--server", help="Generate on a server (vLLM, docs/SERVING.md); --model names "
                                                      "the tokenizer."),
    adapter: Path = typer.Option(None, "--adapter", file_okay=False, help=ADAPTER_HELP),
    no_adapter: bool = typer.Option(False, "--no-adapter", help=NO_ADAPTER_HELP),
) -> None:
    """Edit quality as `edit` makes edits: pass@1 of the item's tests after the edit, well-formed rate, why
    each item failed, tokens and seconds."""
    from bench.items import pick, steering_set
    from bench.quality import ResultCache, cache_settings, check_formats, markdown_quality, plot_quality, quality
    from decoding.model_registry import ModelError
    from decoding.server_client import ServerError

    from ..propose import Editor

    err = Console(stderr=True)
    try:
        formats = check_formats([f.strip() for f in format.split(",")])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--format") from None
    if item_set not in ("all", "steer"):
        raise typer.BadParameter(f"expected all or steer, not {item_set!r}", param_hint="--set")
    items = items_or_exit(benchmark, None, data)
    items = steering_set(items, benchmark) if item_set == "steer" else items
    try:
        items = pick(items, span) if span else items
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--items") from None
    items = items[:limit]
    cached_only = cached_only or rescored
    if cached_only and cache is None:
        raise typer.BadParameter("needs --cache DIR", param_hint="--rescore" if rescored else "--cached-only")
    chosen_adapter = adapter_choice(adapter, no_adapter)
    try:
        settings = cache_settings(model, quantize, max_retries, server=server, adapter=chosen_adapter)
    except ModelError as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    editor = None
    if not cached_only:
        with err.status("loading the model..."):
            # otherwise as `edit` builds its Editor
            editor = Editor(model, quantize=quantize, max_retries=max_retries, server=server, adapter=chosen_adapter)
    if editor is not None and server is not None:
        try:  # up front: a server that is down or takes no grammar would otherwise fail every item
            editor.backend.client.check_grammar()
        except ServerError as error:
            err.print(f"[red]error:[/] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None

    def progress(fmt, item, row):
        err.print(f"{fmt:12} {item.task_id:24} {'pass' if row['passed'] else row['failure']:12} "
                  f"{row['output_tokens']:5d} tokens {row['seconds']:6.1f} s", highlight=False)

    results = quality(editor, items, formats, cache=ResultCache(cache, settings) if cache else None,
                      on_item=None if cached_only else progress, cached_only=cached_only, rescored=rescored)
    report = {"benchmark": benchmark, "set": item_set, "items_range": span, "limit": limit, **settings,
              "mtp": None if editor is None else editor.mtp_heads is not None,
              "items": len(results[0]["rows"]) if results else 0, "results": results}
    if json_out:
        json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if plot:
        plot_quality([report], plot)
    print(markdown_quality(report))


@bench_app.command("plot")
def bench_plot(
    reports: list[Path] = typer.Argument(..., exists=True, dir_okay=False,
                                         help="Reports of `edit bench quality --json`, one panel each."),
    out: Path = typer.Option(..., "--out", dir_okay=False, help="The PNG to write."),
) -> None:
    """Several quality reports in one chart, side by side (docs/BENCHMARKS.md draws its four sets so)."""
    from bench.quality import plot_quality

    try:
        loaded = [json.loads(path.read_text(encoding="utf-8")) for path in reports]
    except (ValueError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"not a JSON report: {error}", param_hint="REPORTS") from None
    plot_quality(loaded, out)


@bench_app.command("batch")
def bench_batch(
    server: str = typer.Option(None, "--server", help="A running server's URL (see docs/SERVING.md)."),
    start_server: bool = typer.Option(False, "--start-server", help="Start the local vLLM of `make vllm` on the "
                                                                   "model's folder for the run, then stop it."),
    model: str = typer.Option("default", "--model", "-m", help="The local engine's model, the tokenizer, and what a "
                                                               "started server serves."),
    limit: int = typer.Option(64, "--limit", help="EditEval items (the first N)."),
    concurrency: str = typer.Option("1,4,16", "--concurrency", help="Server concurrencies, comma-separated."),
    local: bool = typer.Option(True, "--local/--no-local", help="Also the local engine, one edit at a time."),
    fmt: str = typer.Option("apply_patch", "--format", "-f", help="The format every task asks for."),
    max_retries: int = typer.Option(DEFAULT_RETRIES, "--max-retries", help="Tries after a rejected edit (default: as `edit`)."),
    json_out: Path = typer.Option(None, "--json", help="Write the results as JSON here (after every config)."),
    data: Path = typer.Option(None, "--data", file_okay=False, help=DATA_HELP),
) -> None:
    """Batch throughput: edits per minute through a server at each concurrency, and the local engine
    sequentially, on the same EditEval items in one run (docs/BENCHMARKS.md)."""
    from contextlib import nullcontext

    from bench.batch import batch_config, compare, markdown_batch
    from bench.vllm_server import VllmUnavailable, local_vllm
    from decoding.model_loading import resolve
    from decoding.server_client import ServerError

    from ..propose import Editor

    if (server is None) == (not start_server):
        raise typer.BadParameter("give --server URL or --start-server (one of them)", param_hint="--server")
    try:
        levels = [int(c) for c in concurrency.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected numbers like 1,4,16, not {concurrency!r}", param_hint="--concurrency")
    items = items_or_exit("editeval", limit, data)
    err = Console(stderr=True)
    report = {"model": model, "items": len(items), "format": fmt, "max_retries": max_retries, "results": []}

    def progress(name, done, total):
        err.print(f"{name}: {done}/{total}", highlight=False)

    def measured(result):
        report["results"].append(result)
        err.print(f"{result['config']}: {result['edits_per_minute']:.2f} edits/min", highlight=False)
        if json_out:
            json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    if local:  # first, before a started server takes memory and cores
        with err.status("loading the model..."):
            engine = Editor(model, max_retries=max_retries)
        measured(batch_config("local engine, sequential", engine, items, fmt=fmt, concurrency=1, on_item=progress))
        del engine
    try:
        served = local_vllm(resolve(model), log=json_out.with_suffix(".vllm.log") if json_out else None) \
            if start_server else nullcontext(server)
        with served as url:
            remote = Editor(model, server=url, max_retries=max_retries)
            remote.backend.client.check_grammar()
            for level in levels:
                measured(batch_config(f"server, concurrency {level}", remote, items, fmt=fmt, concurrency=level,
                                      on_item=progress))
    except (VllmUnavailable, ServerError) as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    report["results"] = compare(report["results"])
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown_batch(report))


@bench_app.command("peers")
def bench_peers(
    model: str = typer.Option("default", "--model", "-m", help="A registry model or a .gguf file: llama.cpp "
                                                               "reads the GGUF, we read its conversion."),
    benchmark: str = typer.Option("editeval", "--benchmark", help="editeval or humanevalfix (its steering set)."),
    limit: int = typer.Option(3, "--limit", help="The first N items of the steering set."),
    formats: str = typer.Option("whole,apply_patch,block", "--formats", help="Comma-separated output formats."),
    configs: str = typer.Option("plain,copy,mtp,copy+mtp", "--configs",
                                help="Our drafting configs (copy+mtp: what `edit` drafts with)."),
    weights: str = typer.Option("none,float16", "--weights",
                                help="Our weights, as --quantize: none (float32), float16, bfloat16, int8 (int8 has "
                                     "no MTP heads: its copy+mtp and mtp rows are left out)."),
    llama: bool = typer.Option(True, "--llama/--no-llama", help="Run llama.cpp too (needs `make peers`)."),
    peers_python: Path = typer.Option(None, "--peers-python", dir_okay=False,
                                      help="The Python with llama_cpp installed (default: .venv-peers/bin/python)."),
    threads: int = typer.Option(None, "--threads", help="Threads for both engines (default: as `edit`)."),
    json_out: Path = typer.Option(None, "--json", help="Write the results as JSON here."),
    data: Path = typer.Option(None, "--data", file_okay=False, help=DATA_HELP),
) -> None:
    """Us against llama.cpp on the same GGUF, prompts and machine: end-to-end and decoding-only seconds,
    tokens/s, prefill tokens/s, and whether the outputs are identical."""
    import time

    from bench import peers as peer_bench
    from bench.items import steering_set
    from decoding.generate import Generator
    from decoding.model_loading import QUANTIZE_MODES, load_drafting_heads, load_model, thread_count
    from decoding.model_registry import REGISTRY, ModelError, gguf_path

    err = Console(stderr=True)
    chosen_formats = [f.strip() for f in formats.split(",")]
    chosen_configs = [c.strip() for c in configs.split(",")]
    chosen_weights = [w.strip() for w in weights.split(",")]
    for values, known, hint in ((chosen_formats, peer_bench.FORMATS, "--formats"),
                                (chosen_configs, peer_bench.OUR_CONFIGS, "--configs"),
                                (chosen_weights, QUANTIZE_MODES, "--weights")):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise typer.BadParameter(f"unknown {', '.join(unknown)}; choose among {', '.join(known)}", param_hint=hint)
    if benchmark not in ("editeval", "humanevalfix"):
        raise typer.BadParameter(f"expected editeval or humanevalfix, not {benchmark!r}", param_hint="--benchmark")
    gguf = gguf_path(REGISTRY[model]) if model in REGISTRY else Path(model)
    if not gguf.is_file():
        err.print(f"[red]error:[/] no GGUF for {model!r} at {gguf}: llama.cpp needs one (install the model, or "
                  f"name a .gguf file)", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    items = steering_set(items_or_exit(benchmark, None, data), benchmark)[:limit]
    try:
        threads = thread_count(threads)
        ours = {}
        for quantize in chosen_weights:
            with err.status(f"loading the model ({quantize})..."):
                started = time.perf_counter()
                model_obj, tokenizer = load_model(model, quantize=quantize, threads=threads)
                heads = load_drafting_heads(model, model_obj) if any("mtp" in c for c in chosen_configs) else None
                ours[quantize] = (model_obj, tokenizer, heads, time.perf_counter() - started)
    except ModelError as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_REJECTED) from None
    eos = Generator(model_obj, tokenizer).eos_token_ids
    jobs = peer_bench.make_jobs(tokenizer, items, chosen_formats, eos)
    llama_results = None
    if llama:
        with err.status(f"llama.cpp: {len(jobs)} jobs, plain and prompt lookup..."):
            try:
                llama_results = peer_bench.run_llama(gguf, jobs, eos, threads,
                                                     **({"python": peers_python} if peers_python else {}))
            except peer_bench.PeersError as error:
                err.print(f"[red]error:[/] {error}", highlight=False)
                raise typer.Exit(EXIT_REJECTED) from None
        err.print(f"llama.cpp {llama_results['llama_cpp']}: done", highlight=False)
    def done(weights: str, config: str, runs: list[dict]) -> None:
        seconds = sum(run["end_to_end_s"] for run in runs)
        err.print(f"ours, {weights}, {config}: {len(runs)} jobs, {seconds:.1f} s end to end", highlight=False)

    with err.status(f"ours: {len(jobs)} jobs x {len(chosen_configs)} configs x {len(ours)} weights..."):
        rows = peer_bench.peers(jobs, llama=llama_results, ours=ours, configs=chosen_configs, on_config=done)
    report = {"model": model, "gguf_name": gguf.name, "benchmark": benchmark, "items": len(items),
              "threads": threads, "llama_cpp": llama_results["llama_cpp"] if llama_results else None,
              "llama_cpp_system_info": llama_results.get("system_info") if llama_results else None,
              "jobs": [{"id": job.id, "prompt_tokens": len(job.prompt_ids), "max_new_tokens": job.max_new_tokens}
                       for job in jobs], "rows": rows}
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(peer_bench.markdown_peers(report))
