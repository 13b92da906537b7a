"""Seconds per training step of `edit model train-edit` on this machine, per (LoRA rank, --max-tokens): what chose
the trainer's CPU defaults (docs/BENCHMARKS.md, Edit fine-tuning).

    python -m bench.train_edit --data EXAMPLES.jsonl [--model default] [--configs 8x512,8x1024,16x1024]
                               [--steps 3] [--json OUT]

The model is loaded once. A config RANKxTOKENS trains LoRA of that rank (with gradient checkpointing, as the
trainer does; RANKxTOKENS:full keeps the activations instead) on the training split's packed sequences of at most
TOKENS tokens, the trainer's own step: forward, backward, clip, AdamW. Configs of one rank take their steps in
turn (one step each, round after round), so all see the same machine; the first round is a warm-up, untimed.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from decoding.model_loading import load_model
from training import edit_trainer as trainer


def parse_configs(text: str) -> list[dict]:
    configs = []
    for spec in text.split(","):
        sizes, _, mode = spec.strip().partition(":")
        rank, _, tokens = sizes.partition("x")
        if not (rank.isdigit() and tokens.isdigit()) or mode not in ("", "full"):
            raise ValueError(f"bad config {spec!r}: expected RANKxTOKENS or RANKxTOKENS:full (e.g. 8x1024)")
        configs.append({"rank": int(rank), "max_tokens": int(tokens), "checkpointing": mode != "full"})
    return configs


def run(model_spec: str, data: Path, configs: list[dict], steps: int, threads: int | None = None) -> dict:
    base, tokenizer = load_model(model_spec, threads=threads, adapter=False)
    rows = trainer.read_examples(data)
    end_of_turn = trainer.end_of_turn_id(base, tokenizer)
    results = []
    for rank in sorted({c["rank"] for c in configs}):
        group = [c for c in configs if c["rank"] == rank]
        model = trainer.lora_model(base, trainer.TrainConfig(rank=rank))
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        packs = {c["max_tokens"]: trainer.prepare(tokenizer, rows, end_of_turn,
                                                  trainer.TrainConfig(max_tokens=c["max_tokens"]))
                 for c in group}
        times = {id(c): [] for c in group}
        for round_ in range(steps + 1):
            for config in group:
                prepared = packs[config["max_tokens"]]
                packed = prepared["train"][round_ % len(prepared["train"])]
                seconds = timed_step(model, optimizer, packed, config["checkpointing"])
                if round_:
                    times[id(config)].append((seconds, len(packed.input_ids)))
        for config in group:
            counts = packs[config["max_tokens"]]["counts"]
            seconds = [s for s, _ in times[id(config)]]
            results.append({**config, "seconds_per_step": statistics.median(seconds), "seconds": seconds,
                            "tokens_per_step": statistics.mean(t for _, t in times[id(config)]),
                            "dropped_too_long": sum(counts["dropped_too_long"].values()),
                            "examples": counts["examples"]})
        model.unload()  # the base without LoRA layers, for the next rank
    return {"model": model_spec, "data": str(data), "threads": torch.get_num_threads(), "steps": steps,
            "results": results}


def timed_step(model, optimizer, packed, checkpointing: bool) -> float:
    """Seconds of one trainer step (as `edit_trainer.train` takes it) on `packed`."""
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()
    started = time.perf_counter()
    loss, count = trainer.sequence_loss(model, packed, "cpu")
    optimizer.zero_grad(set_to_none=True)
    (loss / count).backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    return time.perf_counter() - started


def markdown(report: dict) -> str:
    lines = [f"{report['model']} float32, {report['threads']} threads, median of {report['steps']} steps per config",
             "", "| rank | --max-tokens | activations | tokens per step | s per step | tokens/s | examples dropped as too long |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for row in report["results"]:
        lines.append(f"| {row['rank']} | {row['max_tokens']} | {'checkpointed' if row['checkpointing'] else 'kept'} | "
                     f"{row['tokens_per_step']:.0f} | {row['seconds_per_step']:.1f} | "
                     f"{row['tokens_per_step'] / row['seconds_per_step']:.0f} | "
                     f"{row['dropped_too_long']} of {row['examples']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--configs", default="8x512,8x1024,16x1024")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = run(args.model, args.data, parse_configs(args.configs), args.steps, args.threads)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
