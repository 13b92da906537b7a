"""Speculative decoding with the trained MTP heads: accepted length and tokens/s on apply_patch answers.

    python bench/bench_mtp.py [--items 6] [--max-new-tokens 96] [--model default] [--heads FILE] [--json OUT]

For the first `--items` EditEval items (../shared/benchmarks/editeval.jsonl) whose file is at most
1,500 characters, the default model answers the apply_patch prompt the editor sends (greedy, no grammar,
one run) with each drafter setting:

    plain         no drafter
    copy          CopyDrafter over the file (max_draft 8, adaptive)
    mtp k=1..4    MTPDrafter with k draft tokens every step (fixed k)
    mtp+copy      CombinedDrafter(MTP, copy), as `edit` runs it (max_draft 8, adaptive)

Every setting uses the same weights and the same prompt KV cache (filled once per item by an untimed
one-token call that the MTP drafter also observes), so tokens/s compares decoding alone. Reported per
setting, over all items: tokens per target forward (`accepted length`, the target's own token included),
the drafted tokens' acceptance rate, tokens/s, and whether every output is identical to plain decoding.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from decoding.drafters import CombinedDrafter, CopyDrafter, MTPDrafter
from decoding.generate import Generator
from decoding.loading import load_default_heads, load_model
from decoding.mtp import load_mtp_heads
from editor import prompting

EDITEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "editeval.jsonl"
MAX_FILE_CHARS = 1500


def items(count: int) -> list[dict]:
    rows = [json.loads(line) for line in EDITEVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if len(row["input"]) <= MAX_FILE_CHARS][:count]


def prompt_ids(tokenizer, item: dict) -> list[int]:
    chat = prompting.messages("apply_patch", path="solution.py", text=item["input"], instruction=item["instruction"],
                              language="python")
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def settings(mtp: MTPDrafter, copy: CopyDrafter) -> list[tuple[str, list, int, bool]]:
    """(name, drafters, max_draft, adaptive); the MTP ones first, right after the call that fills its state."""
    rows = [(f"mtp k={k}", [mtp], k, False) for k in range(1, 5)]
    return rows + [("mtp+copy", [CombinedDrafter(mtp, copy)], 8, True), ("plain", [], 8, True),
                   ("copy", [copy], 8, True)]


def run(model_spec: str, heads_path: Path | None, count: int, max_new_tokens: int,
        on_item=lambda report: None) -> dict:
    """The report over all items; `on_item(report so far)` after each item (a long run keeps its results)."""
    model, tokenizer = load_model(model_spec)
    heads = load_mtp_heads(heads_path, model) if heads_path else load_default_heads(model_spec, model)
    if heads is None:
        raise SystemExit(f"no MTP heads for {model_spec!r}; pass --heads FILE")
    totals: dict[str, dict] = {}
    outputs: dict[str, list[list[int]]] = {}
    chosen = items(count)
    for number, item in enumerate(chosen, 1):
        print(f"item {number}/{len(chosen)}: {item['task_id']}", file=sys.stderr, flush=True)
        ids = prompt_ids(tokenizer, item)
        file_ids = tokenizer.encode(item["input"], add_special_tokens=False)
        mtp, copy = MTPDrafter(heads), CopyDrafter([file_ids])
        generator = Generator(model, tokenizer, drafters=[mtp])
        generator.generate(ids, max_new_tokens=1)  # prefill, observed by the MTP drafter
        for name, drafters, max_draft, adaptive in settings(mtp, copy):
            generator.drafters, generator.max_draft, generator.adaptive = drafters, max_draft, adaptive
            generation = generator.generate(ids, max_new_tokens=max_new_tokens)
            stats = generation.stats
            row = totals.setdefault(name, {"tokens": 0, "seconds": 0.0, "verifications": 0, "verified": 0,
                                           "proposed": 0, "accepted": 0})
            row["tokens"] += stats.new_tokens
            row["seconds"] += stats.seconds
            row["verifications"] += stats.verifications
            row["verified"] += stats.verified_tokens
            row["proposed"] += sum(stats.proposed_per_drafter.values())
            row["accepted"] += sum(stats.accepted_per_drafter.values())
            outputs.setdefault(name, []).append(generation.tokens)
        on_item(summary(model_spec, max_new_tokens, totals, outputs))
    return summary(model_spec, max_new_tokens, totals, outputs)


def summary(model_spec: str, max_new_tokens: int, totals: dict[str, dict], outputs: dict[str, list]) -> dict:
    results = {}
    for name, row in totals.items():
        results[name] = {
            "accepted_length": row["verified"] / max(1, row["verifications"]),
            "draft_acceptance": row["accepted"] / row["proposed"] if row["proposed"] else None,
            "tokens_per_s": row["tokens"] / row["seconds"] if row["seconds"] else 0.0,
            "new_tokens": row["tokens"],
            "identical_to_plain": outputs[name] == outputs["plain"],
        }
    return {"model": model_spec, "items": len(outputs["plain"]), "max_new_tokens": max_new_tokens,
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "settings": results}


def markdown(report: dict) -> str:
    lines = [f"{report['items']} EditEval items, apply_patch prompt, greedy, no grammar, max_new_tokens "
             f"{report['max_new_tokens']}, {report['threads']} threads, float32.", "",
             "| setting | accepted length (tokens/forward) | draft acceptance | tokens/s | speedup | identical to plain |",
             "|---|---|---|---|---|---|"]
    plain = report["settings"]["plain"]["tokens_per_s"]
    for name, row in report["settings"].items():
        acceptance = f"{row['draft_acceptance']:.2f}" if row["draft_acceptance"] is not None else "-"
        lines.append(f"| {name} | {row['accepted_length']:.2f} | {acceptance} | {row['tokens_per_s']:.2f} | "
                     f"{row['tokens_per_s'] / plain:.2f}x | {'yes' if row['identical_to_plain'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--model", default="default")
    parser.add_argument("--heads", type=Path, default=None, help="an mtp.safetensors (default: the shipped heads)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    def save(report: dict) -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    report = run(args.model, args.heads, args.items, args.max_new_tokens, on_item=save)
    print(markdown(report))


if __name__ == "__main__":
    main()
