"""Our decoder against llama.cpp on the same machine, GGUF and prompts (`edit bench peers`).

Each job is one steering item in one output format, with the exact prompt (token ids) and output budget `edit`
uses for it (`editor.request.build_request`). llama.cpp (llama-cpp-python in its own virtualenv, `make peers`;
`bench/peers_llama.py`) decodes it plain and with prompt-lookup drafting; our Generator decodes it plain, with
each drafter and with `edit`'s own drafters (copy + MTP), in float32 and each `--quantize` mode asked for. Everything is
greedy. llama.cpp gets no grammar (llama-cpp-python has no llguidance); ours uses the format's grammar as `edit`
does (apply_patch, block; `whole` has none), so a structured output may differ where the grammar steers.

Times, identical for both engines, model loaded:
    end_to_end_s   the first request for the prompt, from an empty KV cache: prompt, then decoding to EOS
                   or the budget (token ids in, token ids out: no tokenizing, no applying);
    decode_s       the same request again with the prompt in the KV cache (all but its last token): decoding;
    prefill tokens/s  prompt tokens / (end_to_end_s - decode_s).
Runs are sequential in one command (llama.cpp first), so both see the same machine.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from editor.request import build_request, mtp_drafter

from .items import Item

PEERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"
LLAMA_SCRIPT = Path(__file__).with_name("peers_llama.py")
LLAMA_MODES = ("plain", "lookup")
OUR_CONFIGS = ("plain", "copy", "mtp", "copy+mtp")  # copy+mtp: what `edit` drafts with
FORMATS = ("whole", "apply_patch", "block")
PATH = "item.py"


class PeersError(RuntimeError):
    """llama.cpp could not be run (no peers virtualenv, or the run failed); the message says what to do."""


@dataclass(frozen=True)
class Job:
    id: str  # "<format>/<task id>"
    fmt: str
    item: Item
    prompt_ids: list[int]
    max_new_tokens: int


def make_jobs(tokenizer, items: list[Item], formats, eos) -> list[Job]:
    """One job per item and format: the prompt and output budget `edit` uses (no feedback: a first try)."""
    jobs = []
    for fmt in formats:
        for item in items:
            request = build_request(tokenizer, fmt, name=PATH, text=item.code, instruction=item.instruction,
                                    language="python", eos_token_ids=eos, grammar=False, spec=False)
            jobs.append(Job(f"{fmt}/{item.task_id}", fmt, item, request.prompt_ids, request.max_new_tokens))
    return jobs


def llama_available(python: Path = PEERS_PYTHON) -> bool:
    """Whether `python` exists and imports llama_cpp."""
    return Path(python).is_file() and subprocess.run([str(python), "-c", "import llama_cpp"],
                                                     capture_output=True).returncode == 0


def run_llama(gguf: Path, jobs: list[Job], eos, threads: int, python: Path = PEERS_PYTHON,
              modes=LLAMA_MODES) -> dict:
    """llama.cpp's results for the jobs (`bench/peers_llama.py`), run by the peers virtualenv's `python`."""
    if not llama_available(python):
        raise PeersError(f"no llama.cpp to compare with: {python} is missing or lacks llama_cpp; run `make peers` "
                         f"(builds llama-cpp-python from source, many minutes) or pass --peers-python")
    n_ctx = max(len(job.prompt_ids) + job.max_new_tokens for job in jobs) + 16
    spec = {"gguf": str(gguf), "threads": threads, "n_ctx": n_ctx, "modes": list(modes), "eos": sorted(eos),
            "jobs": [{"id": job.id, "prompt_ids": job.prompt_ids, "max_tokens": job.max_new_tokens} for job in jobs]}
    with tempfile.TemporaryFile("w+") as spec_file:
        json.dump(spec, spec_file)
        spec_file.seek(0)
        done = subprocess.run([str(python), str(LLAMA_SCRIPT)], stdin=spec_file, capture_output=True, text=True)
    if done.returncode != 0:
        raise PeersError(f"llama.cpp run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def run_ours(model, tokenizer, heads, jobs: list[Job], config: str) -> list[dict]:
    """Our Generator on each job under `config` (one of OUR_CONFIGS), as `run_llama` times llama.cpp."""
    from decoding.generate import Generator

    rows = []
    for job in jobs:
        generator = Generator(model, tokenizer)  # an empty KV cache
        mtp = mtp_drafter(heads) if heads is not None and "mtp" in config else None
        runs = []
        for _ in range(2):  # end to end, then decoding only (the prompt cached by the first run)
            request = build_request(tokenizer, job.fmt, name=PATH, text=job.item.code,
                                    instruction=job.item.instruction, language="python",
                                    eos_token_ids=generator.eos_token_ids,
                                    vocab_size=model.get_output_embeddings().out_features,
                                    spec=config != "plain", mtp=mtp if config == "copy+mtp" else None)
            drafters = [mtp] if config == "mtp" else request.drafters
            started = time.perf_counter()
            result = generator.generate(request.prompt_ids, request.constraint, max_new_tokens=job.max_new_tokens,
                                        drafters=drafters)
            runs.append((result.tokens, time.perf_counter() - started))
        (tokens, end_to_end_s), (again, decode_s) = runs
        rows.append({"id": job.id, "tokens": tokens, "end_to_end_s": end_to_end_s, "decode_s": decode_s,
                     "repeatable": again == tokens})
    return rows


def summarize(engine: str, weights: str, drafting: str, rows: list[dict], jobs: list[Job], fmt: str,
              load_s: float, references: dict[str, dict[str, list[int]]]) -> dict:
    """One table row: `rows` (one per job) of the jobs in `fmt`, summed; `references`: name -> job id -> tokens."""
    prompts = {job.id: len(job.prompt_ids) for job in jobs if job.fmt == fmt}
    mine = [row for row in rows if row["id"] in prompts]
    tokens = sum(len(row["tokens"]) for row in mine)
    end_to_end = sum(row["end_to_end_s"] for row in mine)
    decode = sum(row["decode_s"] for row in mine)
    prefill = end_to_end - decode
    return {"format": fmt, "engine": engine, "weights": weights, "drafting": drafting, "jobs": len(mine),
            "load_s": load_s, "prompt_tokens": sum(prompts.values()), "output_tokens": tokens,
            "end_to_end_s": end_to_end, "decode_s": decode,
            "decode_tokens_per_s": tokens / decode if decode > 0 else 0.0,
            "prefill_tokens_per_s": sum(prompts.values()) / prefill if prefill > 0 else None,
            "repeatable": all(row["repeatable"] for row in mine),
            **{f"identical_to_{name}": sum(row["tokens"] == reference.get(row["id"]) for row in mine)
               for name, reference in references.items()}}


def peers(jobs: list[Job], *, llama: dict | None, ours: dict[str, tuple], configs=OUR_CONFIGS,
          on_config=None) -> list[dict]:
    """The table's rows, per format: llama.cpp's modes (from `run_llama`, or None), then ours.
    `ours`: weights name -> (model, tokenizer, heads, load seconds), float32 ("none") first when present.
    `on_config(weights, config, rows)` after each of our configs (a long run shows where it is)."""
    results: dict[tuple[str, str, str], list[dict]] = {}
    loads: dict[tuple[str, str], float] = {}
    if llama is not None:
        for mode, run in llama["modes"].items():
            results[("llama.cpp", "Q4_K_M", mode)] = run["jobs"]
            loads[("llama.cpp", "Q4_K_M")] = run["load_s"]
    for weights, (model, tokenizer, heads, load_s) in ours.items():
        loads[("ours", weights)] = load_s
        for config in configs:
            if "mtp" in config and heads is None:
                continue
            results[("ours", weights, config)] = run_ours(model, tokenizer, heads, jobs, config)
            if on_config:
                on_config(weights, config, results[("ours", weights, config)])
    def tokens(key) -> dict[str, list[int]] | None:
        return {row["id"]: row["tokens"] for row in results[key]} if key in results else None

    def references(engine: str, drafting: str) -> dict[str, dict[str, list[int]]]:
        # llama.cpp's plain output; for ours, float32's with the same drafting (lossless: plain's tokens)
        found = {"llama_plain": tokens(("llama.cpp", "Q4_K_M", "plain")),
                 "float32": tokens(("ours", "none", drafting)) if engine == "ours" else None}
        return {name: reference for name, reference in found.items() if reference is not None}

    rows = []
    for fmt in dict.fromkeys(job.fmt for job in jobs):
        block = [summarize(engine, weights, drafting, runs, jobs, fmt, loads[(engine, weights)],
                           references(engine, drafting))
                 for (engine, weights, drafting), runs in results.items()]
        fastest_llama = min((r["end_to_end_s"] for r in block if r["engine"] == "llama.cpp"), default=None)
        plain_llama = next((r["decode_tokens_per_s"] for r in block
                            if r["engine"] == "llama.cpp" and r["drafting"] == "plain"), None)
        for row in block:
            row["speedup_vs_fastest_llama"] = fastest_llama / row["end_to_end_s"] if fastest_llama else None
            row["decode_vs_llama_plain"] = row["decode_tokens_per_s"] / plain_llama if plain_llama else None
        rows += block
    return rows


WEIGHT_NAMES = {"none": "float32", "float16": "float16 weights", "bfloat16": "bfloat16 decoder",
                "int8": "int8 dynamic", "Q4_K_M": "Q4_K_M"}


def markdown_peers(report: dict) -> str:
    """The table of docs/BENCHMARKS.md: one row per format, engine, weights and drafting."""
    head = (f"{report['model']} ({report['gguf_name']}), {report['items']} steering items of {report['benchmark']} "
            f"per format, {report['threads']} threads, greedy; llama.cpp {report.get('llama_cpp') or 'not run'} "
            f"without a grammar, ours with the format's grammar as `edit` (whole: none)")
    lines = [head, "", "| format | engine | weights | drafting | load s | end to end s | speed-up vs llama.cpp's "
             "faster | decode tokens/s | vs llama.cpp plain | prefill tokens/s | output tokens "
             "| same as llama.cpp plain | same as float32 |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]

    def ratio(value):
        return "-" if value is None else f"{value:.2f}x"

    for r in report["rows"]:
        prefill = "-" if r["prefill_tokens_per_s"] is None else f"{r['prefill_tokens_per_s']:.0f}"
        same = [f"{r[key]}/{r['jobs']}" if key in r else "-"
                for key in ("identical_to_llama_plain", "identical_to_float32")]
        lines.append(f"| {r['format']} | {r['engine']} | {WEIGHT_NAMES[r['weights']]} | {r['drafting']} | "
                     f"{r['load_s']:.1f} | {r['end_to_end_s']:.1f} | {ratio(r['speedup_vs_fastest_llama'])} | "
                     f"{r['decode_tokens_per_s']:.1f} | {ratio(r['decode_vs_llama_plain'])} | {prefill} | "
                     f"{r['output_tokens']} | {same[0]} | {same[1]} |")
    return "\n".join(lines)
