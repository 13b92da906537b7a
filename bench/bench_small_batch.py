"""Forward time of the default model for the few-token inputs of decoding: F.linear against the few-row path.

    python bench/bench_small_batch.py [--model default] [--context 600] [--repeats 7] [--json OUT]

The model holds a KV cache of --context random tokens; each row times a forward of T new tokens (a plain
step is T = 1, verifying a draft of k tokens is T = k + 1), median of --repeats, with every large Linear
on `F.linear` and then on `decoding.small_batch`'s path, alternating per T so both see the same machine.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache

from bench.bench_apply import median_ms
from decoding.loading import load_model
from decoding.small_batch import small_batch_forward

LENGTHS = (1, 2, 3, 4, 5, 6, 8, 12, 16)


def run(model_spec: str, context: int, repeats: int) -> dict:
    model, _ = load_model(model_spec)
    rerouted = [m for m in model.modules() if "forward" in vars(m)]  # what load_model sped up

    def use(small_batch: bool) -> None:
        for layer in rerouted:
            layer.forward = types.MethodType(small_batch_forward if small_batch else nn.Linear.forward, layer)

    vocab = model.config.get_text_config().vocab_size
    rows = []
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.randint(0, vocab, (1, context)), cache=cache, use_cache=True)
        new = torch.randint(0, vocab, (1, max(LENGTHS)))

        def step(length: int):
            def forward():
                model(input_ids=new[:, :length], cache=cache, use_cache=True, logits_to_keep=length)
                cache.crop(-length)
            return forward

        for length in LENGTHS:
            timings = {}
            for small_batch in (False, True):
                use(small_batch)
                step(length)()  # warm-up, untimed
                timings[small_batch] = median_ms(step(length), repeats)
            rows.append({"tokens": length, "f_linear_ms": timings[False], "small_batch_ms": timings[True]})
    return {"model": model_spec, "context": context, "repeats": repeats, "threads": torch.get_num_threads(),
            "layers": len(rerouted), "rows": rows}


def markdown(report: dict) -> str:
    lines = [f"{report['model']} float32, KV cache of {report['context']} tokens, {report['threads']} threads, "
             f"median of {report['repeats']}; {report['layers']} Linear layers rerouted", "",
             "| tokens per forward | F.linear ms | few-row path ms | speed-up |", "|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['tokens']} | {row['f_linear_ms']:.0f} | {row['small_batch_ms']:.0f} | "
                     f"{row['f_linear_ms'] / row['small_batch_ms']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--context", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = run(args.model, args.context, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
