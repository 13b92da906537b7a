"""Faster Linear layers for the few-row inputs of decoding on CPU.

Decoding feeds a Linear 1 row (a plain step) or a handful (a speculative verification). Measured on this
project's 2-core AVX2 machine with torch 2.13's CPU kernels, `F.linear(x, W)` is poor exactly there:

    Qwen2.5 0.5B lm_head, W: [151936, 896]     rows: 1       2       3       4       5       8
    F.linear(x, W)           (x @ W.T)              39 ms   89 ms   133 ms  84 ms   84 ms   87 ms
    (W @ x.T).T                                     39 ms   14 ms   22 ms   20 ms   29 ms   53 ms

One row goes to a matrix-vector kernel that uses one thread; 2-5 rows go to a matrix-matrix kernel that
packs all of W first. Putting the few rows on the right (`W @ x.T`) avoids the packing, and giving a
single row a copy of itself turns the one-thread kernel into the two-thread one. On the whole 0.5B model
(600-token KV cache; `python bench/bench_small_batch.py`, docs/BENCHMARKS.md) a forward of 1 token went
from 149 to 98 ms, of 2 tokens from 308 to 111 ms and of 4 from 285 to 140 ms: verifying a draft now
costs little more than a plain step, which is what speculative decoding needs.

The result is the same product summed in another order, so logits move by ~1e-5: the same kind of
change as a different batch size already makes, and every path of a generation (plain steps and
verifications) runs through the same layers.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

MAX_ROWS = 8  # beyond this the matrix-matrix kernel's packing pays for itself
MIN_WEIGHTS = 1_000_000  # smaller layers gain nothing measurable


def small_batch_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # x: [..., in] -> [..., out]
    rows = x.numel() // x.shape[-1]
    if rows > MAX_ROWS or torch.is_grad_enabled():
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(rows, x.shape[-1])
    # Two columns at least: the two-thread kernel, not the one-thread matrix-vector one. Contiguous in and
    # out: a transposed view in either place sends the next layer's product down a slower path
    # (2 tokens: 160 ms a forward with views, 114 ms without).
    flat = flat.repeat(2, 1) if rows == 1 else flat.contiguous()
    out = (self.weight @ flat.T).T[:rows].contiguous()  # [rows, out]
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def speed_up_small_batches(module: nn.Module) -> nn.Module:
    """Route every large float Linear of `module` through `small_batch_forward` (in place; returns it).
    Training (grad enabled) and inputs of many rows keep `F.linear`."""
    for layer in module.modules():
        if (type(layer) is nn.Linear and layer.weight.is_floating_point()
                and layer.weight.numel() >= MIN_WEIGHTS):
            layer.forward = types.MethodType(small_batch_forward, layer)
    return module
