"""End-to-end benchmarks on ../shared/benchmarks: decoding speed (`edit bench decode`) and edit quality
(`edit bench quality`). Results are dicts ready for JSON; `markdown_*` turn them into the tables of
docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .propose import FORMATS, Editor, build_request, copy_drafter, editor_mtp_drafter

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
BENCHMARKS = {"editeval": "editeval.jsonl", "humanevalfix": "humanevalfix_python.jsonl"}


@dataclass(frozen=True)
class Item:
    task_id: str
    instruction: str
    code: str  # the file before the edit
    reference: str | None  # the file after a correct edit, when the benchmark has it
    test: str  # appended to the edited file; exits non-zero on failure


def load_items(benchmark: str, limit: int | None = None, folder: Path = SHARED) -> list[Item]:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose {', '.join(BENCHMARKS)}")
    path = folder / BENCHMARKS[benchmark]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark file not found (shared/ sits beside the project)")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        row = json.loads(line)
        if benchmark == "editeval":
            items.append(Item(row["task_id"], row["instruction"].strip(), row["input"].rstrip("\n") + "\n",
                              row["output"].rstrip("\n") + "\n", row["test"] + "\ncheck()\n"))
        else:
            code = row["prompt"] + row["buggy_solution"]
            items.append(Item(row["task_id"], row.get("instruction") or f"Fix bugs in {row['entry_point']}.",
                              code.rstrip("\n") + "\n", None, row["test"] + f"\ncheck({row['entry_point']})\n"))
    return items


def passes(code: str, test: str, timeout: float = 10.0) -> bool:
    """Runs code + test in a fresh interpreter; True when it exits 0 within the timeout."""
    with tempfile.TemporaryDirectory() as folder:
        program = Path(folder) / "item.py"
        program.write_text(code + "\n\n" + test, encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, str(program)], cwd=folder, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def quality(editor: Editor, items: list[Item], formats: list[str], on_item=None) -> list[dict]:
    """pass@1 (greedy), well-formed rate and cost per format, all formats on the same items."""
    results = []
    for fmt in formats:
        rows = []
        for item in items:
            started = time.perf_counter()
            result = editor.edit(item.code, item.instruction, format=fmt, path="item.py", language="python")
            rows.append({"ok": result.ok, "passed": result.ok and passes(result.new_text, item.test),
                         "output_tokens": result.stats["output_tokens"],
                         "prompt_tokens": result.stats["prompt_tokens"],
                         "seconds": time.perf_counter() - started})
            if on_item:
                on_item(fmt, item, rows[-1])
        results.append({"format": fmt,
                        "pass_at_1": _mean(r["passed"] for r in rows),
                        "well_formed": _mean(r["ok"] for r in rows),
                        "mean_output_tokens": _mean(r["output_tokens"] for r in rows),
                        "mean_prompt_tokens": _mean(r["prompt_tokens"] for r in rows),
                        "mean_seconds": _mean(r["seconds"] for r in rows)})
    return results


# "mtp k=N": MTP drafts of exactly N tokens (no adaptive length, no confidence cut); "mtp" and "mtp+copy":
# as the editor drafts (adaptive length up to 8, `editor_mtp_drafter`).
DECODE_CONFIGS = ("plain", "copy", "mtp", "mtp k=1", "mtp k=2", "mtp k=3", "mtp k=4", "mtp+copy")


def check_decode_configs(configs) -> None:
    """ValueError unless `configs` are known decode configs with plain, the reference of the others, first."""
    if not configs or configs[0] != "plain" or any(c not in DECODE_CONFIGS for c in configs):
        raise ValueError(f"choose among {', '.join(DECODE_CONFIGS)}, plain first: decode configs must start with "
                         f"plain, the reference of the others; got {', '.join(configs) or 'none'}")


def decode(model, tokenizer, items: list[Item], *, heads=None, max_new_tokens: int = 96, fmt: str = "apply_patch",
           configs=DECODE_CONFIGS, grammar_modes=(True, False), on_row=None) -> list[dict]:
    """Decoding speed of `fmt` outputs for the items: each config against plain, same weights, one run.

    The prompt is prefilled once per item before timing (its KV cache is reused), so tokens/s is decoding
    speed; the MTP heads' own pass over the prompt pairs happens at their first draft and is timed.
    `mean_accepted`: tokens per verification, the target's own token included; `draft_acceptance`:
    accepted / drafted tokens; `identical_to_plain`: the config produced exactly plain greedy's tokens on
    every item. `on_row(rows so far)` after each config (a long run keeps what it measured)."""
    from decoding.drafters import CombinedDrafter, MTPDrafter
    from decoding.generate import Generator

    check_decode_configs(configs)
    vocab = model.get_output_embeddings().out_features
    eos = Generator(model, tokenizer).eos_token_ids
    wanted = [c for c in configs if heads is not None or "mtp" not in c]
    rows = []
    for use_grammar in grammar_modes:
        reference: dict[str, list[int]] = {}
        for config in wanted:
            totals = {"tokens": 0, "seconds": 0.0, "calls": 0, "steps": 0, "verified": 0, "grammar": 0.0,
                      "proposed": 0, "accepted": 0}
            identical = True
            for item in items:
                prompt_ids, constraint = build_request(
                    tokenizer, fmt, name="item.py", text=item.code, instruction=item.instruction,
                    language="python", eos_token_ids=eos, vocab_size=vocab, grammar=use_grammar)
                fixed_k = int(config.split("k=")[1]) if "k=" in config else None
                drafters = {"plain": [], "copy": [copy_drafter(tokenizer, fmt, item.code)]}.get(config)
                if drafters is None:
                    mtp = MTPDrafter(heads) if fixed_k else editor_mtp_drafter(heads)
                    drafters = ([CombinedDrafter(mtp, copy_drafter(tokenizer, fmt, item.code))]
                                if config == "mtp+copy" else [mtp])
                generator = Generator(model, tokenizer, drafters=drafters, max_draft=fixed_k or 8,
                                      adaptive=fixed_k is None)
                generator.generate(prompt_ids, None, max_new_tokens=1)  # prefill outside the timing
                result = generator.generate(prompt_ids, constraint, max_new_tokens=max_new_tokens)
                s = result.stats
                totals["tokens"] += s.new_tokens
                totals["seconds"] += s.seconds
                totals["calls"] += s.model_calls
                totals["steps"] += s.verifications
                totals["verified"] += s.verified_tokens
                totals["grammar"] += s.grammar_seconds
                totals["proposed"] += sum(s.proposed_per_drafter.values())
                totals["accepted"] += sum(s.accepted_per_drafter.values())
                if config == "plain":
                    reference[item.task_id] = result.tokens
                identical &= result.tokens == reference.get(item.task_id)
            rows.append({"config": config + (" +grammar" if use_grammar else ""),
                         "tokens_per_s": totals["tokens"] / totals["seconds"],
                         "mean_accepted": totals["verified"] / max(1, totals["steps"]),
                         "draft_acceptance": totals["accepted"] / totals["proposed"] if totals["proposed"] else None,
                         "model_calls_per_token": totals["calls"] / max(1, totals["tokens"]),
                         "grammar_us_per_token": 1e6 * totals["grammar"] / max(1, totals["tokens"]),
                         "identical_to_plain": identical})
            plain = next(r for r in rows if r["config"] == "plain" + (" +grammar" if use_grammar else ""))
            rows[-1]["speedup_vs_plain"] = rows[-1]["tokens_per_s"] / plain["tokens_per_s"]
            if on_row:
                on_row(rows)
    return rows


def markdown_quality(report: dict) -> str:
    lines = [f"{report['benchmark']}, {report['model']}, {report['items']} items",
             "", "| format | pass@1 | well-formed | output tokens | prompt tokens | seconds/item |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['format']} | {r['pass_at_1']:.2f} | {r['well_formed']:.2f} | "
                     f"{r['mean_output_tokens']:.0f} | {r['mean_prompt_tokens']:.0f} | {r['mean_seconds']:.1f} |")
    return "\n".join(lines)


def markdown_decode(report: dict) -> str:
    heads = f", MTP heads: {report['heads']} ({report['heads_dtype']})" if report.get("heads") else ""
    lines = [f"{report['model']}, {report['items']} EditEval items, {report.get('format', 'apply_patch')} outputs{heads}",
             "", "| config | tokens/s | speed-up vs plain | tokens per verification | draft acceptance "
                 "| model calls per token | grammar µs/token | identical to plain |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["configs"]:
        acceptance = "-" if r.get("draft_acceptance") is None else f"{r['draft_acceptance']:.2f}"
        lines.append(f"| {r['config']} | {r['tokens_per_s']:.2f} | {r['speedup_vs_plain']:.2f}x | "
                     f"{r['mean_accepted']:.2f} | {acceptance} | {r['model_calls_per_token']:.2f} | "
                     f"{r['grammar_us_per_token']:.0f} | {'yes' if r['identical_to_plain'] else 'NO'} |")
    return "\n".join(lines)


def plot_quality(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.5), squeeze=False)
    for ax, report in zip(axes[0], reports):
        names = [r["format"] for r in report["results"]]
        ax.bar(names, [r["pass_at_1"] for r in report["results"]], label="pass@1")
        ax.plot(names, [r["well_formed"] for r in report["results"]], "ko", label="well-formed")
        ax.set_ylim(0, 1)
        ax.set_title(f"{report['benchmark']} ({report['items']} items)")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _mean(values) -> float:
    values = [float(v) for v in values]
    return statistics.fmean(values) if values else 0.0


def check_formats(names: list[str]) -> list[str]:
    formats = list(FORMATS) if names == ["all"] else names
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose all or {', '.join(FORMATS)}")
    return formats

