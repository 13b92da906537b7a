"""Copy drafter (suffix match over sources and the context) and the combined MTP + copy drafter."""

from __future__ import annotations

import random
import time

import pytest

from decoding.drafters import CombinedDrafter, CopyDrafter, Draft, Drafter, HiddenStates


def test_proposes_what_followed_the_longest_suffix_match():
    drafter = CopyDrafter([[1, 2, 3, 4, 5, 6], [9, 2, 3, 7, 8]])
    drafter.begin([], 0)
    assert drafter.lookup([0, 9, 2, 3], 4) == (3, [7, 8])  # "9 2 3" beats "2 3" of the first source
    assert drafter.lookup([0, 1, 2, 3], 2) == (3, [4, 5])
    assert drafter.propose([0, 1, 2, 3], 2) == Draft([4, 5], None, "copy")


def test_matches_the_context_itself_but_not_its_own_suffix():
    drafter = CopyDrafter([])
    drafter.begin([], 0)
    assert drafter.lookup([1, 2, 3, 4, 1, 2], 4) == (2, [3, 4, 1, 2])
    assert drafter.lookup([5, 6, 7], 4) == (0, [])  # the suffix "6 7" occurs only as the suffix itself


def test_respects_min_match_and_k():
    drafter = CopyDrafter([[1, 2, 3, 4]], min_match=3)
    drafter.begin([], 0)
    assert drafter.lookup([9, 2, 3], 4) == (0, [])  # "2 3" is shorter than min_match
    assert drafter.lookup([1, 2, 3], 1) == (3, [4])
    assert drafter.lookup([1, 2, 3], 0) == (0, [])
    with pytest.raises(ValueError, match="min_match"):
        CopyDrafter([], min_match=0)


def brute_force_match_len(sources, context, min_match, max_match):
    """Longest suffix of the context (min_match..max_match) that occurs somewhere with a token after it."""
    def occurs(seq, suffix):
        return any(seq[i:i + len(suffix)] == suffix for i in range(len(seq) - len(suffix)))

    lengths = range(min_match, min(max_match, len(context)) + 1)
    return max((n for n in lengths if any(occurs(seq, context[-n:]) for seq in [*sources, context])), default=0)


def test_incremental_index_agrees_with_brute_force():
    rng = random.Random(0)
    sources = [[rng.randrange(5) for _ in range(120)] for _ in range(2)]
    drafter = CopyDrafter(sources, min_match=2, max_match=12)
    drafter.begin([], 0)
    context = [rng.randrange(5) for _ in range(10)]
    for _ in range(60):
        length, continuation = drafter.lookup(context, 4)
        assert length == brute_force_match_len(sources, context, 2, 12), context
        assert (length == 0) == (continuation == [])
        context.append(rng.randrange(5))
    # a context that is not an extension of the previous one is re-indexed from scratch
    assert drafter.lookup([4, 4, 4, 4], 2)[0] == brute_force_match_len(sources, [4, 4, 4, 4], 2, 12)


def test_large_source_is_fast():
    rng = random.Random(1)
    source = [rng.randrange(5000) for _ in range(200_000)]
    started = time.perf_counter()
    drafter = CopyDrafter([source], min_match=2)
    drafter.begin([], 0)
    context = source[1000:1040]
    for i in range(200):
        assert drafter.lookup(context + source[1040:1040 + i], 8)[1] == source[1040 + i:1048 + i]
    assert time.perf_counter() - started < 10.0


class FakeMTP(Drafter):
    name = "mtp"
    needs_hidden = True

    def __init__(self):
        self.observed = 0
        self.begun = None

    def begin(self, prompt_ids, reused):
        self.begun = (len(prompt_ids), reused)

    def observe(self, hidden, accepted_len):
        self.observed += accepted_len

    def propose(self, tokens, k):
        return Draft([0] * k if tokens[-1] != 0 else [], None, self.name)  # nothing after a 0: a confidence cut


def test_combined_drafter_prefers_long_copy_matches():
    mtp = FakeMTP()
    combined = CombinedDrafter(mtp, CopyDrafter([[1, 2, 3, 4, 5, 6, 7, 8]]), copy_min_len=3)
    assert combined.needs_hidden
    combined.begin([1, 2], 0)
    combined.observe(HiddenStates(None, None), 2)
    assert mtp.begun == (2, 0) and mtp.observed == 2
    assert combined.propose([9, 2, 3, 4], 3) == Draft([5, 6, 7], None, "copy")  # match of 3
    assert combined.propose([9, 9, 3, 4], 3) == Draft([0, 0, 0], None, "mtp")  # match of 2 only
    # The heads propose nothing: the short copy match drafts, and with no match at all nothing does.
    assert combined.propose([9, 9, 3, 4, 5, 0], 3) == Draft([], None, "mtp")
    mtp_silent = CombinedDrafter(mtp, CopyDrafter([[1, 2, 3, 4, 0, 6, 7, 8]]), copy_min_len=3)
    assert mtp_silent.propose([9, 9, 4, 0], 2) == Draft([6, 7], None, "copy")
