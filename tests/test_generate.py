"""Speculative decoding is lossless: greedy output equals plain greedy token for token, sampled output has
the plain sampling distribution. Tiny random models built from configs (float32, fixed seeds)."""

from __future__ import annotations

import pytest
import torch

from decoding.drafters import CombinedDrafter, CopyDrafter, Draft, Drafter, MTPDrafter
from decoding.generate import (
    REPEAT_MAX_PERIOD,
    REPEAT_WINDOW,
    GenerationError,
    Generator,
    first_repetition,
    logits_to_probs,
    loop_start,
    repeats_itself,
    runner_up,
    verify_token,
)
from decoding.mtp import MTPHeads
from tests.tiny_models import EOS, VOCAB, randomize, tiny_qwen2, tiny_qwen3_5

pytestmark = pytest.mark.usefixtures("single_thread")


class ToyConstraint:
    """A toy grammar: at step n, tokens with t % 4 == n % 4 are banned; token 7 fails the document check;
    steps 5-6 of every 10 are forced ([2, 3]); EOS is allowed from step 30; finished at step `length`."""

    def __init__(self, vocab: int = VOCAB, length: int = 45):
        self.vocab = vocab
        self.length = length
        self.consumed: list[int] = []

    def _allowed(self, n: int) -> torch.Tensor:
        if n % 10 in (5, 6):
            return torch.arange(self.vocab) == [2, 3][n % 10 - 5]
        allowed = torch.arange(self.vocab) % 4 != n % 4
        allowed[EOS] = n >= 30
        return allowed

    def mask(self) -> torch.Tensor:
        return self._allowed(len(self.consumed))

    def token_ok(self, token: int) -> bool:
        return token != 7

    def forced_tokens(self) -> list[int]:
        return [2, 3][len(self.consumed) % 10 - 5:] if len(self.consumed) % 10 in (5, 6) else []

    def consume(self, tokens: list[int]) -> None:
        for token in tokens:
            n = len(self.consumed)
            assert self._allowed(n)[token] and token != 7, f"token {token} is not allowed at step {n}"
            self.consumed.append(token)

    def rollback(self, n: int) -> None:
        assert 0 <= n <= len(self.consumed)
        del self.consumed[len(self.consumed) - n:]

    def valid_prefix_len(self, tokens: list[int]) -> int:
        for i, token in enumerate(tokens):
            n = len(self.consumed) + i
            if not self._allowed(n)[token]:
                return i
        return len(tokens)

    def is_finished(self) -> bool:
        return len(self.consumed) >= self.length


PROMPT = [5, 9, 13, 17, 21, 25, 29, 33] * 4 + [40, 41]


def drafter_sets(model):
    heads = MTPHeads(model, "deepseek", 1, hidden_norm="post")
    randomize(heads, 1)
    int8_heads = MTPHeads(model, "deepseek", 1, hidden_norm="post")
    randomize(int8_heads, 1)
    int8_heads.quantize_drafting()
    copy = lambda: CopyDrafter([PROMPT])  # noqa: E731
    return {
        "none": lambda: ([], 8),
        "copy": lambda: ([copy()], 8),
        **{f"mtp_k{k}": (lambda k=k: ([MTPDrafter(heads)], k)) for k in (1, 2, 3, 4)},
        "mtp+copy": lambda: ([CombinedDrafter(MTPDrafter(heads), copy(), copy_min_len=3)], 6),
        "mtp gated": lambda: ([MTPDrafter(heads, min_confidence=0.3)], 4),
        "mtp int8": lambda: ([MTPDrafter(int8_heads)], 4),
    }


@pytest.fixture(scope="module")
def qwen2():
    return tiny_qwen2()


@pytest.mark.parametrize("constrained", [False, True])
def test_greedy_speculative_equals_plain_greedy(qwen2, constrained):
    def run(drafters, max_draft, **kwargs):
        generator = Generator(qwen2, max_draft=max_draft, **kwargs)
        constraint = ToyConstraint() if constrained else None
        # Unconstrained, the random model says EOS early; the toy grammar allows it only from step 30.
        out = generator.generate(PROMPT, constraint=constraint, max_new_tokens=60,
                                 eos_token_ids=None if constrained else [], drafters=drafters)
        if constrained:  # everything emitted went through the constraint, in order
            assert constraint.consumed == out.tokens
        for drafter in drafters:  # MTP heads saw the hidden state of exactly the tokens in the KV cache
            mtp = drafter.mtp if isinstance(drafter, CombinedDrafter) else drafter
            if isinstance(mtp, MTPDrafter):
                assert mtp._hidden_len == len(generator._cache_tokens)
        return out

    reference = run([], 1)
    assert len(reference.tokens) >= 30
    for name, make in drafter_sets(qwen2).items():
        drafters, max_draft = make()
        out = run(drafters, max_draft, adaptive=name != "mtp_k4")
        assert out.tokens == reference.tokens, name
        assert out.finish_reason == reference.finish_reason, name
    copy = run([CopyDrafter([PROMPT])], 8)
    assert copy.stats.accepted_per_drafter["copy"] > 0
    assert copy.stats.model_calls < reference.stats.model_calls


def test_plain_greedy_matches_transformers_generate(qwen2):
    ours = Generator(qwen2).generate(PROMPT, max_new_tokens=30)  # EOS from the model config
    theirs = qwen2.generate(torch.tensor([PROMPT]), max_new_tokens=30, do_sample=False)[0, len(PROMPT):].tolist()
    assert ours.finish_reason == "eos" and theirs[len(ours.tokens)] == EOS
    assert ours.tokens == theirs[:len(ours.tokens)]


def test_a_looping_model_stops_where_plain_decoding_would(qwen2):
    """Without EOS the tiny Qwen2 falls into a loop: it stops at the same token with and without drafts, and
    what came before is plain greedy decoding's output (transformers', which has no guard)."""
    plain = qwen2.generate(torch.tensor([PROMPT]), max_new_tokens=400, do_sample=False, eos_token_id=10**6,
                           pad_token_id=0)[0, len(PROMPT):].tolist()
    outputs = [Generator(qwen2).generate(PROMPT, max_new_tokens=400, eos_token_ids=[], drafters=drafters)
               for drafters in ([], [CopyDrafter([PROMPT])])]
    for out in outputs:
        assert out.finish_reason == "repetition" and REPEAT_WINDOW <= len(out.tokens) < 300
        assert out.tokens == plain[:len(out.tokens)] and out.stats.new_tokens == len(out.tokens)
    assert outputs[0].tokens == outputs[1].tokens
    assert outputs[1].stats.model_calls < outputs[0].stats.model_calls


def test_repetition_is_a_few_4_grams_over_the_whole_window():
    cycle = list(range(32))
    assert repeats_itself(cycle * 6, REPEAT_WINDOW)
    assert not repeats_itself(cycle * 6, REPEAT_WINDOW - 1)  # shorter than the window
    assert not repeats_itself([99] * 10 + cycle * 6, REPEAT_WINDOW + 10, begin=20)  # only output tokens count
    # a 33-token cycle has 33 distinct 4-grams: the rule of longer runs (below) catches it
    assert repeats_itself(list(range(33)) * 6, REPEAT_WINDOW) and not repeats_itself(list(range(33)) * 2, 66)
    assert not repeats_itself(cycle * 3 + list(range(100, 196)), REPEAT_WINDOW)


def test_repetition_is_also_one_longer_run_written_three_times():
    """A 6-line function written again and again is a cycle of ~50 tokens: more 4-grams than the first rule
    counts, caught once three copies (and the window) are out, not at the output budget."""
    function = list(range(1000, 1050))
    assert not repeats_itself(function * 3, 149) and repeats_itself(function * 4, REPEAT_WINDOW)
    assert first_repetition(function * 20, 0, 0) == REPEAT_WINDOW
    long_function = list(range(1000, 1000 + REPEAT_MAX_PERIOD))
    assert first_repetition(long_function * 4, 0, 0) == 3 * REPEAT_MAX_PERIOD
    assert first_repetition([7] + list(range(2000, 2000 + REPEAT_MAX_PERIOD + 1)) * 4, 0, 0) is None  # too long a cycle
    helper = list(range(1000, 1100))
    assert first_repetition(helper * 2 + list(range(3000, 3300)) + helper * 2, 0, 0) is None  # twice is not a loop


def test_snapshot_path_equals_crop_path(qwen2):
    crop = Generator(qwen2).generate(PROMPT, max_new_tokens=60, eos_token_ids=[], drafters=[CopyDrafter([PROMPT])])
    snap = Generator(qwen2, force_snapshot=True).generate(
        PROMPT, max_new_tokens=60, eos_token_ids=[], drafters=[CopyDrafter([PROMPT])])
    assert snap.tokens == crop.tokens
    rejecting_steps = snap.stats.model_calls - crop.stats.model_calls
    assert rejecting_steps > 0  # the snapshot path re-feeds accepted tokens after a rejection


def test_hybrid_model_speculative_equals_plain():
    model = tiny_qwen3_5()
    reference = Generator(model).generate(PROMPT, max_new_tokens=40, eos_token_ids=[])
    heads = MTPHeads(model, "qwen3_5", 1)
    randomize(heads, 3)
    for drafters in ([CopyDrafter([PROMPT])], [CombinedDrafter(MTPDrafter(heads), CopyDrafter([PROMPT]), 3)]):
        out = Generator(model, max_draft=4).generate(PROMPT, max_new_tokens=40, eos_token_ids=[], drafters=drafters)
        assert out.tokens == reference.tokens
    constrained = Generator(model).generate(PROMPT, constraint=ToyConstraint(), max_new_tokens=40)
    speculative = Generator(model).generate(
        PROMPT, constraint=ToyConstraint(), max_new_tokens=40, drafters=[CopyDrafter([PROMPT])])
    assert speculative.tokens == constrained.tokens


def test_prefix_cache_reuse_gives_same_output(qwen2):
    def run(generator, prompt, drafters=()):
        return generator.generate(prompt, max_new_tokens=20, eos_token_ids=[], drafters=drafters)

    generator = Generator(qwen2)
    copy = [CopyDrafter([PROMPT])]
    first = run(generator, PROMPT, copy)
    extended = PROMPT + first.tokens[:5]
    again = run(generator, extended, copy)  # extends the cached prompt
    other = run(generator, PROMPT[:10] + [99, 98], copy)  # shares 10 tokens with it: crop
    assert again.tokens == run(Generator(qwen2), extended).tokens
    assert other.tokens == run(Generator(qwen2), PROMPT[:10] + [99, 98]).tokens
    assert again.stats.model_calls == again.stats.verifications  # no prefill: everything was cached


def recording(drafter) -> list[list[int]]:
    """The drafts `drafter` proposes from now on, appended to the returned list."""
    drafts, propose = [], drafter.propose

    def record(tokens, k):
        draft = propose(tokens, k)
        drafts.append(list(draft.tokens))
        return draft

    drafter.propose = record
    return drafts


def test_a_primed_cache_serves_the_next_prompt_as_a_generated_one_would(qwen2):
    heads = MTPHeads(qwen2, "qwen3_5", 1)
    randomize(heads, 3)
    generated = Generator(qwen2)
    generated_drafter = MTPDrafter(heads)
    first = generated.generate(PROMPT, max_new_tokens=20, eos_token_ids=[], drafters=[generated_drafter])
    primed = Generator(qwen2)
    primed_drafter = MTPDrafter(heads)
    primed.prime(generated._cache_tokens, [primed_drafter])
    assert primed._cache.get_seq_length() == len(generated._cache_tokens)
    drafts = {"generated": recording(generated_drafter), "primed": recording(primed_drafter)}
    extended = PROMPT + first.tokens[:5]
    expected = generated.generate(extended, max_new_tokens=20, eos_token_ids=[], drafters=[generated_drafter])
    got = primed.generate(extended, max_new_tokens=20, eos_token_ids=[], drafters=[primed_drafter])
    assert got.tokens == expected.tokens
    assert got.stats.model_calls == got.stats.verifications  # no prefill: the primed cache held the prefix
    # the drafter got the prefix's hidden states: it drafts what the one that generated them drafts
    assert drafts["primed"] == drafts["generated"] and len(drafts["primed"]) > 3


def test_loop_start_finds_the_second_copy_of_the_loop_an_output_ends_in():
    assert loop_start([1, 2, 3] + [7, 8, 9] * 3) == (6, 3)
    assert loop_start([1, 2, 3] + [7, 8, 9] * 3 + [7, 8]) == (6, 3)  # the last copy cut short
    assert loop_start([5] + [0] * 10) == (2, 1)
    # Text before the loop that ends as the loop does looks like part of its first copy (`loop_points` looks on
    # for a line start).
    assert loop_start([1, 9, 7] + [8, 9, 7] * 3) == (4, 3)
    assert loop_start(list(range(100)) + [4, 5, 6, 7] * 2) is None  # two copies are not a loop
    assert loop_start(list(range(20))) is None
    assert loop_start([7, 8, 9] * 3, begin=3) is None  # only the tokens past `begin` count


def test_runner_up_is_the_best_other_token_the_constraint_allows():
    logits = torch.tensor([0.0, 5.0, 3.0, 4.0, float("-inf")])
    assert runner_up(logits, 1, ToyConstraint()) == (1.0, 3)
    refuses_3 = type("Refuses3", (ToyConstraint,), {"token_ok": lambda self, token: token != 3})()
    assert runner_up(logits, 1, refuses_3) == (2.0, 2)
    assert runner_up(torch.tensor([float("-inf"), 1.0]), 1, ToyConstraint()) == (float("inf"), None)


def test_each_greedy_token_has_its_runner_up_with_or_without_drafts(qwen2):
    runs = [Generator(qwen2, max_draft=1).generate(PROMPT, constraint=ToyConstraint(), max_new_tokens=60),
            Generator(qwen2).generate(PROMPT, constraint=ToyConstraint(), max_new_tokens=60,
                                      drafters=[CopyDrafter([PROMPT])])]
    plain, drafted = runs
    assert drafted.tokens == plain.tokens and drafted.stats.accepted_per_drafter["copy"] > 0
    for out in runs:
        assert len(out.runner_ups) == len(out.tokens) >= 30
        for step, (token, (gap, other)) in enumerate(zip(out.tokens, out.runner_ups)):
            if step % 10 in (5, 6):  # forced by the grammar: no choice was made
                assert (gap, other) == (float("inf"), None)
            else:  # another token the grammar and the document check allowed, below the chosen one
                assert other != token and other % 4 != step % 4 and other != 7 and gap >= 0
    assert [other for _, other in drafted.runner_ups] == [other for _, other in plain.runner_ups]
    assert [gap for gap, _ in drafted.runner_ups] == pytest.approx([gap for gap, _ in plain.runner_ups], abs=1e-3)
    sampled = Generator(qwen2).generate(PROMPT, max_new_tokens=10, temperature=1.0, seed=0)
    assert sampled.runner_ups == []  # a sampled token has no "runner-up"


def test_stats_are_consistent(qwen2):
    seen = []
    out = Generator(qwen2).generate(
        PROMPT, constraint=ToyConstraint(), max_new_tokens=60, on_progress=lambda s: seen.append(s.new_tokens),
        drafters=[CopyDrafter([PROMPT])])
    stats = out.stats
    assert stats.new_tokens == len(out.tokens)
    assert stats.forced_tokens > 0
    eos = 1 if out.finish_reason == "eos" else 0
    assert stats.verified_tokens + stats.forced_tokens == stats.new_tokens + eos
    assert stats.mean_accepted == pytest.approx(stats.verified_tokens / stats.verifications)
    assert stats.model_calls == stats.verifications + 1  # + prefill; crop path: no re-feeds
    assert 0 < stats.accepted_per_drafter["copy"] <= stats.proposed_per_drafter["copy"]
    assert stats.tokens_per_s > 0 and stats.grammar_seconds > 0
    assert seen == sorted(seen) and len(seen) == stats.verifications


def test_stops_on_length_and_grammar(qwen2):
    out = Generator(qwen2).generate(PROMPT, max_new_tokens=7, eos_token_ids=[])
    assert len(out.tokens) == 7 and out.finish_reason == "length"
    out = Generator(qwen2).generate(
        PROMPT, constraint=ToyConstraint(length=12), max_new_tokens=60, eos_token_ids=[],
        drafters=[CopyDrafter([PROMPT])])
    assert len(out.tokens) == 12 and out.finish_reason == "grammar"


def test_constraint_that_allows_nothing_raises(qwen2):
    class Nothing(ToyConstraint):
        def mask(self):
            return torch.zeros(VOCAB, dtype=torch.bool)

    with pytest.raises(GenerationError, match="allows no next token"):
        Generator(qwen2).generate(PROMPT, constraint=Nothing(), max_new_tokens=5)


# --- sampling ------------------------------------------------------------------------------------------------


class FixedDrafter(Drafter):
    """Proposes tokens drawn from a fixed, deliberately wrong distribution q (probs=q), or, with q None, a
    fixed token sequence (one-hot q)."""

    name = "fixed"

    def __init__(self, q: torch.Tensor | None, tokens: list[int] = (), seed: int = 0):
        self.q = q
        self.tokens = list(tokens)
        self.rng = torch.Generator().manual_seed(seed)

    def propose(self, tokens, k):
        if self.q is None:
            return Draft(self.tokens[:k], None, self.name)
        drafted = torch.multinomial(self.q, k, replacement=True, generator=self.rng).tolist()
        return Draft(drafted, self.q.expand(k, -1), self.name)


def exact_two_token_marginals(model, prompt, temperature, top_p):
    """P(first token), P(second token) of plain sampling, computed from the model."""
    with torch.no_grad():
        p1 = logits_to_probs(model(torch.tensor([prompt])).logits[0, -1], temperature, top_p)
        batch = torch.tensor([prompt + [t] for t in range(p1.shape[0])])
        p2_given = torch.stack([logits_to_probs(row, temperature, top_p)
                                for row in model(batch).logits[:, -1]])
    return p1, p1 @ p2_given


@pytest.mark.parametrize("q_kind", ["wrong_q", "one_hot"])
def test_speculative_sampling_matches_plain_distribution(q_kind):
    vocab, temperature, top_p, samples = 12, 1.0, 0.95, 1500
    model = tiny_qwen2(vocab=vocab, seed=4, peak=2.0)
    prompt = [3, 5, 7, 3, 5]
    p1, p2 = exact_two_token_marginals(model, prompt, temperature, top_p)
    q = torch.linspace(1.0, 0.05, vocab)
    q = q / q.sum()
    # The draft distribution is far from the target: trusting the drafts would visibly bias the output.
    assert 0.5 * (p1 - q).abs().sum() > 0.2
    drafter = FixedDrafter(q if q_kind == "wrong_q" else None, tokens=[int(p1.argmax()), int(p2.argmax())])
    generator = Generator(model, max_draft=2, adaptive=False)
    counts = torch.zeros(2, vocab)
    accepted = 0
    for seed in range(samples):
        out = generator.generate(prompt, max_new_tokens=2, temperature=temperature, top_p=top_p, seed=seed,
                                 eos_token_ids=[], drafters=[drafter])
        counts[0, out.tokens[0]] += 1
        counts[1, out.tokens[1]] += 1
        accepted += out.stats.accepted_per_drafter.get("fixed", 0)
    assert accepted > samples * 0.1  # the acceptance branch is exercised, not only the residual one
    for position, exact in enumerate((p1, p2)):
        total_variation = 0.5 * (counts[position] / samples - exact).abs().sum()
        assert total_variation < 0.06, (position, total_variation)


def test_verify_token_rejects_tokens_outside_the_target():
    logits = torch.tensor([0.0, 1.0, float("-inf"), 2.0])
    rng = torch.Generator().manual_seed(0)
    from decoding.generate import Unconstrained

    for q in (None, torch.tensor([0.1, 0.1, 0.7, 0.1])):
        for _ in range(20):
            accepted, token = verify_token(logits, 2, q, Unconstrained(), 1.0, 1.0, rng)
            assert not accepted and token != 2
    assert verify_token(logits, 3, None, Unconstrained(), 0.0, 1.0, rng) == (True, 3)
    assert verify_token(logits, 1, None, Unconstrained(), 0.0, 1.0, rng) == (False, 3)


@pytest.mark.parametrize("q_kind", ["wrong_q", "one_hot"])
def test_constrained_sampling_emits_only_grammar_tokens(qwen2, q_kind):
    q = torch.full((VOCAB,), 1.0 / VOCAB)
    for seed in range(3):
        drafter = FixedDrafter(q, seed=seed) if q_kind == "wrong_q" else CopyDrafter([PROMPT])
        constraint = ToyConstraint()
        out = Generator(qwen2, max_draft=4).generate(
            PROMPT, constraint=constraint, max_new_tokens=50, temperature=0.8, top_p=0.9, seed=seed,
            drafters=[drafter])
        assert constraint.consumed == out.tokens and 7 not in out.tokens
        assert out.stats.forced_tokens > 0 or out.finish_reason == "eos"
