"""Faster Linear layers for the few-row inputs of decoding on CPU.

Decoding feeds a Linear 1 row (a plain step) or a handful (a speculative verification). Measured on this
project's 2-core AMD EPYC (AVX2) with torch 2.13, `F.linear(x, W)` (MKL) is poor exactly there: one row
goes to a matrix-vector kernel that uses one thread, 2-8 rows to a matrix-matrix kernel that packs all
of W first. Two other products of the same dense float32 weight do better, each for its own row counts:

    Qwen2.5 0.5B lm_head, W: [151936, 896]     rows: 1       2       3       5       8       600
    F.linear(x, W)           (x @ W.T)              39 ms   89 ms   133 ms  90 ms   87 ms   1020 ms
    (W @ x.T).T, one row doubled                    19 ms   20 ms   23 ms   36 ms   60 ms   -
    oneDNN (torch.ops.mkldnn._linear_pointwise)     18 ms   26 ms   27 ms   29 ms   32 ms   904 ms

`(W @ x.T).T` avoids the packing, and a single row given a copy of itself gets the two-thread kernel;
oneDNN's kernel (which torch ships for its compiler) is the better one from 5 rows on, prefills
included. On the whole 0.5B model, from a 600-token KV cache (`python -m bench.cpu_linear`,
docs/BENCHMARKS.md), a forward of 1 token takes ~85 ms on either (F.linear: 148), of 2-4 tokens 95-126 ms
transposed against 136-154 oneDNN, and of 6, 8, 12 tokens 156, 174, 181 ms oneDNN against 219, 236, 284
transposed. So verifying a draft costs little more than a plain step, which is what speculative
decoding needs. That is the AMD EPYC; on an Intel Xeon (AVX-512, AMX) MKL's own F.linear is the fastest
for 1-3 rows (a whole-model step 91-106 ms, oneDNN 104-142, transposed 188-206) and oneDNN's from 4 on, so
the few-rows product is chosen by the CPU's vendor (`small_rows_product`).

The result is the same product summed in another order, so logits move by ~1e-6: the same kind of
change as a different batch size already makes, and every path of a generation (prefill, plain steps,
verifications) runs through the same layers. Training (grad enabled) keeps `F.linear`: the oneDNN op
has no backward.

Decoding reads every weight once per step, so on two cores its speed is the weights' size. Two ways to
smaller weights, both PyTorch's own CPU kernels:

`Float16Linear` (`--quantize float16`) keeps float32 activations and stores the weight in float16 for
fbgemm's half-precision product (`torch.ops.quantized.linear_dynamic_fp16`, AVX2 + F16C): half the bytes,
and the only change to the result is the weight's rounding to 11 significant bits. PyTorch's weight-only
int8 and int4 kernels (`aten._weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) would be smaller still,
but in torch 2.13 their time grows with the rows on AVX2 and on AVX-512 alike (one row per pass), and
one row through the lm_head takes 1.2x (int8, AVX-512) to 4x (int4, AVX2) float32's time
(`python -m bench.cpu_linear --kernels`, docs/BENCHMARKS.md).

`bfloat16_weights` (`--quantize bfloat16`) runs the decoder in bfloat16 where oneDNN has AMX or AVX-512
BF16 kernels: a prefill ~4x faster than float32 there, a step about as fast (few rows are not where AMX
helps); the lm_head stays float32, so logits keep float32's resolution.

`quantize_int8` swaps Linear layers for dynamically quantised int8 ones (activations quantised too), about
3x faster but not exact. `--quantize int8` models use it, and so do MTP heads for drafting, where a
changed draft only changes the speed.
"""

from __future__ import annotations

import re
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def cpu_info(field: str) -> str:
    """A field of the first processor in /proc/cpuinfo ("vendor_id": "GenuineIntel"; "flags"), or "" where
    there is none (not Linux, or no such field)."""
    try:
        match = re.search(rf"^{field}\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        return ""
    return match.group(1).strip() if match else ""


def small_rows_product(vendor: str) -> tuple[str, int]:
    """Which product beats oneDNN's for few rows on this vendor's CPUs, and up to how many rows: MKL's own
    (F.linear) on Intel, whose CPUs it is tuned for (an Intel Xeon, AVX-512: 1-3 rows, a whole-model step
    91-106 ms against oneDNN's 104-142); elsewhere the transposed product (the AMD EPYC above: 1-4 rows)."""
    return ("mkl", 3) if vendor == "GenuineIntel" else ("transposed", 4)


SMALL_ROWS_PRODUCT, MAX_SMALL_ROWS = small_rows_product(cpu_info("vendor_id"))
MIN_WEIGHTS = 500_000  # smaller layers (Qwen2.5 0.5B's k and v projections, 115k) gain nothing measurable


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear op (every x86 and arm64 CPU wheel does)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # x: [..., in] -> [..., out]
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # no fused activation


def transposed_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # x: [rows, in], a few rows -> [rows, out]
    rows = x.shape[0]
    # Two columns at least: the two-thread kernel, not the one-thread matrix-vector one. Contiguous in and
    # out: a transposed view in either place sends the next layer's product down a slower path
    # (2 tokens: 160 ms a forward with views, 114 ms without).
    x = x.repeat(2, 1) if rows == 1 else x.contiguous()
    out = (weight @ x.T).T[:rows].contiguous()
    return out + bias if bias is not None else out


def fast_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # x: [..., in] -> [..., out]
    if torch.is_grad_enabled() or x.dtype != torch.float32:
        return F.linear(x, self.weight, self.bias)
    rows = x.numel() // x.shape[-1]
    if rows > MAX_SMALL_ROWS:
        return onednn_product(x, self.weight, self.bias)
    if SMALL_ROWS_PRODUCT == "mkl":
        return F.linear(x, self.weight, self.bias)
    out = transposed_product(x.reshape(rows, x.shape[-1]), self.weight, self.bias)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def speed_up_small_batches(module: nn.Module) -> nn.Module:
    """Route every large float32 Linear of `module` through `fast_linear_forward` (in place; returns it).
    Training (grad enabled) keeps `F.linear`; without oneDNN nothing changes."""
    if not onednn_available():
        return module
    for layer in module.modules():
        if (type(layer) is nn.Linear and layer.weight.dtype == torch.float32
                and layer.weight.numel() >= MIN_WEIGHTS):
            layer.forward = types.MethodType(fast_linear_forward, layer)
    return module


class Float16Linear(nn.Module):
    """A Linear whose weight is stored in float16 for fbgemm's product; inputs and outputs stay float32.
    Inference only (the op has no backward)."""

    def __init__(self, layer: nn.Linear, tied: bool = False, keep_rows: bool = False):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        # fbgemm packs at ~15-20 ns a weight (~9.5 s for the 0.5B model on one thread): each load pays it,
        # never a step.
        self.packed = torch.ops.quantized.linear_prepack_fp16(layer.weight.detach().float(), None)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().float(), requires_grad=False)
        # `linear_weight` would otherwise unpack all of it, as slowly as packing (~3 s for the 0.5B lm_head,
        # whose rows the MTP heads copy at each load). So a weight an embedding shares, alive there anyway,
        # is kept (a tuple, out of state_dict), and with `keep_rows` (the lm_head) a float16 copy, +50%.
        self._weight = (layer.weight,) if tied else (layer.weight.detach().half(),) if keep_rows else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] float32 -> [..., out]
        out = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, self.in_features), self.packed)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out + self.bias if self.bias is not None else out

    def float_weight(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        # [out, in] float32 (or [len(rows), in]): the shared or kept weight, else the float16 one unpacked;
        # rows picked before the float32 conversion (all 152k rows of the lm_head would take ~1.4 s)
        weight = self._weight[0] if self._weight else torch.ops.quantized.linear_unpack_fp16(self.packed)[0]
        return (weight if rows is None else weight[rows]).float()


def float16_available() -> bool:
    """Whether this torch build has fbgemm's half-precision product (x86 CPU wheels do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def float16_weights(module: nn.Module) -> nn.Module:
    """Swap every large `nn.Linear` of `module` (MIN_WEIGHTS weights or more; lm_head included) for a
    `Float16Linear`, in place; returns `module`. A weight the Linear shares with an embedding (tied
    lm_head) stays a float32 tensor there, for the lookup; an untied lm_head also keeps a float16 copy, for
    the rows the MTP heads draft with. The smaller layers keep float32."""
    embedded = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    output = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    swaps = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear and child.weight.numel() >= MIN_WEIGHTS]
    # fbgemm packs one weight at a time with the GIL released: packing layers on as many threads as torch
    # uses takes ~1.8x less time on 2 cores (the largest first, so the lm_head does not finish alone).
    swaps.sort(key=lambda swap: swap[2].weight.numel(), reverse=True)
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        halves = pool.map(lambda swap: Float16Linear(swap[2], tied=id(swap[2].weight) in embedded,
                                                     keep_rows=swap[2] is output), swaps)
        for (parent, name, _), half in zip(swaps, halves):
            setattr(parent, name, half)
    return module


def bfloat16_available() -> bool:
    """Whether oneDNN runs bfloat16 products on this CPU (natively or emulated on AVX-512)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def has_float16_product() -> bool:
    """Whether fbgemm's float16 product runs vectorised on this CPU (AVX2 and F16C), where float16 weights
    were measured faster than float32 at every row count, prefill included (docs/BENCHMARKS.md)."""
    flags = cpu_info("flags").split()
    return "avx2" in flags and "f16c" in flags and float16_available()


def has_amx() -> bool:
    """Whether the CPU has AMX's bfloat16 tiles, where a bfloat16 decoder was measured faster than float32
    (docs/BENCHMARKS.md); `--quantize auto` picks bfloat16 there only."""
    return "amx_bf16" in cpu_info("flags").split() and bfloat16_available()


def auto_quantize(single_edit: bool = False) -> str:
    """What `--quantize auto` loads on this CPU: the fastest weights measured to keep float32's pass@1 on
    the steering sets (docs/BENCHMARKS.md). A bfloat16 decoder on CPUs with AMX. Float16 weights where
    fbgemm's float16 product runs (AVX2 + F16C), except for a process that makes a `single_edit` (one
    `edit FILE INSTRUCTION`): packing them costs ~4.5 s at each load on 2 cores, more than float16 saves
    on a short edit. Float32 ("none") elsewhere."""
    if has_amx():
        return "bfloat16"
    return "float16" if has_float16_product() and not single_edit else "none"


def bfloat16_weights(model: nn.Module) -> nn.Module:
    """The decoder of a causal LM in bfloat16, for oneDNN's AMX / AVX-512 BF16 kernels, in place; returns
    `model`. Two parts stay float32: the lm_head (untied from the embedding; its input is cast up), because
    bfloat16 logits, 8 significant bits, would tie top candidates that float32 tells apart; and the rotary
    frequencies, which rounded to bfloat16 would turn every position's angle a little further."""
    head = model.get_output_embeddings()
    head_weight = head.weight.detach().float().clone()
    rotary = {name: buffer.clone() for name, buffer in model.named_buffers() if name.endswith("inv_freq")}
    model.to(torch.bfloat16)
    head.weight = nn.Parameter(head_weight, requires_grad=False)
    head.register_forward_pre_hook(lambda _, inputs: tuple(x.float() for x in inputs))
    for name, buffer in rotary.items():
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, buffer)
    return speed_up_small_batches(model)  # the float32 lm_head


def linear_weight(layer: nn.Module, rows: torch.Tensor | None = None) -> torch.Tensor:
    """[out, in] float weight of a Linear or a `Float16Linear`, or only its `rows` (int8 layers have none
    to give)."""
    if isinstance(layer, Float16Linear):
        return layer.float_weight(rows)
    return layer.weight if rows is None else layer.weight[rows]


def quantize_int8(module: nn.Module) -> nn.Module:
    """Swap every `nn.Linear` of `module` for a dynamically quantised int8 one, in place (no second copy).
    About 3x faster than float32 here, but some products change enough to move greedy picks."""
    if type(module) is nn.Linear:  # quantize_dynamic swaps a module's children, never the module itself
        return quantize_int8(nn.Sequential(module))[0]
    with warnings.catch_warnings():
        # torch deprecates torch.ao.quantization in favour of torchao, which is not a dependency here;
        # the pinned torch still ships and runs it.
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)
