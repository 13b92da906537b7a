"""Unified diffs of any size in about linear time, for showing what an edit changed.

difflib alone is quadratic when a change is spread over a large file (10,000 hunks: minutes), so
lines that occur once in each text anchor the diff first (patience diff), and difflib only matches
the stretches between anchors; a stretch too large for it is shown as replaced outright.
"""

from __future__ import annotations

import bisect
import difflib
from collections import Counter

# difflib costs about len(a) * len(b) steps on a stretch; past this it is shown as replaced.
STRETCH_LIMIT = 1_000_000


def unified_diff(old: str, new: str, a: str = "a", b: str = "b", context: int = 3) -> str:
    """A unified diff that marks a missing final newline the way GNU diff does."""
    old_lines, new_lines = old.splitlines(True), new.splitlines(True)
    out: list[str] = []
    for group in _Matcher(old_lines, new_lines).get_grouped_opcodes(context):
        if not out:
            out += [f"--- {a}\n", f"+++ {b}\n"]
        out.append(f"@@ -{_range(group[0][1], group[-1][2])} +{_range(group[0][3], group[-1][4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            lines = [" " + line for line in old_lines[i1:i2]] if tag == "equal" else (
                ["-" + line for line in old_lines[i1:i2]] + ["+" + line for line in new_lines[j1:j2]])
            for line in lines:
                out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _range(start: int, stop: int) -> str:
    """A hunk header's `start,length` (1-based; an empty range names the line before it)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


class _Matcher(difflib.SequenceMatcher):
    """difflib's opcodes and grouping over matching blocks found as the module docstring says."""

    def __init__(self, a: list[str], b: list[str]):
        super().__init__(None, a, b)
        self._blocks: list[difflib.Match] | None = None

    def get_matching_blocks(self) -> list[difflib.Match]:
        if self._blocks is None:
            self._blocks = _matching_blocks(self.a, self.b)
        return self._blocks


def _matching_blocks(a: list[str], b: list[str]) -> list[difflib.Match]:
    pairs: list[tuple[int, int]] = []  # (i, j): a[i] == b[j], in order of both i and j
    start_a = start_b = 0
    for i, j in _anchors(a, b) + [(len(a), len(b))]:
        pairs += _stretch_pairs(a, b, start_a, i, start_b, j)
        pairs.append((i, j))
        start_a, start_b = i + 1, j + 1
    pairs.pop()  # the end sentinel
    blocks: list[list[int]] = []
    for i, j in pairs:
        if blocks and blocks[-1][0] + blocks[-1][2] == i and blocks[-1][1] + blocks[-1][2] == j:
            blocks[-1][2] += 1
        else:
            blocks.append([i, j, 1])
    return [difflib.Match(*block) for block in blocks] + [difflib.Match(len(a), len(b), 0)]


def _anchors(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """The longest run, in order in both, of lines that occur exactly once in each."""
    count_a, count_b = Counter(a), Counter(b)
    in_b = {line: j for j, line in enumerate(b) if count_b[line] == 1}
    pairs = [(i, in_b[line]) for i, line in enumerate(a) if count_a[line] == 1 and line in in_b]
    # Longest increasing subsequence of the j's (patience sorting, with links back).
    tops: list[int] = []  # tops[k]: the smallest j ending an increasing run of length k + 1
    ends: list[int] = []  # ends[k]: the index in pairs of that j
    back = [-1] * len(pairs)
    for index, (_, j) in enumerate(pairs):
        k = bisect.bisect_left(tops, j)
        if k == len(tops):
            tops.append(j)
            ends.append(index)
        else:
            tops[k], ends[k] = j, index
        back[index] = ends[k - 1] if k else -1
    run = []
    index = ends[-1] if ends else -1
    while index != -1:
        run.append(pairs[index])
        index = back[index]
    return run[::-1]


def _stretch_pairs(a: list[str], b: list[str], lo_a: int, hi_a: int, lo_b: int,
                   hi_b: int) -> list[tuple[int, int]]:
    """Equal lines of a[lo_a:hi_a] and b[lo_b:hi_b]: the common start and end, and in between
    what difflib matches when the rest is small enough."""
    head = []
    while lo_a < hi_a and lo_b < hi_b and a[lo_a] == b[lo_b]:
        head.append((lo_a, lo_b))
        lo_a, lo_b = lo_a + 1, lo_b + 1
    tail = []
    while lo_a < hi_a and lo_b < hi_b and a[hi_a - 1] == b[hi_b - 1]:
        hi_a, hi_b = hi_a - 1, hi_b - 1
        tail.append((hi_a, hi_b))
    middle = []
    if (hi_a - lo_a) * (hi_b - lo_b) <= STRETCH_LIMIT:
        matcher = difflib.SequenceMatcher(None, a[lo_a:hi_a], b[lo_b:hi_b])
        middle = [(lo_a + i + k, lo_b + j + k) for i, j, n in matcher.get_matching_blocks()
                  for k in range(n)]
    return head + middle + tail[::-1]
