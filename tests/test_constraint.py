"""Grammar-constrained decoding: decoding/constraint.py and the document-aware grammars."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

import grammars
from bench.grammar import sample_document, stdlib_tokenizer
from decoding.constraint import ConstraintError, GrammarConstraint, apply_mask, tokenizer_for
from grammars import GrammarError, document_grammar, document_lines, narrow

WORDS = ["alpha", "alphabet", "beta", "gamma ray"]
# A finite language, so that the tokens allowed after any prefix can be listed by brute force.
WORDS_GRAMMAR = "start: item{1,3}\nitem: WORD \"\\n\"\nWORD: " + " | ".join(
    json.dumps(word) for word in WORDS) + "\n"
WORDS_LANGUAGE = {"".join(f"{word}\n" for word in words)
                  for n in (1, 2, 3) for words in itertools.product(WORDS, repeat=n)}

DEF_GRAMMAR = 'start: "def " NAME "(x):\\n    return x\\n"\nNAME: /[a-z]+/\n'

# A diff-like format with the markers of the convention in grammars/__init__.py.
HUNKS_GRAMMAR = r"""
start: "--- " PATH "\n" hunk+
hunk: "@@\n" line+
line: " " DOC_LINE "\n" | "-" DOC_LINE "\n" | "+" NEW_LINE "\n"
PATH: /[^\n]+/
DOC_LINE: /[^\n]*/
NEW_LINE: /[a-z =()]*/
"""
DOCUMENT = ('print("a \\"quoted\\" line")\n'
            "\n"
            "\tpath = 'C:\\\\temp'  # tab, backslashes\n"
            "x = 'caf\u00e9 \u2713 \U0001f600'\n"
            "cr\rinside\n"
            "def f(x):\n"
            "    return x\n"
            "    return x\n")


@pytest.fixture(scope="module")
def hf_tokenizer():
    return stdlib_tokenizer(8192)


@pytest.fixture(scope="module")
def llg(hf_tokenizer):
    return tokenizer_for(hf_tokenizer)


def allowed(constraint: GrammarConstraint) -> set[int]:
    return set(torch.nonzero(constraint.mask()).flatten().tolist())


def hunks_regex(lines: list[str], paths: list[str]) -> re.Pattern:
    """The language of HUNKS_GRAMMAR narrowed to `lines` and `paths`."""
    doc_line = "|".join(map(re.escape, lines))
    path = "|".join(map(re.escape, paths))
    return re.compile(rf"--- (?:{path})\n(?:@@\n(?:[ -](?:{doc_line})\n|\+[a-z =()]*\n)+)+")


def test_tokenizer_wrapper_is_built_once(hf_tokenizer, llg):
    assert tokenizer_for(hf_tokenizer) is llg
    assert llg.eos_tokens == [hf_tokenizer.eos_token_id]
    assert tokenizer_for(hf_tokenizer, eos_token_ids=[1, 2]).eos_tokens == [1, 2]


def test_mask_allows_exactly_the_next_tokens_of_the_grammar(llg):
    token_bytes = [llg.decode_bytes([t]) for t in range(llg.vocab_size)]
    language = {s.encode() for s in WORDS_LANGUAGE}
    prefixes = {s[:i] for s in language for i in range(len(s) + 1)}
    for target in ["alphabet\n", "gamma ray\nalpha\nbeta\n", "alpha\nalpha\n"]:
        constraint = GrammarConstraint(llg, WORDS_GRAMMAR)
        prefix = b""
        for token in llg.tokenize_str(target):
            forced = constraint.matcher.compute_ff_bytes()
            expected = {t for t, piece in enumerate(token_bytes)
                        if piece and t != llg.eos_token and prefix + piece in prefixes}
            if prefix in language or prefix + b"\n" in language:  # an EOS may stand for a last newline
                expected.add(llg.eos_token)
            if forced:  # llguidance then allows only the canonical first token of the forced bytes
                assert allowed(constraint) <= expected and allowed(constraint)
            else:
                assert allowed(constraint) == expected, (prefix, target)
            assert token in expected
            constraint.consume([token])
            prefix += token_bytes[token]


def test_forced_tokens_then_end(llg):
    constraint = GrammarConstraint(llg, DEF_GRAMMAR)
    assert llg.decode_str(constraint.forced_tokens()) == "def"  # " " may start " foo"
    constraint.consume(llg.tokenize_str("def foo("))
    forced = constraint.forced_tokens()
    assert llg.decode_str(forced) == "x):\n    return x\n"
    assert allowed(constraint) == {forced[0]}
    constraint.consume(forced[:-1])
    before_last = constraint.mask()
    constraint.consume(forced[-1:])
    assert constraint.is_finished()
    assert constraint.forced_tokens() == []
    assert allowed(constraint) == {llg.eos_token}
    constraint.consume([llg.eos_token])
    assert constraint.is_finished()
    with pytest.raises(ConstraintError, match="not allowed"):
        constraint.consume(llg.tokenize_str("x"))
    constraint.rollback(1)  # the EOS: still at the grammar's end
    assert constraint.is_finished() and allowed(constraint) == {llg.eos_token}
    constraint.rollback(1)
    assert not constraint.is_finished() and torch.equal(constraint.mask(), before_last)


def test_open_grammar_ends_on_eos_only_when_accepting(llg):
    constraint = GrammarConstraint(llg, 'start: "a" /[a-z]*/ "."\n')
    constraint.consume(llg.tokenize_str("abc"))
    assert llg.eos_token not in allowed(constraint)
    with pytest.raises(ConstraintError, match="not allowed"):
        constraint.consume([llg.eos_token])
    constraint.consume(llg.tokenize_str("."))
    assert constraint.is_finished()  # nothing can follow "."
    constraint = GrammarConstraint(llg, 'start: /[a-z]+/\n')
    constraint.consume(llg.tokenize_str("abc"))
    assert not constraint.is_finished() and llg.eos_token in allowed(constraint)
    constraint.consume([llg.eos_token])
    assert constraint.is_finished() and allowed(constraint) == {llg.eos_token}


def test_refused_token_leaves_the_state_unchanged(llg):
    constraint = GrammarConstraint(llg, WORDS_GRAMMAR)
    constraint.consume(llg.tokenize_str("beta\n"))
    before = constraint.mask()
    with pytest.raises(ConstraintError, match=r"is not allowed after 'beta\\nal'"):
        constraint.consume(llg.tokenize_str("al") + llg.tokenize_str("x"))
    assert torch.equal(constraint.mask(), before)
    constraint.consume(llg.tokenize_str("gamma ray\n"))


def test_rollback_restores_masks(llg, hf_tokenizer):
    lines = document_lines(DOCUMENT)
    grammar = narrow(HUNKS_GRAMMAR, document=DOCUMENT, paths=["a.py"])
    text = "--- a.py\n@@\n" + "".join(f" {line}\n" for line in lines) + "+y = f(x)\n"
    tokens = hf_tokenizer.encode(text) + [llg.eos_token]
    constraint = GrammarConstraint(llg, grammar)
    masks = []
    for token in tokens:
        masks.append(constraint.mask())
        constraint.consume([token])
    assert constraint.is_finished()
    for n in [1, 3, 2, len(tokens) - 6]:  # EOS first, then chunks back to the start
        constraint.rollback(n)
        del masks[len(masks) - n + 1:]
        assert torch.equal(constraint.mask(), masks.pop())
        assert not constraint.is_finished()
    assert not masks
    with pytest.raises(ConstraintError, match="cannot roll back 1 tokens: 0 consumed"):
        constraint.rollback(1)
    constraint.consume(tokens)  # the state after rollback takes the same text again
    assert constraint.is_finished()


def test_valid_prefix_len_stops_at_the_first_invalid_token(llg):
    constraint = GrammarConstraint(llg, WORDS_GRAMMAR)
    good = llg.tokenize_str("alpha\nbeta\n")
    assert constraint.valid_prefix_len(good) == len(good)
    assert constraint.valid_prefix_len(good + [llg.eos_token] + good) == len(good) + 1
    assert constraint.valid_prefix_len(good + llg.tokenize_str("delta\n")) == len(good)
    word = llg.tokenize_str("alphabet")
    assert constraint.valid_prefix_len(word + llg.tokenize_str("a\n")) == len(word)
    constraint.consume(good)
    three = llg.tokenize_str("gamma ray\n")
    assert constraint.valid_prefix_len(three + llg.tokenize_str("alpha\n")) == len(three)
    assert constraint.valid_prefix_len([]) == 0


def test_token_check_cuts_tokens(llg):
    checked = []

    def no_bad(text: str) -> bool:
        checked.append(text)
        return "bad" not in text

    grammar = 'start: /[a-z ]+/ "!"\n'
    constraint = GrammarConstraint(llg, grammar, token_check=no_bad)
    constraint.consume(llg.tokenize_str("a ba"))
    assert checked == []  # consume follows the grammar alone; the generator asks token_ok
    assert constraint.token_ok(llg.tokenize_str("r")[0]) and checked == ["a bar"]
    assert not constraint.token_ok(llg.tokenize_str("d")[0])
    assert constraint.token_ok(llg.eos_token)

    draft = llg.tokenize_str("ook a bad!")
    cut = GrammarConstraint(llg, grammar, token_check=no_bad).valid_prefix_len(draft)
    assert GrammarConstraint(llg, grammar).valid_prefix_len(draft) == len(draft)
    assert "bad" not in llg.decode_str(draft[:cut]) and "bad" in llg.decode_str(draft[:cut + 1])

    forced = GrammarConstraint(llg, 'start: "a bad end"\n', token_check=no_bad).forced_tokens()
    unchecked = GrammarConstraint(llg, 'start: "a bad end"\n').forced_tokens()
    assert llg.decode_str(unchecked) == "a bad end"
    assert forced == unchecked[:len(forced)] and "bad" not in llg.decode_str(forced)
    assert "bad" in llg.decode_str(unchecked[:len(forced) + 1])


def test_an_eos_stands_for_a_last_newline_where_one_would_end_the_grammar(llg):
    # A chat model ends its turn without its answer's last newline; a line grammar wants one.
    eos = llg.eos_token
    constraint = GrammarConstraint(llg, 'start: LINE+\nLINE: /[a-z]+/ "\\n"\n')
    assert not constraint.mask()[eos]  # nothing written: a newline alone does not end it
    constraint.consume(llg.tokenize_str("abc"))
    before = constraint.mask()
    assert before[eos] and constraint.valid_prefix_len([eos]) == 1
    constraint.consume([eos])
    assert constraint.is_finished() and constraint.mask().nonzero().flatten().tolist() == [eos]
    constraint.rollback(1)  # the newline the EOS stood for goes with it
    assert not constraint.is_finished() and torch.equal(constraint.mask(), before)
    constraint.consume(llg.tokenize_str("\nab"))
    assert constraint.mask()[eos]
    constraint.consume(llg.tokenize_str("\n"))
    assert constraint.mask()[eos]  # the grammar's own end
    two_lines = GrammarConstraint(llg, 'start: LINE LINE\nLINE: /[a-z]+/ "\\n"\n')
    two_lines.consume(llg.tokenize_str("abc"))
    assert not two_lines.mask()[eos] and two_lines.valid_prefix_len([eos]) == 0  # a newline would not end it


def test_greedy_decoding_under_the_constraint_yields_the_grammar(llg):
    lines = document_lines(DOCUMENT)
    language = hunks_regex(lines, ["a.py", "b/c.py"])
    grammar = narrow(HUNKS_GRAMMAR, document=DOCUMENT, paths=["a.py", "b/c.py"])
    newline = llg.tokenize_str("\n")[0]
    line_starts = [llg.tokenize_str(sign)[0] for sign in "-+@"]  # else " " wins most line starts
    texts = []
    for seed in range(8):
        constraint = GrammarConstraint(llg, grammar)
        generator = torch.Generator().manual_seed(seed)
        tokens: list[int] = []
        while not constraint.is_finished():
            assert len(tokens) < 400, "the walk did not end"
            forced = constraint.forced_tokens()
            if forced:
                constraint.consume(forced)
                tokens += forced
                continue
            logits = torch.randn(llg.vocab_size, generator=generator)
            logits[line_starts] += 4.0 * torch.rand(3, generator=generator)
            if len(tokens) > 40:  # wind down: end lines and the edit when the grammar allows it
                logits[[newline, llg.eos_token]] += 100.0
            token = int(apply_mask(logits, constraint.mask()).argmax())
            constraint.consume([token])
            tokens.append(token)
        text = llg.decode_str([t for t in tokens if t != llg.eos_token])
        assert language.fullmatch(text) or language.fullmatch(text + "\n"), text  # EOS for a last newline
        texts.append(text)
    walked = "".join(texts)
    assert "\n-" in walked and "\n+" in walked and walked.count("@@") > len(texts)


def test_doc_line_allows_only_the_documents_lines(llg):
    grammar = narrow(HUNKS_GRAMMAR, document=DOCUMENT, paths=["a.py"])
    for line in document_lines(DOCUMENT):
        for sign in " -":
            constraint = GrammarConstraint(llg, grammar)
            tokens = llg.tokenize_str(f"--- a.py\n@@\n{sign}{line}\n+\n")
            assert constraint.valid_prefix_len(tokens) == len(tokens), repr(line)
    for missing in ["    return y", "def f(x)", "print('a')", "x = 1", "\tpath"]:
        constraint = GrammarConstraint(llg, grammar)
        constraint.consume(llg.tokenize_str("--- a.py\n@@\n "))
        tokens = llg.tokenize_str(f"{missing}\n")
        accepted = constraint.valid_prefix_len(tokens)
        assert accepted < len(tokens)
        constraint.consume(tokens[:accepted])
        assert tokens[accepted] not in allowed(constraint), repr(missing)
    constraint = GrammarConstraint(llg, grammar)
    tokens = llg.tokenize_str("--- b.py\n")
    assert constraint.valid_prefix_len(tokens) < len(tokens)


def test_document_lines():
    assert document_lines("a\r\nb\n\nb\r\nc") == ["a", "b", "", "c"]
    assert document_lines("a\rb\n") == ["a\rb"]
    assert document_lines("x\n\n") == ["x", ""]
    assert document_lines("") == []


def test_narrow_replaces_each_marker_line():
    grammar = ('start: PATH ":" LANGUAGE DOC_LINE\n'
               'PATH: /[^\\n]+/\nLANGUAGE: /[a-z]+/\nDOC_LINE: /.*/\n')
    narrowed = narrow(grammar, document='q"\\\n\t\n', paths=["a b.py", "a b.py"], language="rust")
    assert narrowed.splitlines()[1:] == [
        'PATH: "a b.py"', 'LANGUAGE: "rust"', 'DOC_LINE: "q\\"\\\\" | "\\t"']
    assert narrow(grammar, document="").endswith(f"DOC_LINE: {grammars.NOTHING}\n")
    assert narrow(grammar) == grammar


def test_empty_document_allows_no_context_line(llg):
    constraint = GrammarConstraint(llg, narrow(HUNKS_GRAMMAR, document="", paths=["a.py"]))
    constraint.consume(llg.tokenize_str("--- a.py\n@@\n"))
    # llguidance lets the sign through (the lexeme " " ends there), never a line after it
    pieces = {llg.decode_str([t]) for t in allowed(constraint)}
    assert {piece for piece in pieces if piece[0] in " -"} == {" ", "-"} and "+" in pieces
    constraint.consume(llg.tokenize_str(" "))
    with pytest.raises(ConstraintError,
                       match=r"grammar mask failed after \d+ tokens, '--- a.py\\n@@\\n ': NoExt"):
        constraint.mask()


def test_marker_convention_errors():
    with pytest.raises(GrammarError, match="lark: expected one line starting with 'DOC_LINE:', "
                                           "found 0"):
        narrow('start: "a"\n', document="x\n", source="grammars/x.lark")
    two_lines = 'start: PATH\nPATH: /a/\n    | /b/\n'
    with pytest.raises(GrammarError, match="line 2: the definition of PATH goes on over the next"):
        narrow(two_lines, paths=["a"])


def test_mask_is_padded_to_the_logits_width(llg):
    constraint = GrammarConstraint(llg, WORDS_GRAMMAR, vocab_size=llg.vocab_size + 77)
    mask = constraint.mask()
    assert mask.shape == (llg.vocab_size + 77,) and mask.dtype == torch.bool
    assert not mask[llg.vocab_size:].any() and mask.any()
    logits = apply_mask(torch.zeros(2, llg.vocab_size + 77), mask)
    assert torch.equal(torch.isfinite(logits), mask.expand(2, -1))
    assert apply_mask(logits, None) is logits
    with pytest.raises(ConstraintError, match="smaller than the tokenizer's vocabulary"):
        GrammarConstraint(llg, WORDS_GRAMMAR, vocab_size=llg.vocab_size - 1)


def test_masks_returned_are_not_overwritten(llg):
    constraint = GrammarConstraint(llg, WORDS_GRAMMAR)
    first = constraint.mask()
    kept = first.clone()
    constraint.consume(llg.tokenize_str("beta\n"))
    constraint.mask()
    assert torch.equal(first, kept)


def test_bad_grammar_is_a_clear_error(llg):
    with pytest.raises(ConstraintError, match="grammar does not compile"):
        GrammarConstraint(llg, "start: undefined_rule\n")


FORMATS = sorted(p.stem for p in Path(grammars.__file__).parent.glob("*.lark"))


@pytest.mark.parametrize("format", FORMATS)
def test_format_grammar_compiles_and_narrows(llg, format):
    present = grammars.markers(format)
    document = sample_document(300)
    narrowed = document_grammar(
        format,
        document=document if "DOC_LINE" in present else None,
        paths=["src/a.py"] if "PATH" in present else None,
        language="python" if "LANGUAGE" in present else None)
    assert allowed(GrammarConstraint(llg, grammars.load(format)))
    assert allowed(GrammarConstraint(llg, narrowed))
    definitions = {name: re.search(rf"^{name}:.*$", narrowed, re.MULTILINE).group()
                   for name in present}
    if "PATH" in present:
        assert definitions["PATH"] == 'PATH: "src/a.py"'
    if "LANGUAGE" in present:
        assert definitions["LANGUAGE"] == 'LANGUAGE: "python"'
    if "DOC_LINE" in present:
        assert definitions["DOC_LINE"].count(" | ") == len(document_lines(document)) - 1
    for name, argument in [("DOC_LINE", "document"), ("PATH", "paths"), ("LANGUAGE", "language")]:
        if name not in present:
            with pytest.raises(GrammarError, match=f"'{name}:', found 0"):
                document_grammar(format, **{argument: ["x"] if argument == "paths" else "x"})


EDITS = {  # an edit of the document's first two lines in each format that quotes document lines
    "udiff": "--- a/src/a.py\n+++ b/src/a.py\n@@ -1,2 +1,2 @@\n {0}\n-{1}\n+changed\n",
    "apply_patch": "*** Begin Patch\n*** Update File: src/a.py\n@@\n {0}\n-{1}\n+changed\n"
                   "*** End Patch\n",
}


@pytest.mark.parametrize("format", sorted(set(EDITS) & set(FORMATS)))
def test_format_grammar_quotes_only_document_lines(llg, format):
    document = sample_document(300)
    first, second = document_lines(document)[:2]
    grammar = document_grammar(format, document=document, paths=["src/a.py"])
    edit = llg.tokenize_str(EDITS[format].format(first, second)) + [llg.eos_token]
    assert GrammarConstraint(llg, grammar).valid_prefix_len(edit) == len(edit)
    for forged in [EDITS[format].format(first + " ", second),
                   EDITS[format].format(first, "not a line of the document"),
                   EDITS[format].replace("src/a.py", "src/b.py").format(first, second)]:
        tokens = llg.tokenize_str(forged)
        constraint = GrammarConstraint(llg, grammar)
        accepted = constraint.valid_prefix_len(tokens)
        assert accepted < len(tokens), forged
        constraint.consume(tokens[:accepted])
        assert tokens[accepted] not in allowed(constraint)


def test_a_patch_of_a_long_file_is_not_refused_by_the_parsers_row_limit():
    """A hunk may start at any of the file's lines, one Earley item (or two) each: past ~650 lines that broke
    llguidance's default cap of 2,000 items in a row, and an apply_patch edit of a long file failed."""
    from decoding.constraint import grammar_admits

    document = "".join(f"value_{i} = {i}\n" for i in range(grammars.CONTIGUOUS_MAX_LINES))
    grammar = grammars.document_grammar("apply_patch", document=document, paths=["long.py"])
    patch = ("*** Begin Patch\n*** Update File: long.py\n@@\n value_10 = 10\n-value_11 = 11\n+value_11 = 0\n"
             "@@\n value_998 = 998\n-value_999 = 999\n*** End Patch\n")
    assert grammar_admits(grammar, patch)
    assert not grammar_admits(grammar, patch.replace("value_998 = 998", "value_10 = 10"))
    # Longer, a hunk may quote any line (the narrowing stops where llguidance's recursion would overflow).
    longer = document + "".join(f"value_{i} = {i}\n" for i in range(1000, 6000))
    grammar = grammars.document_grammar("apply_patch", document=longer, paths=["long.py"])
    assert grammar_admits(grammar, patch.replace("@@\n value_998 = 998\n-value_999 = 999", "@@\n value_5999 = 5999"))


def test_apply_patch_hunks_quote_contiguous_runs_in_file_order():
    """Narrowed to a document, an apply_patch hunk's context and removed lines must be consecutive
    lines of the file, each hunk past the one before: such a hunk always applies. A hunk of context alone may end (the applier says the
    edit changes nothing), and its added lines cannot be mistyped markers."""
    document = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n"
    grammar = grammars.document_grammar("apply_patch", document=document, paths=["shapes.py"])
    tokenizer = stdlib_tokenizer(2000)
    llg = tokenizer_for(tokenizer)
    head = "*** Begin Patch\n*** Update File: shapes.py\n@@\n"

    def accepted(body: str, grammar: str = grammar) -> bool:
        ids = tokenizer.encode(head + body + "*** End Patch\n", add_special_tokens=False)
        return GrammarConstraint(llg, grammar).valid_prefix_len(ids) == len(ids)

    assert accepted(" \n \n-def area(r):\n+def circle_area(r):\n     return math.pi * r * r\n")
    assert accepted("+# header\n import math\n")
    assert not accepted(" import math\n-def area(r):\n")  # skips two lines of the file
    assert accepted(" \n \n def area(r):\n")  # changes nothing: the model may stop
    assert accepted(" \n \n def area(r):\n+++ End Patch\n")  # free text, as grammars/apply_patch.lark has it
    code = grammars.document_grammar("apply_patch", document=document, paths=["shapes.py"], code=True)
    assert not accepted(" \n \n def area(r):\n+++ End Patch\n", code)
    assert not accepted(" \n \n def area(r):\n+*** End Patch\n", code)
    assert accepted(" \n \n def area(r):\n+    return r ** 2 + 1\n", code)
    assert not accepted("-    return math.pi * r * r\n-import math\n")  # out of order
    # Each hunk starts past the one before it, where the applier looks for it; the 1.5B model copied a
    # whole function as context in one hunk after another.
    assert accepted(" import math\n+import cmath\n@@\n def area(r):\n-    return math.pi * r * r\n+    return 0\n")
    assert not accepted(" def area(r):\n     return math.pi * r * r\n@@\n def area(r):\n")
    assert not accepted(" def area(r):\n+    pass\n@@\n import math\n")
    assert accepted("+# added at the end\n@@\n import math\n-\n")  # added lines alone keep the position
