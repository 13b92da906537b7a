"""Lossless speculative decoding for transformers causal LMs, optionally grammar-constrained (batch size 1).

One decoding step:
    1. tokens the grammar forces are appended without sampling (they enter the KV cache with step 3);
    2. drafters propose k tokens; the draft is cut where the grammar stops accepting it;
    3. one forward over [pending tokens + draft] gives the target distribution at every draft position;
    4. draft tokens are accepted left to right (greedy: equal to the target's choice; sampling: the
       speculative-sampling rule), then one token is taken from the target at the first rejection (or after
       the whole draft), so every step emits at least one token;
    5. the KV cache is cut back to the accepted tokens: `crop` where every cache layer can crop, otherwise
       (recurrent layers, e.g. Gated DeltaNet) the uncroppable layers are restored from a copy taken before
       step 3 and the accepted tokens are fed again.
The output has exactly the distribution of plain decoding (token for token equal when greedy).

The constraint interface (implemented by decoding/constraint.py):
    mask() -> bool [vocab] | None, token_ok(token) -> bool, forced_tokens() -> list[int],
    consume(tokens), rollback(n), valid_prefix_len(tokens) -> int, is_finished() -> bool
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from decoding import lean_forward
from decoding.constraint import apply_mask
from decoding.drafters import Draft, Drafter, HiddenStates


class GenerationError(RuntimeError):
    """Decoding cannot continue (e.g. the constraint allows no token)."""


@dataclass
class Stats:
    new_tokens: int = 0
    model_calls: int = 0  # target forwards: prefill, verification steps, re-feeds after a restore
    forced_tokens: int = 0  # appended from the grammar without sampling
    verifications: int = 0  # decoding steps (one target forward each, drafted or not)
    verified_tokens: int = 0  # tokens emitted by those steps (accepted draft tokens + one target token each)
    accepted_per_drafter: dict[str, int] = field(default_factory=dict)
    proposed_per_drafter: dict[str, int] = field(default_factory=dict)
    mean_accepted: float = 0.0  # verified_tokens / verifications: tokens per step, the target's own included
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    grammar_seconds: float = 0.0  # time spent in constraint calls

    def refresh(self, started: float) -> None:
        self.seconds = time.perf_counter() - started
        self._rates()

    def merge(self, other: Stats) -> Stats:
        """Add `other`'s counts and times to these ones (a sum over tries or items); returns self."""
        for name in ("new_tokens", "model_calls", "forced_tokens", "verifications", "verified_tokens", "seconds",
                     "grammar_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.accepted_per_drafter, other.accepted_per_drafter),
                             (self.proposed_per_drafter, other.proposed_per_drafter)):
            for source, count in theirs.items():
                mine[source] = mine.get(source, 0) + count
        self._rates()
        return self

    def _rates(self) -> None:
        self.tokens_per_s = self.new_tokens / self.seconds if self.seconds > 0 else 0.0
        self.mean_accepted = self.verified_tokens / self.verifications if self.verifications else 0.0


@dataclass
class Generation:
    tokens: list[int]  # generated tokens, without the prompt and without the stopping EOS
    stats: Stats
    finish_reason: str = "length"  # "eos" | "grammar" | "length" | "repetition" (see `repeats_itself`)
    # Greedy only, one per token: (how far the token's logit is above the runner-up's, the runner-up), where the
    # runner-up is the best other token the constraint allowed there; (inf, None) for a forced token or none.
    runner_ups: list[tuple[float, int | None]] = field(default_factory=list)


# --- repetition guard ----------------------------------------------------------------------------------------

# A greedy small model that falls into a loop does not leave it, though the loop may vary (two cycles interleaved).
# Stop when the last REPEAT_WINDOW output tokens hold at most REPEAT_MAX_DISTINCT distinct 4-grams: real code that
# long has several times more (no window of EditEval's or HumanEvalFix's files, or of 150 stdlib modules, has so
# few under byte-level BPEs of 1,200 and 16,000 tokens), and a cycle of up to 32 tokens has at most 32.
REPEAT_WINDOW = 192
REPEAT_NGRAM = 4
REPEAT_MAX_DISTINCT = 32
# A longer cycle (the 1.5B model, rewriting an excerpt, wrote one 6-line function of ~50 tokens 20 times over, to
# the output budget of 1,024 tokens) is caught as the same tokens REPEAT_COPIES times in a row, over the window
# at least: in 1.3M tokens of real code (400 stdlib modules, the benchmarks' files and tests, every accepted answer
# in bench/quality-cache, the 1.5B's BPE) no run is, for any period up to REPEAT_MAX_PERIOD; two copies are (a
# test that defines the same helper twice).
REPEAT_COPIES = 3
REPEAT_MAX_PERIOD = 256


def repeats_itself(tokens: list[int], end: int, begin: int = 0) -> bool:
    """True when tokens[begin:end] ends in a window that repeats a few 4-grams over and over, or in
    REPEAT_COPIES copies of one run of tokens."""
    if end - begin < REPEAT_WINDOW:
        return False
    grams = {tuple(tokens[i:i + REPEAT_NGRAM]) for i in range(end - REPEAT_WINDOW, end - REPEAT_NGRAM + 1)}
    return len(grams) <= REPEAT_MAX_DISTINCT or repeated_run(tokens, end, begin)


def repeated_run(tokens: list[int], end: int, begin: int = 0) -> bool:
    """True when tokens[begin:end] ends in REPEAT_COPIES copies of a run of REPEAT_MAX_DISTINCT + 1 to
    REPEAT_MAX_PERIOD tokens, REPEAT_WINDOW tokens at least (shorter cycles are the 4-gram rule's)."""
    last = tokens[end - 1]
    for period in range(REPEAT_MAX_DISTINCT + 1, REPEAT_MAX_PERIOD + 1):
        span = max(REPEAT_WINDOW, REPEAT_COPIES * period)
        if end - begin < span:
            return False
        # span tokens that repeat with this period: each equals the one `period` after it
        if tokens[end - 1 - period] == last and tokens[end - span:end - period] == tokens[end - span + period:end]:
            return True
    return False


def first_repetition(tokens: list[int], checked: int, begin: int) -> int | None:
    """The shortest length past `checked` at which tokens[begin:length] repeats itself, if any: where plain
    decoding would stop, whatever the drafts accepted in the same step."""
    return next((end for end in range(checked + 1, len(tokens) + 1) if repeats_itself(tokens, end, begin)), None)


def loop_start(tokens: list[int], begin: int = 0, copies: int = REPEAT_COPIES,
               min_period: int = 1) -> tuple[int, int] | None:
    """(where its second copy starts, its period) for the loop tokens[begin:] ends in: the period (min_period to
    REPEAT_MAX_PERIOD tokens) whose copies reach back furthest, at least `copies` of them (the last may be cut
    short); None when the tokens do not end in one."""
    best = None  # (first copy's start, period)
    for period in range(min_period, REPEAT_MAX_PERIOD + 1):
        if period > (len(tokens) - begin) // copies:
            break
        start = len(tokens) - period  # tokens[start:] repeat with this period: each equals the one `period` after it
        while start > begin and tokens[start - 1] == tokens[start - 1 + period]:
            start -= 1
        if len(tokens) - start >= copies * period and (best is None or start < best[0]):
            best = (start, period)
    return (best[0] + best[1], best[1]) if best is not None else None


# --- sampling --------------------------------------------------------------------------------------------------


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    # logits: [V] -> probs [V]; masked tokens (-inf) get probability 0
    probs = torch.softmax(logits.float() / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        sorted_probs[(sorted_probs.cumsum(-1) - sorted_probs) >= top_p] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


def greedy_token(logits: torch.Tensor, constraint) -> int:
    # logits: [V], masked. The best token that also passes the constraint's document check.
    logits = logits.clone()
    while True:
        token = int(logits.argmax())
        if logits[token] == float("-inf"):
            raise GenerationError("the constraint allows no next token")
        if constraint.token_ok(token):
            return token
        logits[token] = float("-inf")


def runner_up(logits: torch.Tensor, token: int, constraint) -> tuple[float, int | None]:
    # logits: [V], masked. The best token other than `token` that passes the constraint's document check, and the
    # gap log p(token) - log p(runner-up) = the difference of their logits; (inf, None) when there is none.
    others = logits.clone()
    others[token] = float("-inf")
    while True:
        alternative = int(others.argmax())
        if others[alternative] == float("-inf"):
            return float("inf"), None
        if constraint.token_ok(alternative):
            return float(logits[token] - others[alternative]), alternative
        others[alternative] = float("-inf")


def sample(probs: torch.Tensor, constraint, rng: torch.Generator | None) -> int:
    # probs: [V]. Draws from probs conditioned on token_ok: a draw that fails the check is removed and redrawn,
    # so only drawn tokens are ever checked.
    probs = probs.clone()
    while True:
        if probs.sum() <= 0:
            raise GenerationError("the constraint allows no next token")
        token = int(torch.multinomial(probs, 1, generator=rng))
        if constraint.token_ok(token):
            return token
        probs[token] = 0


def restrict_to_ok(probs: torch.Tensor, constraint) -> torch.Tensor:
    # probs: [V] -> probs renormalised over the tokens of its support that pass token_ok (checks the support).
    probs = probs.clone()
    for token in probs.nonzero().flatten().tolist():
        if not constraint.token_ok(token):
            probs[token] = 0
    if probs.sum() <= 0:
        raise GenerationError("the constraint allows no next token")
    return probs / probs.sum()


def verify_token(logits: torch.Tensor, draft_token: int | None, q: torch.Tensor | None, constraint,
                 temperature: float, top_p: float, rng: torch.Generator | None) -> tuple[bool, int]:
    """One position of verification. logits: [V] target logits, grammar-masked; draft_token: the draft's token
    here (None past the end of the draft); q: [V] the distribution it was drawn from (None: one-hot on it).
    Returns (accepted, token): token is the draft token when accepted, else the target's replacement."""
    if temperature <= 0:
        # Greedy: the draft token survives iff it is what plain greedy decoding would pick.
        target = greedy_token(logits, constraint)
        return target == draft_token, target
    p = logits_to_probs(logits, temperature, top_p)
    if draft_token is None:
        return False, sample(p, constraint, rng)
    if q is None:
        # q = one-hot(x): keep x with probability min(1, p(x)/q(x)) = p(x); on rejection draw from
        # norm(max(0, p - q)) = p restricted to tokens != x. Drawing y ~ p and keeping x iff y == x is the same
        # coupling: P(y = x) = p(x), and y given y != x is distributed as p(. | != x).
        y = sample(p, constraint, rng)
        return y == draft_token, y
    # Speculative sampling (Leviathan et al. 2023, Chen et al. 2023), x ~ q:
    #   keep x with probability min(1, p(x)/q(x)); otherwise draw y ~ norm(max(0, p - q)).
    #   P(out = y) = min(p, q)(y) + (1 - sum min(p, q)) * max(0, p - q)(y) / sum max(0, p - q)
    #              = min(p, q)(y) + max(0, p - q)(y) = p(y),   because sum max(0, p - q) = 1 - sum min(p, q).
    # token_ok must be folded into p first, over the whole support, since both branches read p directly.
    p = restrict_to_ok(p, constraint)
    p_x, q_x = float(p[draft_token]), float(q[draft_token])
    if q_x > 0 and float(torch.rand(1, generator=rng)) < min(1.0, p_x / q_x):
        return True, draft_token
    residual = (p - q.to(p.device)).clamp(min=0)
    if residual.sum() <= 0:  # p == q up to rounding, where acceptance was certain: only a guard
        residual = p
    return False, int(torch.multinomial(residual, 1, generator=rng))


# --- model and cache ----------------------------------------------------------------------------------------


@torch.no_grad()
def model_forward(model, tokens: list[int], cache, start: int, logits_to_keep: int) -> torch.Tensor:
    # tokens: T new tokens at positions start..start+T-1 -> logits [logits_to_keep, V] of the last positions
    device = model.get_input_embeddings().weight.device  # the input side: int8 output layers hold no .weight tensor
    input_ids = torch.tensor([tokens], device=device)  # [1, T]
    position_ids = torch.arange(start, start + len(tokens), device=device)[None]  # [1, T]
    if lean_forward.supports(model):
        return lean_forward.forward(model, input_ids, position_ids, cache, logits_to_keep)[0].float()
    out = model(input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True,
                logits_to_keep=logits_to_keep)
    return out.logits[0].float()


def prefill(model, tokens: list[int], cache, start: int) -> None:
    # Fills the KV cache; the logits of the last token are not needed (it is fed again with the first step).
    model_forward(model, tokens, cache, start, logits_to_keep=1)


def layer_croppable(layer, force_snapshot: bool) -> bool:
    return not force_snapshot and bool(getattr(layer, "is_croppable", False))


def snapshot_layers(cache, force_snapshot: bool) -> dict[int, object]:
    """Copies of the cache layers that `crop` cannot roll back (recurrent states), by layer index."""
    return {i: copy.deepcopy(layer) for i, layer in enumerate(cache.layers)
            if not layer_croppable(layer, force_snapshot)}


def restore_layers(cache, snapshot: dict[int, object], fed: int) -> None:
    """Put the cache back to before a forward of `fed` tokens: snapshotted layers are swapped back in,
    the others are cropped."""
    for i, layer in enumerate(cache.layers):
        if i in snapshot:
            cache.layers[i] = snapshot[i]
        else:
            layer.crop(-fed)


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def final_norm(model):
    norm = getattr(model.get_decoder(), "norm", None)
    if norm is None:
        raise GenerationError(f"{type(model).__name__}: no final norm at get_decoder().norm to read hidden states from")
    return norm


@contextmanager
def capture_hidden(model, enabled: bool):
    """Records the last forward's final-norm input and output (the target's last hidden states, pre- and
    post-norm). A hook rather than output_hidden_states: that returns only the post-norm state and keeps
    every layer's."""
    box: dict[str, HiddenStates] = {}
    if not enabled:
        yield box
        return

    def hook(module, args, output):
        box["hidden"] = HiddenStates(args[0][0].detach(), output[0].detach())  # [T, H] each

    handle = final_norm(model).register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


# --- constraint plumbing -------------------------------------------------------------------------------------


class Unconstrained:
    def mask(self):
        return None

    def token_ok(self, token: int) -> bool:
        return True

    def forced_tokens(self) -> list[int]:
        return []

    def consume(self, tokens: list[int]) -> None:
        pass

    def rollback(self, n: int) -> None:
        pass

    def valid_prefix_len(self, tokens: list[int]) -> int:
        return len(tokens)

    def is_finished(self) -> bool:
        return False


class TimedConstraint:
    """Forwards to a constraint and adds the time spent to stats.grammar_seconds."""

    def __init__(self, constraint, stats: Stats):
        self._constraint = constraint
        self._stats = stats

    def __getattr__(self, name):
        method = getattr(self._constraint, name)

        def timed(*args):
            started = time.perf_counter()
            try:
                return method(*args)
            finally:
                self._stats.grammar_seconds += time.perf_counter() - started

        return timed


def check_draft(constraint, draft: list[int]) -> tuple[int, list[torch.Tensor | None]]:
    """How many leading draft tokens the grammar accepts (valid_prefix_len, then token_ok), and the mask at
    each of those positions plus the one after them. The constraint ends where it started."""
    valid = constraint.valid_prefix_len(draft)
    masks: list[torch.Tensor | None] = []
    consumed = 0
    for token in draft[:valid]:
        masks.append(constraint.mask())
        if not constraint.token_ok(token):
            break
        constraint.consume([token])
        consumed += 1
    if len(masks) == consumed:
        masks.append(constraint.mask())
    constraint.rollback(consumed)
    return consumed, masks


def next_draft_len(k: int, proposed: int, accepted: int, max_draft: int) -> int:
    if proposed == 0:
        return k
    if accepted == proposed:
        return min(max_draft, k + 2)  # the whole draft held: look further ahead
    return max(1, accepted + 1)  # rejected at position `accepted`: drafts longer than that mostly waste work


def default_eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


# --- generator -----------------------------------------------------------------------------------------------


class Generator:
    """Speculative decoding: each `generate` call drafts with the drafters it is given (several: the longest
    draft of each step is verified).

    Keeps the KV cache of the last call: a next prompt that shares a prefix with it reuses that prefix
    (cropped where the cache can crop; hybrid caches are reused only when the prompt extends the old one).
    `force_snapshot` treats every cache layer as uncroppable (tests the path hybrid models take)."""

    def __init__(self, model, tokenizer=None, max_draft: int = 8, adaptive: bool = True,
                 force_snapshot: bool = False):
        if max_draft < 1:
            raise ValueError(f"max_draft must be >= 1, got {max_draft}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_draft = max_draft
        self.adaptive = adaptive
        self.force_snapshot = force_snapshot
        self.eos_token_ids = default_eos_ids(model, tokenizer)
        self._cache = None
        self._cache_tokens: list[int] = []

    def _open_cache(self, prompt_ids: list[int]) -> tuple[DynamicCache, int]:
        """(cache, number of leading prompt tokens already in it)."""
        cache, cached_tokens = self._cache, self._cache_tokens
        self._cache, self._cache_tokens = None, []  # an exception must not leave a half-updated cache behind
        if cache is None:
            return DynamicCache(config=self.model.config), 0
        keep = common_prefix_len(cached_tokens, prompt_ids[:-1])
        if keep == len(cached_tokens):
            return cache, keep
        if keep > 0 and all(layer_croppable(layer, self.force_snapshot) for layer in cache.layers):
            cache.crop(-(len(cached_tokens) - keep))
            return cache, keep
        return DynamicCache(config=self.model.config), 0

    @property
    def cached_tokens(self) -> list[int]:
        """The tokens the KV cache holds, kept from the last call (its prompt and output, as far as computed)."""
        return self._cache_tokens

    @torch.no_grad()
    def prime(self, tokens: list[int], drafters: tuple[Drafter, ...] | list[Drafter] = ()) -> None:
        """Fill a fresh KV cache with `tokens`, a prefix the next prompts are expected to share (e.g. the last
        prompt, after the model's weights changed), and give `drafters` the hidden states for it, as if a
        generation had just read it."""
        drafters = list(drafters)
        self._cache, self._cache_tokens = None, []
        cache = DynamicCache(config=self.model.config)
        with capture_hidden(self.model, any(d.needs_hidden for d in drafters)) as hidden:
            for drafter in drafters:
                drafter.begin(tokens, 0)
            if tokens:
                prefill(self.model, tokens, cache, 0)
                self._observe(drafters, hidden, len(tokens))
        self._cache, self._cache_tokens = cache, list(tokens)

    @staticmethod
    def _propose(drafters: list[Drafter], tokens: list[int], k: int) -> Draft:
        best = Draft([], None, "")
        if k <= 0:
            return best
        for drafter in drafters:
            draft = drafter.propose(tokens, k)
            draft.tokens = draft.tokens[:k]
            if len(draft.tokens) > len(best.tokens):
                best = draft
        return best

    @staticmethod
    def _observe(drafters: list[Drafter], box: dict, accepted_len: int) -> None:
        for drafter in drafters:
            if drafter.needs_hidden:
                drafter.observe(box["hidden"], accepted_len)

    @torch.no_grad()
    def generate(self, prompt_ids: list[int], constraint=None, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, eos_token_ids=None, on_progress=None,
                 drafters: tuple[Drafter, ...] | list[Drafter] = ()) -> Generation:
        if not prompt_ids:
            raise ValueError("the prompt is empty; generation needs at least one token to start from")
        stats = Stats()
        started = time.perf_counter()
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = set(eos_token_ids) if eos_token_ids is not None else self.eos_token_ids
        grammar = TimedConstraint(constraint if constraint is not None else Unconstrained(), stats)
        tokens = list(prompt_ids)
        runner_ups: list[tuple[float, int | None]] = []  # greedy: one per token past the prompt
        k = self.max_draft if not self.adaptive else max(1, self.max_draft // 2)
        finish = "length"
        end = None  # where the output is cut when it repeats itself

        drafters = list(drafters)
        with capture_hidden(self.model, any(d.needs_hidden for d in drafters)) as hidden:
            cache, reused = self._open_cache(tokens)
            for drafter in drafters:
                drafter.begin(tokens, reused)
            # The last prompt token stays pending: the first step feeds it together with the first draft.
            if len(tokens) - 1 > reused:
                prefill(self.model, tokens[reused:-1], cache, reused)
                stats.model_calls += 1
                self._observe(drafters, hidden, len(tokens) - 1 - reused)
            cached = len(tokens) - 1  # tokens[:cached] are in the KV cache

            while True:
                if grammar.is_finished():
                    finish = "grammar"
                    break
                remaining = max_new_tokens - (len(tokens) - len(prompt_ids))
                if remaining <= 0:
                    break
                forced = grammar.forced_tokens()[:remaining]
                if forced:
                    stop = next((i for i, t in enumerate(forced) if t in eos), None)
                    forced = forced[:stop]
                    grammar.consume(forced)
                    tokens += forced
                    runner_ups += [(float("inf"), None)] * len(forced)
                    end = first_repetition(tokens, len(tokens) - len(forced), len(prompt_ids))
                    stats.forced_tokens += len(forced)
                    stats.new_tokens = len(tokens) - len(prompt_ids)
                    if end is not None:
                        finish = "repetition"
                        break
                    if stop is not None:
                        finish = "eos"
                        break
                    continue

                # Draft: never past the budget (the target adds one token) and never an EOS (it ends the
                # generation, so there is nothing to gain from drafting it).
                draft = self._propose(drafters, tokens, min(k, remaining - 1))
                draft_tokens = draft.tokens
                eos_at = next((i for i, t in enumerate(draft_tokens) if t in eos), None)
                draft_tokens = draft_tokens[:eos_at]
                valid, masks = check_draft(grammar, draft_tokens)

                # Verify: one forward over pending + the grammar-valid draft.
                pending = tokens[cached:]
                fed = pending + draft_tokens[:valid]
                snapshot = snapshot_layers(cache, self.force_snapshot) if valid else {}
                logits = model_forward(self.model, fed, cache, cached, logits_to_keep=valid + 1)  # [valid+1, V]
                stats.model_calls += 1
                stats.verifications += 1

                # Accept left to right. Position `valid` holds either the draft token the grammar refused (the
                # rule then always rejects it, since p gives it 0) or nothing; either way it yields the last token.
                accepted, token = 0, None
                for i in range(valid + 1):
                    draft_token = draft_tokens[i] if i < len(draft_tokens) else None
                    q = draft.probs[i] if draft.probs is not None and draft_token is not None else None
                    masked = apply_mask(logits[i], masks[i])
                    ok, token = verify_token(masked, draft_token, q, grammar, temperature, top_p, rng)
                    if temperature <= 0:
                        runner_ups.append(runner_up(masked, token, grammar))
                    if not ok or i == valid:
                        break
                    grammar.consume([token])
                    accepted += 1

                # Roll the KV cache back to pending + accepted draft tokens.
                rejected = valid - accepted
                self._observe(drafters, hidden, len(pending) + accepted)
                if rejected and snapshot:
                    restore_layers(cache, snapshot, len(fed))
                    prefill(self.model, fed[:len(fed) - rejected], cache, cached)
                    stats.model_calls += 1
                elif rejected:
                    cache.crop(-rejected)
                cached += len(pending) + accepted

                before = len(tokens)
                tokens += draft_tokens[:accepted]
                if draft_tokens:
                    stats.proposed_per_drafter[draft.source] = stats.proposed_per_drafter.get(draft.source, 0) + len(draft_tokens)
                    stats.accepted_per_drafter[draft.source] = stats.accepted_per_drafter.get(draft.source, 0) + accepted
                stats.verified_tokens += accepted + 1
                if self.adaptive:
                    k = next_draft_len(k, len(draft_tokens), accepted, self.max_draft)
                if token in eos:
                    finish = "eos"
                    runner_ups = runner_ups[:len(tokens) - len(prompt_ids)]
                else:
                    grammar.consume([token])
                    tokens.append(token)
                end = first_repetition(tokens, before, len(prompt_ids))
                if end is not None:
                    finish = "repetition"
                stats.new_tokens = len(tokens) - len(prompt_ids)
                stats.refresh(started)
                if on_progress is not None:
                    on_progress(stats)
                if finish in ("eos", "repetition"):
                    break

        self._cache, self._cache_tokens = cache, tokens[:cached]
        output = tokens[len(prompt_ids):end]
        stats.new_tokens = len(output)
        stats.refresh(started)
        return Generation(output, stats, finish, runner_ups[:len(output)] if temperature <= 0 else [])
