"""A forward pass for Qwen2 decoders with the framework taken out: the same modules and the same kernels as
transformers' Qwen2ForCausalLM, called directly.

Why: every decoding step and every verification pays transformers' per-call machinery (decorators, kwargs
plumbing, mask builders, output dataclasses). This path keeps only the arithmetic, in the order transformers
does it, so the logits are bit for bit the same (tests/test_lean_forward.py) and drafting stays lossless.
On this 2-core CPU it saves 4-5 ms of a 63 ms float16 step of the 0.5B and ~29 ms of an 8-token verification;
most of what a step spends outside the weight products is the small ops themselves (docs/BENCHMARKS.md).

Used for Qwen2-family models (both models the registry ships) with full attention; anything else (sliding
windows, hybrid caches, other architectures) goes through the model's own forward (`supports`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM, apply_rotary_pos_emb


def supports(model) -> bool:
    """Whether `forward` computes what `model(...)` computes for this model."""
    if not isinstance(model, Qwen2ForCausalLM):
        return False
    config = model.config
    full_attention = all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or [])
    return (full_attention and not getattr(config, "use_sliding_window", False)
            and config._attn_implementation in ("sdpa", "eager"))


def attention_mask(new: int, past: int, device) -> torch.Tensor | None:
    # new queries at positions past..past+new-1 over past+new keys: query i sees keys j <= past + i.
    # One query sees every key: no mask.
    if new == 1:
        return None
    return torch.ones(new, past + new, dtype=torch.bool, device=device).tril(past)  # [T, past+T]


@torch.no_grad()
def forward(model, input_ids: torch.Tensor, position_ids: torch.Tensor, cache, logits_to_keep: int) -> torch.Tensor:
    # input_ids, position_ids: [1, T]; cache: a transformers Cache holding the `past` tokens before them.
    # Returns logits [1, logits_to_keep, V] of the last positions, as model(...).logits does.
    decoder = model.model
    past = cache.get_seq_length()
    x = decoder.embed_tokens(input_ids)  # [1, T, H]
    cos, sin = decoder.rotary_emb(x, position_ids)  # [1, T, D] each
    mask = attention_mask(input_ids.shape[1], past, x.device)
    for layer in decoder.layers:
        x = x + attention(layer.self_attn, layer.input_layernorm(x), cos, sin, cache, mask)
        mlp = layer.mlp
        h = layer.post_attention_layernorm(x)
        x = x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))
    x = decoder.norm(x)  # called as a module: `generate.capture_hidden` hooks it
    return model.lm_head(x[:, -logits_to_keep:])


def attention(attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache, mask: torch.Tensor | None):
    # x: [1, T, H] -> [1, T, H]; appends this layer's keys and values for the T tokens to the cache
    batch, new, _ = x.shape
    head_dim = attn.head_dim
    q = attn.q_proj(x).view(batch, new, -1, head_dim).transpose(1, 2)  # [1, heads, T, D]
    k = attn.k_proj(x).view(batch, new, -1, head_dim).transpose(1, 2)  # [1, kv_heads, T, D]
    v = attn.v_proj(x).view(batch, new, -1, head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k, v = cache.update(k, v, attn.layer_idx)  # [1, kv_heads, past+T, D]
    # Grouped-query attention: each key/value head serves num_key_value_groups query heads.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling,
                                         enable_gqa=attn.num_key_value_groups > 1)  # [1, heads, T, D]
    return attn.o_proj(out.transpose(1, 2).reshape(batch, new, -1))
