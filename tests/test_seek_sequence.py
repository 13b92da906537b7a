"""The matching cascade of codex's seek_sequence: strictest pass first, over the whole range."""

from editor.formats.seek_sequence import (normalise, seek_sequence, seek_sequence_pass, trim,
                                          trim_end)


def test_exact_match_is_found_from_start():
    lines = ["a", "b", "c", "b", "c"]
    assert seek_sequence(lines, ["b", "c"], 0, False) == 1
    assert seek_sequence(lines, ["b", "c"], 2, False) == 3
    assert seek_sequence(lines, ["b", "c"], 4, False) is None


def test_trailing_whitespace_is_ignored_second():
    lines = ["x = 1   ", "y = 2\t"]
    assert seek_sequence_pass(lines, ["x = 1", "y = 2"], 0, False) == (0, "trailing whitespace ignored")


def test_leading_whitespace_is_ignored_third():
    lines = ["def f():", "        return 1  "]
    assert seek_sequence_pass(lines, ["return 1"], 0, False) == (1, "surrounding whitespace ignored")


def test_unicode_punctuation_is_normalised_last():
    lines = ["x = \u201cquoted\u201d \u2014 it\u2019s\u00a0here"]
    assert seek_sequence_pass(lines, ['x = "quoted" - it\'s here'], 0, False) == (
        0, "Unicode punctuation normalised")
    # and the other way round: a patch that typed the typographic forms
    assert seek_sequence(["a - b"], ["a \u2013 b"], 0, False) == 0


def test_every_dash_quote_and_space_of_codex_list():
    dashes = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
    singles = "\u2018\u2019\u201a\u201b"
    doubles = "\u201c\u201d\u201e\u201f"
    spaces = "\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
    assert normalise("x" + dashes + singles + doubles + spaces + "x") == (
        "x" + "-" * 7 + "'" * 4 + '"' * 4 + " " * 13 + "x")
    # characters outside the list are left alone
    assert normalise("\u2026 \u00b4") == "\u2026 \u00b4"


def test_an_exact_match_later_beats_a_fuzzy_match_earlier():
    lines = ["  foo", "foo"]
    assert seek_sequence(lines, ["foo"], 0, False) == 1


def test_eof_tries_only_the_last_position():
    lines = ["a", "b", "a", "b"]
    assert seek_sequence(lines, ["a", "b"], 0, True) == 2
    assert seek_sequence(["a", "b", "c"], ["a", "b"], 0, True) is None
    # a fuzzy match at the end still counts
    assert seek_sequence(["a", "b  "], ["b"], 0, True) == 1


def test_empty_pattern_matches_at_start():
    assert seek_sequence(["a"], [], 1, False) == 1
    assert seek_sequence([], [], 0, True) == 0


def test_pattern_longer_than_file_matches_nowhere():
    assert seek_sequence(["one"], ["one", "two"], 0, False) is None


def test_start_past_the_last_position_matches_nowhere():
    assert seek_sequence(["a", "b"], ["b"], 2, False) is None


def test_whitespace_is_rusts_not_pythons():
    # U+001F is whitespace to Python's str.strip but not to Rust's str::trim.
    assert trim("\x1fx\x1f") == "\x1fx\x1f"
    assert trim("\u3000x\u2028") == "x"
    assert trim_end("  x \t") == "  x"
    assert seek_sequence(["\x1fx"], ["x"], 0, False) is None
