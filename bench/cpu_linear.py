"""Forward time of a model (default: the 0.5B) for the few-token inputs of decoding, per Linear path: F.linear (MKL),
the transposed product alone (up to 8 rows), oneDNN's, and what `load_model` uses (`decoding.cpu_linear`: for a
few rows, MKL's F.linear on Intel CPUs and the transposed product elsewhere; oneDNN's beyond).

    python -m bench.cpu_linear [--model default] [--context 600] [--repeats 7] [--json OUT]
    python -m bench.cpu_linear --kernels [--repeats 7] [--json OUT]
    python -m bench.cpu_linear --weights none,float16,bfloat16,int8 [--model default] [--context 600] [--repeats 7]

The model holds a KV cache of --context random tokens; each row times a forward of T new tokens (a plain
step is T = 1, verifying a draft of k tokens is T = k + 1), median of --repeats, with every large Linear
on each path in turn, alternating per T so all see the same machine. Prints a markdown table.

--kernels times one layer instead, of the default model's two shapes (an MLP projection and the lm_head,
random weights), per weight format and PyTorch kernel: float32 as shipped, float16 (fbgemm), bfloat16
(weights and inputs; oneDNN, AMX where the CPU has it), weight-only
int8 and int4 (aten's `_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`, group 32), weight-only int8 as
torch.compile's inductor builds it from `F.linear(x, int8.float()) * scale` (frozen weights, its C++ GEMM
templates tried: `max_autotune`), and dynamic int8 (torch.ao: activations quantised too). This is what chose
`--quantize float16`.

--weights times the whole model as `load_model` loads it with each `--quantize` mode: load seconds, a
prefill of --context tokens, and forwards of 1, 2, 4 and 8 tokens from that KV cache, each through
transformers' forward and through decoding.lean_forward (what decoding uses).
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from bench.apply import median_ms
from decoding import lean_forward
from decoding.model_loading import load_model
from decoding.cpu_linear import fast_linear_forward, onednn_product, transposed_product

LENGTHS = (1, 2, 3, 4, 5, 6, 8, 12, 16)


def transposed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The transposed product alone: `(W @ x.T).T` up to 8 rows, F.linear beyond."""
    rows = x.numel() // x.shape[-1]
    if rows > 8:
        return F.linear(x, self.weight, self.bias)
    out = transposed_product(x.reshape(rows, x.shape[-1]), self.weight, self.bias)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def onednn_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return onednn_product(x, self.weight, self.bias)


def forward_of(model, cache, new: torch.Tensor, lean: bool = False):
    """length -> a forward of new[:, :length] after the KV cache, which it leaves as it found it (timed alone);
    through transformers' forward, or with `lean` through decoding.lean_forward (what decoding runs)."""
    def step(length: int):
        def forward():
            if lean:
                past = cache.get_seq_length()
                lean_forward.forward(model, new[:, :length], torch.arange(past, past + length)[None], cache, length)
            else:
                model(input_ids=new[:, :length], cache=cache, use_cache=True, logits_to_keep=length)
            cache.crop(-length)
        return forward
    return step


PATHS = {"f_linear": nn.Linear.forward, "transposed": transposed_forward, "onednn": onednn_forward,
         "shipped": fast_linear_forward}


def run(model_spec: str, context: int, repeats: int) -> dict:
    model, _ = load_model(model_spec)
    rerouted = [m for m in model.modules() if "forward" in vars(m)]  # what load_model sped up

    def use(path: str) -> None:
        for layer in rerouted:
            layer.forward = types.MethodType(PATHS[path], layer)

    vocab = model.config.get_text_config().vocab_size
    rows = []
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.randint(0, vocab, (1, context)), cache=cache, use_cache=True)
        new = torch.randint(0, vocab, (1, max(LENGTHS)))
        step = forward_of(model, cache, new)
        for length in LENGTHS:
            timings = {}
            for path in PATHS:
                use(path)
                step(length)()  # warm-up, untimed
                timings[f"{path}_ms"] = median_ms(step(length), repeats)
            rows.append({"tokens": length, **timings})
    return {"model": model_spec, "context": context, "repeats": repeats, "threads": torch.get_num_threads(),
            "layers": len(rerouted), "rows": rows}


WEIGHT_LENGTHS = (1, 2, 4, 8)


def run_weights(model_spec: str, modes: list[str], context: int, repeats: int) -> dict:
    import time

    rows = []
    for mode in modes:
        started = time.perf_counter()
        model, _ = load_model(model_spec, quantize=mode)
        load_s = time.perf_counter() - started
        vocab = model.config.get_text_config().vocab_size
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            prompt = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(0))
            started = time.perf_counter()
            model(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1)
            prefill_ms = (time.perf_counter() - started) * 1000
            new = torch.randint(0, vocab, (1, max(WEIGHT_LENGTHS)))
            paths = {"transformers": forward_of(model, cache, new), "lean": forward_of(model, cache, new, lean=True)}
            steps = {path: {} for path in paths}
            for length in WEIGHT_LENGTHS:
                for path, step in paths.items():  # alternating per length: both see the same machine
                    step(length)()  # warm-up, untimed
                    steps[path][str(length)] = median_ms(step(length), repeats)
        rows.append({"quantize": mode, "load_s": load_s, "prefill_ms": prefill_ms, "forward_ms": steps})
        del model
    return {"model": model_spec, "context": context, "repeats": repeats, "threads": torch.get_num_threads(),
            "rows": rows}


def markdown_weights(report: dict) -> str:
    lines = [f"{report['model']}, prefill of {report['context']} tokens, then forwards from that KV cache; "
             f"{report['threads']} threads, median of {report['repeats']}", "",
             "| --quantize | load s | prefill ms (tokens/s) | " +
             " | ".join(f"forward of {n} ms, transformers / lean" for n in WEIGHT_LENGTHS) + " |",
             "|---|---:|---:|" + "---:|" * len(WEIGHT_LENGTHS)]
    for row in report["rows"]:
        rate = report["context"] / row["prefill_ms"] * 1000
        steps = row["forward_ms"]
        lines.append(f"| {row['quantize']} | {row['load_s']:.1f} | {row['prefill_ms']:.0f} ({rate:.0f}) | " +
                     " | ".join(f"{steps['transformers'][str(n)]:.1f} / {steps['lean'][str(n)]:.1f}"
                                for n in WEIGHT_LENGTHS) + " |")
    return "\n".join(lines)


KERNEL_SHAPES = {"mlp up [8960, 1536]": (8960, 1536), "lm_head [151936, 1536]": (151936, 1536)}  # the 1.5B's
KERNEL_ROWS = (1, 2, 4, 8)  # the scalar kernels take seconds a call beyond
INT4_GROUP = 32


def kernel_products(weight: torch.Tensor) -> dict:
    """name -> (x [rows, in] -> [rows, out]) for each weight format of `weight` [out, in]."""
    from decoding.cpu_linear import Float16Linear, quantize_int8

    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = nn.Parameter(weight, requires_grad=False)
    scale = weight.abs().amax(1).clamp(min=1e-8) / 127  # [out]: int8 per output channel
    int8 = torch.round(weight / scale[:, None]).to(torch.int8)
    groups = weight.view(weight.shape[0], -1, INT4_GROUP)  # [out, in / 32, 32]: int4, affine per group
    low, step = groups.amin(-1), ((groups.amax(-1) - groups.amin(-1)) / 15).clamp(min=1e-8)
    codes = torch.round((groups - low[..., None]) / step[..., None]).to(torch.int32).view_as(weight)
    int4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scales_zeros = torch.stack([step.t(), (low + 8 * step).t()], -1).contiguous()  # [in / 32, out, 2]
    half = Float16Linear(layer)
    inductor = compiled_int8(int8, scale)
    bfloat16 = weight.bfloat16()  # inputs rounded too: what a bfloat16 decoder (`--quantize bfloat16`) runs
    return {"float32 (shipped)": lambda x: fast_linear_forward(layer, x),
            "float16 (fbgemm)": half,
            "bfloat16 (oneDNN)": lambda x: F.linear(x.bfloat16(), bfloat16).float(),
            "int8 weight-only": lambda x: torch.ops.aten._weight_int8pack_mm(x, int8, scale),
            "int4 weight-only": lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, int4, INT4_GROUP, scales_zeros),
            "int8 weight-only (inductor)": inductor,
            "int8 dynamic": quantize_int8(layer)}  # a quantised copy: `layer` stays float32


class _Int8WeightOnly(nn.Module):
    def __init__(self, int8: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("int8", int8)  # [out, in]
        self.register_buffer("scale", scale)  # [out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [rows, in]
        return F.linear(x, self.int8.to(x.dtype)) * self.scale


def compiled_int8(int8: torch.Tensor, scale: torch.Tensor):
    """Weight-only int8 as inductor compiles it for this CPU (the pattern gpt-fast uses), one compile a row count."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(_Int8WeightOnly(int8, scale).eval())

    def product(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True, max_autotune=True, max_autotune_gemm_backends="CPP,ATEN"):
            return compiled(x)
    return product


def run_kernels(repeats: int) -> dict:
    torch.set_num_threads(2)
    rows = []
    with torch.inference_mode():
        for shape_name, shape in KERNEL_SHAPES.items():
            products = kernel_products(torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.05)
            for count in KERNEL_ROWS:
                x = torch.randn(count, shape[1])
                row = {"shape": shape_name, "rows": count}
                for name, product in products.items():
                    product(x)  # warm-up, untimed
                    row[name] = median_ms(lambda: product(x), repeats)
                rows.append(row)
    return {"threads": torch.get_num_threads(), "repeats": repeats, "rows": rows, "kernels": list(products)}


def markdown_kernels(report: dict) -> str:
    names = report["kernels"]
    lines = [f"One layer, {report['threads']} threads, median of {report['repeats']}, ms", "",
             "| layer | rows | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for row in report["rows"]:
        lines.append(f"| {row['shape']} | {row['rows']} | " + " | ".join(f"{row[n]:.1f}" for n in names) + " |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    lines = [f"{report['model']} float32, KV cache of {report['context']} tokens, {report['threads']} threads, "
             f"median of {report['repeats']}; {report['layers']} Linear layers rerouted", "",
             "| tokens per forward | F.linear ms | transposed (up to 8 rows) ms | oneDNN ms | shipped ms |"
             " shipped vs F.linear | shipped vs transposed |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['tokens']} | {row['f_linear_ms']:.0f} | {row['transposed_ms']:.0f} | "
                     f"{row['onednn_ms']:.0f} | {row['shipped_ms']:.0f} | "
                     f"{row['f_linear_ms'] / row['shipped_ms']:.2f}x | {row['transposed_ms'] / row['shipped_ms']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="0.5b")
    parser.add_argument("--context", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--kernels", action="store_true", help="Time one layer per weight format instead.")
    parser.add_argument("--weights", default=None,
                        help="Comma-separated --quantize modes: time the whole model loaded with each instead.")
    args = parser.parse_args()
    if args.kernels:
        report, text = run_kernels(args.repeats), markdown_kernels
    elif args.weights:
        report = run_weights(args.model, args.weights.split(","), args.context, args.repeats)
        text = markdown_weights
    else:
        report, text = run(args.model, args.context, args.repeats), markdown
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(text(report))


if __name__ == "__main__":
    main()
