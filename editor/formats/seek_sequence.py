"""Where a block of patch lines sits in a file: codex's `seek_sequence`, pass for pass.

A patch written by a model copies context lines from the file, but not always byte for byte: it may
drop trailing spaces, re-indent, or type ASCII `-` and `"` where the file has a typographic dash or
quote. `seek_sequence` therefore tries four comparisons in turn, each over the whole search range
before the next, looser one is tried:

1. exact;
2. ignoring trailing whitespace;
3. ignoring leading and trailing whitespace;
4. that, after mapping Unicode dashes, quotes and odd spaces to ASCII (`normalise`).

So an exact occurrence anywhere in range always wins over a fuzzy one earlier in the file.

"Whitespace" is Rust's (the Unicode White_Space property), not Python's `str.strip()` default,
which also strips the ASCII separators U+001C..U+001F; `trim` and `trim_end` keep the two in step.
"""

from __future__ import annotations

from typing import Callable, Sequence

# Unicode White_Space, which Rust's str::trim strips.
RUST_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def trim(text: str) -> str:
    """Rust's `str::trim`."""
    return text.strip(RUST_WHITESPACE)


def trim_end(text: str) -> str:
    """Rust's `str::trim_end`."""
    return text.rstrip(RUST_WHITESPACE)


# codex's list: typographic characters a model tends to retype as ASCII.
_ASCII_FOR = str.maketrans({
    # dashes and hyphens
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-",
    # single quotes
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    # double quotes
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    # no-break and other fixed-width spaces
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2004": " ", "\u2005": " ", "\u2006": " ",
    "\u2007": " ", "\u2008": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u205f": " ",
    "\u3000": " ",
})


def normalise(text: str) -> str:
    """`text` trimmed, with typographic dashes, quotes and spaces replaced by their ASCII forms."""
    return trim(text).translate(_ASCII_FOR)


def _identity(text: str) -> str:
    return text


# The passes, strictest first: each maps a line to the key it is compared by.
PASSES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("exact", _identity),
    ("trailing whitespace ignored", trim_end),
    ("surrounding whitespace ignored", trim),
    ("Unicode punctuation normalised", normalise),
)


def seek_sequence(lines: Sequence[str], pattern: Sequence[str], start: int,
                  eof: bool) -> int | None:
    """The index in `lines` where `pattern` begins, searching from `start`; None if nowhere.

    `eof`: the pattern should end the file, so only the last possible position is tried (codex
    makes this its search start, which leaves just that one position). An empty pattern matches at
    `start`; a pattern longer than the file matches nowhere.
    """
    found = seek_sequence_pass(lines, pattern, start, eof)
    return None if found is None else found[0]


def seek_sequence_pass(lines: Sequence[str], pattern: Sequence[str], start: int,
                       eof: bool) -> tuple[int, str] | None:
    """Like `seek_sequence`, also naming the pass that matched (for messages and tests)."""
    if not pattern:
        return start, "exact"
    if len(pattern) > len(lines):
        return None
    last = len(lines) - len(pattern)
    first = last if eof else start
    for name, key in PASSES:
        wanted = [key(line) for line in pattern]
        for i in range(first, last + 1):
            # The first line is checked alone first: a cheap filter for long files.
            if key(lines[i]) == wanted[0] and all(
                    key(lines[i + k]) == wanted[k] for k in range(1, len(pattern))):
                return i, name
    return None
