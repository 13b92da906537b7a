"""Draft proposers for speculative decoding.

A drafter guesses the next few tokens cheaply; `decoding.generate` verifies them with one forward of the
target model and keeps the longest prefix the target agrees with, so a bad drafter costs speed, never output.

    Drafter.propose(tokens, k) -> Draft     tokens: the whole context so far (prompt + generated)
    Drafter.begin(prompt, reused)           a new generation starts; `reused` prompt tokens kept their state
    Drafter.observe(hidden, accepted_len)   target hidden states of the last forward (MTP heads feed on them)

`Draft.probs` is the distribution each draft token was sampled from ([k, vocab]); None means the drafter is
deterministic (q is one-hot on the proposed token), which is what the copy drafter and greedy MTP are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from decoding.mtp import MTPHeads


@dataclass
class Draft:
    tokens: list[int]
    probs: torch.Tensor | None = None  # [len(tokens), vocab] or None (one-hot q)
    source: str = ""  # name of the drafter that produced it, for per-drafter stats


@dataclass
class HiddenStates:
    """Last-layer hidden states of the target for the tokens of one forward, before and after the final norm."""

    pre_norm: torch.Tensor  # [T, H]
    post_norm: torch.Tensor  # [T, H]


class Drafter:
    name = "drafter"
    needs_hidden = False  # True: the generator captures the target's last hidden states and calls observe()

    def begin(self, prompt_ids: list[int], reused: int) -> None:
        """A generation starts on `prompt_ids`; the first `reused` tokens are the ones the previous generation
        already had in the target's KV cache (their observed hidden states stay valid)."""

    def observe(self, hidden: HiddenStates, accepted_len: int) -> None:
        """Hidden states of the last target forward; only the first `accepted_len` positions were kept."""

    def propose(self, tokens: list[int], k: int) -> Draft:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# Copy drafter: prompt lookup / suffix decoding over source files and the context itself.


class CopyDrafter(Drafter):
    """Finds the longest suffix of the context that also occurs in a source (the files being edited, the
    prompt, the text generated so far) and proposes what followed it there.

    An index maps every `min_match`-gram to the positions where it ends; a lookup takes the occurrences of
    the context's last `min_match` tokens and extends each match backwards (up to `max_match`) to rank them.
    The context itself is indexed incrementally as it grows.
    """

    name = "copy"
    max_candidates = 64  # most recent occurrences of a frequent n-gram that are extended and ranked

    def __init__(self, source_token_ids: list[list[int]] = (), min_match: int = 2, max_match: int = 64):
        if min_match < 1:
            raise ValueError(f"min_match must be >= 1, got {min_match}")
        self.min_match = min_match
        self.max_match = max(max_match, min_match)
        self.sources: list[list[int]] = [list(s) for s in source_token_ids]
        # n-gram -> [(source index, end position)]; source index len(self.sources) is the live context
        self._static_index: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
        for source_idx, source in enumerate(self.sources):
            self._index_range(self._static_index, source_idx, source, 0, len(source))
        self._context: list[int] = []
        self._context_index: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)

    def _index_range(self, index, source_idx: int, seq: list[int], start: int, stop: int) -> None:
        # Register every n-gram ending at positions [start, stop) (end exclusive: seq[end - n:end]).
        n = self.min_match
        for end in range(max(start, n), stop + 1):
            index[tuple(seq[end - n:end])].append((source_idx, end))

    def begin(self, prompt_ids: list[int], reused: int) -> None:
        self._context = []
        self._context_index = defaultdict(list)

    def _sync_context(self, tokens: list[int]) -> None:
        # The context only grows between calls of one generation; anything else means start over.
        known = len(self._context)
        if tokens[:known] != self._context:
            self._context, self._context_index, known = [], defaultdict(list), 0
        self._context = list(tokens)
        # Index n-grams ending up to len - 1 so the context's own suffix (ending at len) never matches itself.
        self._index_range(self._context_index, len(self.sources), self._context, known, len(tokens) - 1)

    def _sequence(self, source_idx: int) -> list[int]:
        return self._context if source_idx == len(self.sources) else self.sources[source_idx]

    def lookup(self, tokens: list[int], k: int) -> tuple[int, list[int]]:
        """(match length, up to k continuation tokens) of the best suffix match; (0, []) if none."""
        self._sync_context(tokens)
        if k <= 0 or len(tokens) < self.min_match:
            return 0, []
        key = tuple(tokens[-self.min_match:])
        candidates = self._static_index.get(key, [])[-self.max_candidates:]
        candidates += self._context_index.get(key, [])[-self.max_candidates:]
        best_len, best = 0, []
        for source_idx, end in candidates:
            seq = self._sequence(source_idx)
            continuation = seq[end:end + k]
            if not continuation:
                continue
            length = self.min_match
            limit = min(self.max_match, end, len(tokens))
            while length < limit and seq[end - length - 1] == tokens[-length - 1]:
                length += 1
            # Longer match wins; on a tie the later candidate (most recent context) wins.
            if length >= best_len:
                best_len, best = length, continuation
        return best_len, best

    def propose(self, tokens: list[int], k: int) -> Draft:
        _, continuation = self.lookup(tokens, k)
        return Draft(continuation, None, self.name)


# ---------------------------------------------------------------------------------------------------------------
# MTP drafter: the model's own multi-token-prediction heads.


class MTPDrafter(Drafter):
    """Drafts with MTP heads (see `decoding.mtp`). The heads pair the target's hidden state at position t
    with the token at t + 1 and predict t + 2; their own KV cache holds every such pair whose hidden state
    came from the target, and is cropped back to that after each proposal.

    temperature 0: greedy drafts (q one-hot, `Draft.probs` None); > 0: sampled drafts with their q.
    min_confidence: drafts end where the heads' own probability of the whole draft falls below it
    (`MTPHeads.draft`); 0 drafts exactly k tokens.
    """

    name = "mtp"
    needs_hidden = True

    def __init__(self, heads: MTPHeads, temperature: float = 0.0, seed: int | None = None,
                 min_confidence: float = 0.0):
        self.heads = heads
        self.temperature = temperature
        self.min_confidence = min_confidence
        self._rng = torch.Generator().manual_seed(seed) if seed is not None else None
        self._hidden: list[torch.Tensor] = []  # target hidden states of positions 0..n-1, in chunks of [T, H]
        self._hidden_len = 0
        self._state = heads.new_state()

    def begin(self, prompt_ids: list[int], reused: int) -> None:
        kept: list[torch.Tensor] = []
        length = 0
        for chunk in self._hidden:
            take = min(len(chunk), reused - length)
            if take <= 0:
                break
            kept.append(chunk[:take])
            length += take
        self._hidden, self._hidden_len = kept, length
        # Pair t needs the hidden state of t and the token t + 1, both inside the reused prefix.
        self._state.truncate(max(0, length - 1))

    def observe(self, hidden: HiddenStates, accepted_len: int) -> None:
        chosen = hidden.post_norm if self.heads.hidden_norm == "post" else hidden.pre_norm
        self._hidden.append(chosen[:accepted_len].detach())
        self._hidden_len += accepted_len

    def _pending_hidden(self, start: int) -> torch.Tensor:
        # Hidden states of positions [start, self._hidden_len) as one [T, H] tensor.
        flat = torch.cat(self._hidden, dim=0) if len(self._hidden) > 1 else self._hidden[0]
        self._hidden = [flat]
        return flat[start:]

    def propose(self, tokens: list[int], k: int) -> Draft:
        if self._hidden_len >= len(tokens):
            raise ValueError(f"hidden states for {self._hidden_len} positions but only {len(tokens)} tokens: "
                             "the last token's hidden state cannot be known before it is fed")
        if k <= 0 or self._hidden_len == 0:
            return Draft([], None, self.name)
        if self._state.last_block_out is None and self._state.length > 0:
            self._state.truncate(self._state.length - 1)  # re-run the last pair to get its output back
        synced = self._state.length
        # Pairs (h_t, x_{t+1}) for t in [synced, hidden_len): all of them have a target hidden state.
        if synced < self._hidden_len:
            self.heads.extend(self._state, self._pending_hidden(synced), tokens[synced + 1:self._hidden_len + 1])
        # Tokens after the last pair's token (e.g. grammar-forced ones) are fed with the heads' own hidden
        # state, then k tokens are drafted; all of these speculative pairs are cropped afterwards.
        known_tail = tokens[self._hidden_len + 1:]
        drafted, probs = self.heads.draft(self._state, known_tail, k, self.temperature, self._rng,
                                          self.min_confidence)
        return Draft(drafted, probs, self.name)


class CombinedDrafter(Drafter):
    """MTP drafts, replaced by the copy draft when the copy match is at least `copy_min_len` tokens long
    (a verbatim match predicts more, and further, than a learned head; the length was chosen with
    `edit bench decode`, docs/BENCHMARKS.md). Where the heads draft nothing (their confidence cut),
    a shorter copy match still gets its draft: the copy drafter alone would have proposed it."""

    name = "combined"

    def __init__(self, mtp: MTPDrafter, copy: CopyDrafter, copy_min_len: int = 3):
        self.mtp = mtp
        self.copy = copy
        self.copy_min_len = copy_min_len
        self.needs_hidden = mtp.needs_hidden

    def begin(self, prompt_ids: list[int], reused: int) -> None:
        self.mtp.begin(prompt_ids, reused)
        self.copy.begin(prompt_ids, reused)

    def observe(self, hidden: HiddenStates, accepted_len: int) -> None:
        self.mtp.observe(hidden, accepted_len)

    def propose(self, tokens: list[int], k: int) -> Draft:
        match_len, continuation = self.copy.lookup(tokens, k)
        if match_len >= self.copy_min_len and continuation:
            return Draft(continuation, None, self.copy.name)
        draft = self.mtp.propose(tokens, k)
        return draft if draft.tokens or not continuation else Draft(continuation, None, self.copy.name)
