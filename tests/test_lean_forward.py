"""decoding.lean_forward computes exactly what transformers' Qwen2 forward computes: the same logits, bit for
bit, through a prefill, one-token steps and multi-token verifications from a KV cache; the same generations;
and the final norm still runs as a module, so MTP drafting sees the hidden states."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, Qwen2ForCausalLM

from decoding import lean_forward
from decoding.cpu_linear import float16_available, float16_weights
from decoding.drafters import CopyDrafter
from decoding.generate import Generator, capture_hidden, model_forward
from tests.tiny_models import randomize, tiny_qwen2, tiny_qwen3_5

pytestmark = pytest.mark.usefixtures("single_thread")

CHUNKS = ((0, 23), (23, 24), (24, 31), (31, 32), (32, 40))  # prefill, step, verification, step, verification


def random_qwen2(**overrides) -> Qwen2ForCausalLM:
    """A tiny Qwen2 with every weight random (transformers' init leaves near-uniform activations)."""
    model = tiny_qwen2(vocab=300, num_hidden_layers=3, **overrides)
    randomize(model, seed=3)
    return model


def logits_both_ways(model, ids: torch.Tensor):
    ours, theirs = DynamicCache(config=model.config), DynamicCache(config=model.config)
    for start, end in CHUNKS:
        positions = torch.arange(start, end)[None]
        with torch.no_grad():
            expected = model(input_ids=ids[:, start:end], position_ids=positions, cache=theirs, use_cache=True,
                             logits_to_keep=end - start).logits
        yield expected, lean_forward.forward(model, ids[:, start:end], positions, ours, end - start)


@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped-query attention, and one key/value head per query head
def test_logits_equal_transformers_bit_for_bit(kv_heads):
    model = random_qwen2(num_key_value_heads=kv_heads)
    ids = torch.randint(0, 300, (1, CHUNKS[-1][1]), generator=torch.Generator().manual_seed(0))
    for expected, got in logits_both_ways(model, ids):
        assert got.shape == expected.shape
        assert torch.equal(got, expected)


@pytest.mark.skipif(not float16_available(), reason="this torch build has no fbgemm float16 product")
def test_logits_equal_with_float16_weights():
    model = float16_weights(random_qwen2())
    ids = torch.randint(0, 300, (1, CHUNKS[-1][1]), generator=torch.Generator().manual_seed(1))
    for expected, got in logits_both_ways(model, ids):
        assert torch.equal(got, expected)


def test_only_full_attention_qwen2_takes_the_lean_path():
    assert lean_forward.supports(tiny_qwen2())
    assert not lean_forward.supports(tiny_qwen3_5())  # recurrent layers: transformers' own forward
    assert not lean_forward.supports(random_qwen2(use_sliding_window=True, sliding_window=8, max_window_layers=0))


def test_generation_is_the_same_as_through_transformers(monkeypatch):
    model = tiny_qwen2()
    prompt = [5, 9, 13, 5, 9, 13, 21, 8]
    lean = Generator(model).generate(prompt, max_new_tokens=40, drafters=[CopyDrafter([prompt])])
    monkeypatch.setattr(lean_forward, "supports", lambda model: False)
    through_transformers = Generator(model).generate(prompt, max_new_tokens=40, drafters=[CopyDrafter([prompt])])
    assert lean.tokens == through_transformers.tokens
    assert lean.stats.verifications == through_transformers.stats.verifications


def test_final_norm_hook_sees_the_hidden_states():
    model = random_qwen2()
    assert lean_forward.supports(model)
    cache = DynamicCache(config=model.config)
    with capture_hidden(model, enabled=True) as box:
        model_forward(model, [1, 2, 3, 4, 5], cache, 0, logits_to_keep=1)
    assert box["hidden"].pre_norm.shape == (5, 64)
