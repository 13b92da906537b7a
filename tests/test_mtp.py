"""MTP heads: checkpoint names of the three layouts, the maths of each layout against a hand-written
formula, conversions between layouts, and the heads' KV cache kept in sync with accepted tokens."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from decoding.drafters import HiddenStates, MTPDrafter
from decoding.mtp import MTPError, MTPHeads, block_config, convert_state, load_mtp_heads, save_mtp_heads
from tests.tiny_models import randomize, tiny_qwen2, tiny_qwen3_5

pytestmark = pytest.mark.usefixtures("single_thread")

BASE_LAYERS = 2  # tiny_qwen2 has 2 decoder layers, so DeepSeek-style MTP layers are model.layers.2, .3, ...


@pytest.fixture(scope="module")
def base():
    return tiny_qwen2()


def block_names(model) -> list[str]:
    return list(Qwen2DecoderLayer(block_config(model.config), 0).state_dict())


def random_heads(base, layout, num_layers=1, own_head=False, hidden_norm=None, seed=1) -> MTPHeads:
    heads = MTPHeads(base, layout, num_layers, own_head, hidden_norm)
    randomize(heads, seed)
    return heads.eval()


def expected_names(base, layout) -> set[str]:
    block = block_names(base)
    if layout == "qwen3_5":
        return {"mtp.fc.weight", "mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight",
                "mtp.norm.weight"} | {f"mtp.layers.0.{n}" for n in block}
    if layout == "deepseek":
        names = set()
        for index in (BASE_LAYERS, BASE_LAYERS + 1):
            names |= {f"model.layers.{index}.{n}" for n in
                      ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                       "shared_head.head.weight", *block)}
        return names
    return {f"model.mtp_layers.0.{n}" for n in
            ("token_layernorm.weight", "hidden_layernorm.weight", "input_proj.weight", "final_layernorm.weight",
             *block)}


LAYOUT_SHAPES = {"qwen3_5": (1, False), "deepseek": (2, True), "mimo": (1, False)}  # (layers, own head)


@pytest.mark.parametrize("layout", ["qwen3_5", "deepseek", "mimo"])
def test_save_and_load_use_the_exact_checkpoint_names(base, layout, tmp_path):
    num_layers, own_head = LAYOUT_SHAPES[layout]
    heads = random_heads(base, layout, num_layers, own_head)
    path = tmp_path / "mtp.safetensors"
    save_mtp_heads(heads, path, layout=layout)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == expected_names(base, layout)
    loaded = load_mtp_heads(path, base)
    assert loaded.layout.name == layout and loaded.hidden_norm == heads.hidden_norm
    for name, tensor in heads.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_missing_unexpected_and_misshapen_tensors_raise(base):
    state = convert_state(random_heads(base, "qwen3_5"), "qwen3_5")
    without = {n: t for n, t in state.items() if n != "mtp.pre_fc_norm_hidden.weight"}
    with pytest.raises(MTPError, match=r"missing \['mtp.pre_fc_norm_hidden.weight'\]"):
        load_mtp_heads(without, base)
    with pytest.raises(MTPError, match=r"unexpected \['mtp.extra.weight'\]"):
        load_mtp_heads({**state, "mtp.extra.weight": torch.zeros(3)}, base)
    with pytest.raises(MTPError, match=r"mtp.fc.weight: shape \(64, 64\)"):
        load_mtp_heads({**state, "mtp.fc.weight": torch.zeros(64, 64)}, base)
    with pytest.raises(MTPError, match="no MTP tensors found"):
        load_mtp_heads(dict(base.state_dict()), base)
    with pytest.raises(MTPError, match="no such file"):
        load_mtp_heads("/nonexistent/mtp.safetensors", base)


def test_loads_only_mtp_tensors_from_a_sharded_checkpoint_folder(base, tmp_path):
    heads = random_heads(base, "deepseek", 1, hidden_norm="pre")
    base_state = {n: t.contiguous() for n, t in base.state_dict().items()}
    mtp_state = convert_state(heads, "deepseek")
    mtp_state[f"model.layers.{BASE_LAYERS}.embed_tokens.weight"] = base_state["model.embed_tokens.weight"].clone()
    save_file(base_state, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(mtp_state, str(tmp_path / "model-00002-of-00002.safetensors"))
    loaded = load_mtp_heads(tmp_path, base, hidden_norm="pre")
    assert loaded.layout.name == "deepseek" and len(loaded.layers) == 1
    for name, tensor in heads.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("layout", ["qwen3_5", "deepseek", "mimo"])
def test_layout_maths_match_the_reference_formula(base, layout):
    """One pair (h, x) at position 0, computed from the raw checkpoint tensors by hand."""
    heads = random_heads(base, layout, hidden_norm="post", seed=5)
    raw = convert_state(heads, layout)
    eps = base.config.rms_norm_eps
    h = torch.randn(1, 64, generator=torch.Generator().manual_seed(2))
    x = 17
    e = base.model.embed_tokens.weight[x][None]
    if layout == "qwen3_5":  # norms store w and scale by 1 + w; input concat[embedding, hidden]
        u = torch.cat([rms(e, 1 + raw["mtp.pre_fc_norm_embedding.weight"], eps),
                       rms(h, 1 + raw["mtp.pre_fc_norm_hidden.weight"], eps)], -1) @ raw["mtp.fc.weight"].T
        final = 1 + raw["mtp.norm.weight"]
    elif layout == "deepseek":  # plain norms; input concat[embedding, hidden]
        p = f"model.layers.{BASE_LAYERS}."
        u = torch.cat([rms(e, raw[p + "enorm.weight"], eps), rms(h, raw[p + "hnorm.weight"], eps)], -1) \
            @ raw[p + "eh_proj.weight"].T
        final = raw[p + "shared_head.norm.weight"]
    else:  # plain norms; input concat[hidden, embedding]
        p = "model.mtp_layers.0."
        u = torch.cat([rms(h, raw[p + "hidden_layernorm.weight"], eps), rms(e, raw[p + "token_layernorm.weight"], eps)],
                      -1) @ raw[p + "input_proj.weight"].T
        final = raw[p + "final_layernorm.weight"]
    # A decoder layer over one token at position 0: attention returns o_proj(v_proj(.)) (softmax over one key).
    block = heads.layers[0].block
    a = block.input_layernorm(u[None])
    attention = block.self_attn.o_proj(block.self_attn.v_proj(a).view(1, 1, -1, 16).repeat_interleave(2, 2).flatten(2))
    b = u[None] + attention
    b = b + block.mlp(block.post_attention_layernorm(b))
    expected = rms(b[0], final, eps) @ base.lm_head.weight.T

    state = heads.new_state()
    with torch.no_grad():
        heads.extend(state, h, [x])
        got = heads.logits(0, state.last_block_out[0, -1])
        torch.testing.assert_close(got, expected[0].detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("source,target", [("deepseek", "qwen3_5"), ("mimo", "qwen3_5"), ("qwen3_5", "deepseek"),
                                           ("qwen3_5", "mimo")])
def test_conversion_between_layouts_keeps_the_function(base, source, target):
    heads = random_heads(base, source, hidden_norm="post", seed=7)
    converted = load_mtp_heads(convert_state(heads, target), base, hidden_norm="post")
    assert converted.layout.name == target
    hidden = torch.randn(6, 64, generator=torch.Generator().manual_seed(3))
    tokens = [3, 9, 27, 81 % 128, 5, 60]
    drafts = []
    for candidate in (heads, converted):
        state = candidate.new_state()
        candidate.extend(state, hidden, tokens)
        drafts.append((candidate.draft(state, [11], 4), candidate.logits(0, state.last_block_out[0, -1])))
    assert drafts[0][0][0] == drafts[1][0][0]
    torch.testing.assert_close(drafts[0][1], drafts[1][1], rtol=1e-4, atol=1e-4)


def test_conversion_refuses_what_weights_cannot_express(base):
    with pytest.raises(MTPError, match="post-norm hidden state"):
        convert_state(random_heads(base, "deepseek", hidden_norm="pre"), "qwen3_5")
    with pytest.raises(MTPError, match="no per-layer output head"):
        convert_state(random_heads(base, "deepseek", own_head=True, hidden_norm="post"), "mimo")
    with pytest.raises(MTPError, match="holds one MTP layer"):
        convert_state(random_heads(base, "deepseek", num_layers=2, hidden_norm="post"), "qwen3_5")


def test_qwen3_5_heads_on_a_hybrid_base_round_trip(tmp_path):
    model = tiny_qwen3_5()
    heads = random_heads(model, "qwen3_5")
    save_mtp_heads(heads, tmp_path / "mtp.safetensors")
    loaded = load_mtp_heads(tmp_path / "mtp.safetensors", model)
    assert any(name.endswith("self_attn.q_norm.weight") for name in loaded.state_dict())
    hidden, tokens = torch.randn(5, 64), [4, 8, 15, 16, 23]
    results = []
    for candidate in (heads, loaded):
        state = candidate.new_state()
        candidate.extend(state, hidden, tokens)
        results.append(candidate.draft(state, [], 3)[0])
    assert results[0] == results[1] and len(results[0]) == 3


@pytest.mark.parametrize("num_layers", [1, 2])
def test_incremental_cache_matches_a_fresh_run(base, num_layers):
    heads = random_heads(base, "deepseek", num_layers, hidden_norm="pre", seed=9)
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(12, 64, generator=generator)
    tokens = torch.randint(0, 128, (14,), generator=generator).tolist()

    incremental = heads.new_state()
    heads.extend(incremental, hidden[:5], tokens[1:6])
    heads.draft(incremental, tokens[6:8], 4)  # speculative entries: must leave no trace
    heads.extend(incremental, hidden[5:9], tokens[6:10])
    got = heads.draft(incremental, tokens[10:12], 4)
    assert [cache.get_seq_length() for cache in incremental.caches] == [9] * num_layers

    fresh = heads.new_state()
    heads.extend(fresh, hidden[:9], tokens[1:10])
    assert got[0] == heads.draft(fresh, tokens[10:12], 4)[0]


def test_mtp_drafter_follows_observed_hidden_states_and_prefix_reuse(base):
    heads = random_heads(base, "qwen3_5", seed=11)
    hidden = torch.randn(10, 64, generator=torch.Generator().manual_seed(6))
    tokens = list(range(20, 32))

    def observed(chunks, drafter=None):
        if drafter is None:
            drafter = MTPDrafter(heads)
            drafter.begin(tokens, 0)
        for start, stop in chunks:
            drafter.observe(HiddenStates(hidden[start:stop] * 0, hidden[start:stop]), stop - start)
        return drafter

    # hidden states for positions 0..9 of a context of 12 tokens (10 and 11 pending, e.g. forced tokens)
    whole = observed([(0, 10)]).propose(tokens, 3)
    pieces = observed([(0, 3)])
    pieces.propose(tokens[:5], 2)
    observed([(3, 4), (4, 10)], pieces)
    assert pieces.propose(tokens, 3).tokens == whole.tokens and len(whole.tokens) == 3
    assert whole.probs is None and whole.source == "mtp"
    with pytest.raises(ValueError, match="hidden states for 10 positions but only 8 tokens"):
        pieces.propose(tokens[:8], 2)

    reused = observed([(0, 10)])
    reused.propose(tokens, 3)
    reused.begin(tokens[:6] + [99, 98], 6)  # a new prompt sharing 6 cached tokens
    assert reused.propose(tokens[:7], 2).tokens == observed([(0, 6)]).propose(tokens[:7], 2).tokens


def test_sampled_mtp_drafts_return_their_distribution(base):
    heads = random_heads(base, "mimo", seed=13)
    drafter = MTPDrafter(heads, temperature=1.0, seed=0)
    drafter.begin([1, 2, 3], 0)
    drafter.observe(HiddenStates(torch.randn(2, 64), torch.randn(2, 64)), 2)
    draft = drafter.propose([1, 2, 3], 3)
    assert draft.probs.shape == (3, 128)
    torch.testing.assert_close(draft.probs.sum(-1), torch.ones(3))
    assert all(draft.probs[i, t] > 0 for i, t in enumerate(draft.tokens))


def synced_heads(base, seed: int):
    """Random qwen3_5 heads whose state holds six pairs of random hidden states and tokens."""
    heads = random_heads(base, "qwen3_5", seed=seed)
    state = heads.new_state()
    heads.extend(state, torch.randn(6, 64, generator=torch.Generator().manual_seed(seed)),
                 list(range(seed, seed + 6)))
    return heads, state


def test_a_restricted_draft_vocabulary_drafts_the_best_token_inside_it(base):
    heads, state = synced_heads(base, seed=17)
    full_draft, _ = heads.draft(state, [], 3)
    names = set(heads.state_dict())

    heads.restrict_draft_vocab(torch.arange(128))  # every token: the same drafts
    assert heads.draft(state, [], 3)[0] == full_draft
    allowed = torch.tensor(sorted(set(range(0, 128, 3)) - {full_draft[0]}))
    heads.restrict_draft_vocab(allowed)
    restricted, _ = heads.draft(state, [], 3)
    logits = heads.logits(0, state.last_block_out[0, -1])
    assert restricted[0] == int(allowed[logits[allowed].argmax()]) != full_draft[0]
    assert set(restricted) <= set(allowed.tolist())
    _, probs = heads.draft(state, [], 2, temperature=1.0, rng=torch.Generator().manual_seed(0))
    outside = torch.ones(128, dtype=torch.bool)
    outside[allowed] = False
    assert probs[:, outside].sum() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    assert set(heads.state_dict()) == names  # the checkpoint names stay the layout's

    heads.restrict_draft_vocab(None)
    assert heads.draft(state, [], 3)[0] == full_draft
    for bad in ([], [5, 128], [-1]):
        with pytest.raises(MTPError, match="draft vocabulary"):
            heads.restrict_draft_vocab(torch.tensor(bad, dtype=torch.long))


def test_min_confidence_ends_the_draft_where_the_heads_doubt_it(base):
    heads, state = synced_heads(base, seed=19)
    full, _ = heads.draft(state, [], 4)
    # The confidence after each drafted token: the product of the heads' probabilities so far (q of a
    # one-token draft after the earlier tokens, fed as known tokens, is the distribution greedy drafting saw).
    confidence, product = [], 1.0
    for j, token in enumerate(full):
        _, q = heads.draft(state, full[:j], 1, temperature=1.0, rng=torch.Generator().manual_seed(0))
        product *= float(q[0, token])
        confidence.append(product)
    assert confidence == sorted(confidence, reverse=True)
    for cut in range(4):
        threshold = confidence[cut] * 0.999 if cut == 3 else (confidence[cut] + confidence[cut + 1]) / 2
        assert heads.draft(state, [], 4, min_confidence=threshold)[0] == full[:cut + 1]
    assert heads.draft(state, [], 4, min_confidence=1.01)[0] == []


def test_int8_drafting_keeps_the_drafts_close_and_cannot_be_saved(base):
    heads, state = synced_heads(base, seed=29)
    heads.restrict_draft_vocab(torch.arange(0, 128, 2))
    reference = heads.draft_logits(0, state.last_block_out[0, -1])[0]
    heads.quantize_drafting()
    assert heads.quantize_drafting() is heads  # once only
    quantized = heads.draft_logits(0, state.last_block_out[0, -1])[0]
    assert not torch.equal(quantized, reference)  # the int8 layers did run
    assert torch.corrcoef(torch.stack([quantized, reference]))[0, 1] > 0.99
    drafted, _ = heads.draft(state, [], 4)
    assert len(drafted) == 4 and all(t % 2 == 0 for t in drafted)
    with pytest.raises(MTPError, match="int8 for drafting"):
        convert_state(heads, "qwen3_5")


def test_heads_share_a_float16_lm_head_and_draft_losslessly_on_a_float16_model(monkeypatch):
    from decoding import cpu_linear
    from decoding.generate import Generator

    model = tiny_qwen2(seed=3)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as the default model
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 1)
    cpu_linear.float16_weights(model)
    assert isinstance(model.lm_head, cpu_linear.Float16Linear)
    heads = random_heads(model, "qwen3_5", seed=5)
    assert heads.vocab_size == 128
    prompt = [5, 17, 33, 9, 60, 2, 5, 17]
    plain = Generator(model).generate(prompt, max_new_tokens=16)
    full = Generator(model).generate(prompt, max_new_tokens=16, drafters=[MTPDrafter(heads)])
    heads.restrict_draft_vocab(torch.arange(0, 128, 2))  # rows of the shared float32 embedding
    assert torch.equal(heads._draft_vocab[1][0].weight, model.model.embed_tokens.weight[::2])
    heads.quantize_drafting()
    restricted = Generator(model).generate(prompt, max_new_tokens=16, drafters=[MTPDrafter(heads)])
    assert full.tokens == plain.tokens == restricted.tokens
    assert sum(full.stats.proposed_per_drafter.values()) > 0 and sum(restricted.stats.proposed_per_drafter.values()) > 0


def test_heads_stay_float32_and_draft_losslessly_on_a_bfloat16_model():
    from decoding import cpu_linear
    from decoding.generate import Generator

    model = tiny_qwen2(seed=3)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as the default model
    cpu_linear.bfloat16_weights(model)
    heads = random_heads(model, "qwen3_5", seed=5)
    assert all(p.dtype == torch.float32 for p in heads.parameters())
    prompt = [5, 17, 33, 9, 60, 2, 5, 17]
    plain = Generator(model).generate(prompt, max_new_tokens=16)
    heads.restrict_draft_vocab(torch.arange(0, 128, 2))  # rows of the float32 lm_head
    heads.quantize_drafting()  # int8 layers take float32 inputs only: the bfloat16 hidden states are cast
    drafted = Generator(model).generate(prompt, max_new_tokens=16, drafters=[MTPDrafter(heads)])
    assert drafted.tokens == plain.tokens
    assert sum(drafted.stats.proposed_per_drafter.values()) > 0
