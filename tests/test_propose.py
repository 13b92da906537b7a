"""`Editor` and `edit FILE INSTRUCTION` end to end on tiny models built here."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editor import formats, prompting
from decoding.constraint import grammar_admits
from decoding.generate import Generation, Stats
from editor.request import format_grammar
from editor.propose import (BRANCH_MAX_GAP, RETRY_TEMPERATURE, Editor, branch_points, choose_format, complete_hunks,
                            loop_points)
from tests.tiny_models import chat_model, chat_tokenizer, teach

SOURCE = """import math


def area(radius):
    return math.pi * radius * radius


print(area(2.0))
"""
INSTRUCTION = "Rename area to circle_area."
PATCH = """*** Begin Patch
*** Update File: shapes.py
@@
 
 
-def area(radius):
+def circle_area(radius):
     return math.pi * radius * radius
 
 
-print(area(2.0))
+print(circle_area(2.0))
*** End Patch"""
EXPECTED = SOURCE.replace("area(", "circle_area(")


@pytest.fixture(scope="module")
def taught():
    """A tiny model that learned to answer the rename request with PATCH."""
    tokenizer = chat_tokenizer(SOURCE + PATCH)
    model = chat_model(tokenizer)
    chat = prompting.messages("apply_patch", path="shapes.py", text=SOURCE, instruction=INSTRUCTION,
                              language="python")
    teach(model, tokenizer, chat, PATCH)
    return model, tokenizer


@pytest.fixture(scope="module")
def untaught():
    tokenizer = chat_tokenizer(SOURCE)
    return chat_model(tokenizer, seed=1), tokenizer


def test_taught_model_makes_the_edit_with_and_without_speculation(taught):
    model, tokenizer = taught
    results = {}
    for spec in (False, True):
        editor = Editor(model_obj=model, tokenizer=tokenizer, spec=spec, max_new_tokens=200)
        results[spec] = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    plain, fast = results[False], results[True]
    assert plain.ok and plain.new_text == EXPECTED, plain.diagnostics
    assert "-def area(radius):" in plain.diff and "+def circle_area(radius):" in plain.diff
    # Lossless: speculation changes the speed, never the output.
    assert fast.edit_text == plain.edit_text
    assert fast.stats["accepted_per_drafter"].get("copy", 0) > 0
    assert fast.stats["model_calls"] < plain.stats["model_calls"]


BLOCK_EDIT = """*** Replace: def area(radius):
def circle_area(radius):
    return math.pi * radius * radius
*** Replace: print(area(2.0))
print(circle_area(2.0))
*** End"""


def test_taught_model_writes_a_block_edit_under_the_files_units_grammar():
    tokenizer = chat_tokenizer(SOURCE + BLOCK_EDIT)
    model = chat_model(tokenizer)
    chat = prompting.messages("block", path="shapes.py", text=SOURCE, instruction=INSTRUCTION, language="python")
    teach(model, tokenizer, chat, BLOCK_EDIT)
    result = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=120).edit(
        SOURCE, INSTRUCTION, format="block", path="shapes.py")
    assert result.ok and result.new_text == EXPECTED, result.diagnostics
    assert result.stats["accepted_per_drafter"].get("copy", 0) > 0  # the unit's body is copied from the file


def test_injected_failure_is_fed_back_and_retried(taught):
    model, tokenizer = taught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200, max_retries=1)
    seen = []

    def reject_first(new_text):
        seen.append(new_text)
        return "injected failure" if len(seen) == 1 else None

    first_prompt = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200).edit(
        SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py").stats["prompt_tokens"]
    result = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py", check=reject_first)
    assert seen[0] == EXPECTED and result.stats["attempts"] == 2
    assert result.diagnostics[0]["message"] == "injected failure"
    # The second try's prompt carries the rejected edit and the error.
    assert result.stats["prompt_tokens"] > 2 * first_prompt


@pytest.mark.parametrize("temperature, expected", [(0.0, [(0.0, 0), (RETRY_TEMPERATURE, 1), (RETRY_TEMPERATURE, 2)]),
                                                  (0.3, [(0.3, 0), (0.3, 1), (0.3, 2)])])
def test_a_greedy_editor_samples_its_retries_seeded(taught, temperature, expected):
    """Greedy decoding of a retry prompt mostly wrote the rejected answer again: retries sample, each try
    with its own seed, so that the same request still gives the same edit."""
    model, tokenizer = taught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200, max_retries=2, temperature=temperature)
    tries = []
    generate = editor.backend.generator.generate
    editor.backend.generator.generate = lambda *args, **kwargs: (
        tries.append((kwargs["temperature"], kwargs["seed"])) or generate(*args, **kwargs))
    first = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py", check=lambda text: "wrong")
    assert tries == expected
    again = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py", check=lambda text: "wrong")
    assert [d["message"] for d in again.diagnostics] == [d["message"] for d in first.diagnostics]
    assert again.edit_text == first.edit_text


def test_every_try_is_reported_when_all_fail(taught):
    model, tokenizer = taught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200, max_retries=2)
    result = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py",
                         check=lambda text: "still wrong")
    assert not result.ok and result.new_text is None and result.changes == []
    assert [d["attempt"] for d in result.diagnostics] == [1, 2, 3]


@pytest.mark.parametrize("fmt", ["apply_patch", "udiff", "ot", "rule"])
def test_untaught_model_output_always_fits_the_grammar(untaught, fmt):
    """Whatever a random model writes under the grammar is well-formed: it parses, or it was cut off
    by max_new_tokens. Rejections are reported, never raised."""
    model, tokenizer = untaught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=60, max_retries=0, temperature=1.0)
    for seed in range(3):
        editor.seed = seed
        result = editor.edit(SOURCE, INSTRUCTION, format=fmt, path="shapes.py")
        assert result.stats["attempts"] == 1
        if result.stats["output_tokens"] < 60:  # finished by the grammar, not cut off
            formats.get(fmt).parse(result.edit_text)
        for problem in result.diagnostics:
            assert problem["message"]


def test_copy_sources_quote_the_file_as_line_formats_do():
    from decoding.drafters import CopyDrafter
    from editor.request import copy_sources

    text = "def f(x):\n    y = x + 1\n\n    return y\n"
    assert copy_sources("whole", text) == [text]
    assert copy_sources("apply_patch", text) == [text, " def f(x):\n     y = x + 1\n \n     return y\n",
                                                 "-def f(x):\n-    y = x + 1\n-\n-    return y\n"]
    # Character tokens: after a quoted context line, the plain file drafts the next line unquoted (rejected
    # at its first token); the quoted file drafts it as the patch goes on.
    def draft(sources):
        drafter = CopyDrafter([[ord(c) for c in source] for source in sources], min_match=3)
        return "".join(map(chr, drafter.propose([ord(c) for c in "@@\n def f(x):\n"], 10).tokens))

    assert draft(copy_sources("whole", text)) == "    y = x "
    assert draft(copy_sources("apply_patch", text)) == "     y = x"


def test_output_budget_follows_the_file_and_the_format():
    from editor.request import STRUCTURED_MARGIN, STRUCTURED_MAX_QUOTE, output_budget

    tokenizer = chat_tokenizer(SOURCE)
    size = len(tokenizer.encode(SOURCE, add_special_tokens=False))
    assert output_budget(tokenizer, "apply_patch", SOURCE) == 2 * size + STRUCTURED_MARGIN
    assert size * 1.25 < output_budget(tokenizer, "whole", SOURCE) <= size * 1.25 + 128
    long_file, longer_file = SOURCE * 100, SOURCE * 200
    assert output_budget(tokenizer, "ot", long_file) == output_budget(tokenizer, "ot", longer_file) \
        == 2 * STRUCTURED_MAX_QUOTE + STRUCTURED_MARGIN  # an edit of a long file does not grow with it
    assert output_budget(tokenizer, "whole", longer_file) > output_budget(tokenizer, "whole", long_file) + 90 * size
    assert output_budget(tokenizer, "whole", long_file, max_new_tokens=50) == 50


LONG_SOURCE = SOURCE + "".join(f"\n\ndef f{i}(x):\n    return x + {i}\n" for i in range(12))


@pytest.fixture(scope="module")
def looping():
    """A tiny model taught to answer with one line over and over: 30 times (~270 tokens), past the repetition guard's
    window (192), so that the guard stops it even where it learned where to stop (12 times did, with one tokenizer)."""
    tokenizer = chat_tokenizer(LONG_SOURCE + "print(area(2.0))\n")
    model = chat_model(tokenizer)
    chat = prompting.messages("whole", path="shapes.py", text=LONG_SOURCE, instruction=INSTRUCTION, language="python")
    teach(model, tokenizer, chat, "print(area(2.0))\n" * 30, steps=60)
    return model, tokenizer


@pytest.mark.parametrize("max_new_tokens, message", [(None, "stopped: the output repeats itself"),
                                                     (40, "output budget of 40 tokens reached")])
def test_a_runaway_try_is_stopped_and_the_model_told_why(looping, monkeypatch, max_new_tokens, message):
    model, tokenizer = looping
    fed_back = []
    messages = prompting.messages
    monkeypatch.setattr(prompting, "messages",
                        lambda *args, **kwargs: fed_back.append(list(kwargs["feedback"])) or messages(*args, **kwargs))
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_retries=1, max_new_tokens=max_new_tokens)
    result = editor.edit(LONG_SOURCE, INSTRUCTION, format="whole", path="shapes.py")
    first = result.diagnostics[0]
    assert first["error"] == "StoppedError" and first["message"].startswith(message)
    assert result.stats["output_tokens"] < 2 * 320  # two tries, each stopped well before the whole budget
    assert fed_back[0] == [] and fed_back[1][0][1] == f"shapes.py: {first['message']}"


class ScriptedModel:
    """A local backend that answers from a script: `answers[prefix]` is (text, tokens, runner_ups[, finish reason])
    for a call with that prefix (() for a first try). Records the prefixes it was called with."""

    local, eos_token_ids, vocab_size = True, {0}, None

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.prefixes = tokenizer, answers, []

    def generate(self, request, *, temperature, seed, on_progress, prefix=()):
        self.prefixes.append(tuple(prefix))
        text, tokens, runner_ups, *finish = self.answers[tuple(prefix)]
        return text, Generation(tokens, Stats(new_tokens=len(tokens)), finish[0] if finish else "eos", runner_ups)


def unchanged_whole_answer(tokenizer, sure_of_all_but: dict[int, tuple[float, int]], source: str = SOURCE):
    """A whole rewrite whose new text is `source` (by default SOURCE: it changes nothing), sure of every token
    (gap 9) but those given."""
    text = "```\n" + source + "```"
    tokens = tokenizer.encode(text, add_special_tokens=False)
    return text, tokens, [sure_of_all_but.get(i, (9.0, 5)) for i in range(len(tokens))]


def test_branch_points_are_close_runners_up_inside_a_begun_line(taught):
    _, tokenizer = taught
    _, tokens, _ = unchanged_whole_answer(tokenizer, {})
    pieces = [tokenizer.decode([t]) for t in tokens]
    starts = [i for i in range(1, len(tokens)) if pieces[i - 1].endswith("\n") and pieces[i].strip()]
    inside = [i for i in range(1, len(tokens)) if "math" in "".join(pieces[:i]).rsplit("\n", 1)[-1]]
    star, other = tokenizer.encode("radius", add_special_tokens=False)[0], tokenizer.encode("x", add_special_tokens=False)[0]
    generation = Generation(tokens, Stats(), "eos", [(9.0, None)] * len(tokens))
    generation.runner_ups[starts[2]] = (0.1, other)  # the surest runner-up, but at a line's start
    generation.runner_ups[inside[0]] = (1.5, star)
    generation.runner_ups[inside[1]] = (0.5, star)
    generation.runner_ups[inside[2]] = (BRANCH_MAX_GAP + 0.1, star)  # too far below the chosen token
    generation.runner_ups[inside[3]] = (0.2, 0)  # the end of turn
    spaced = [i for i in inside if pieces[i] == " radius"][-1]
    generation.runner_ups[spaced] = (0.05, star)  # "radius" for " radius": other spacing only
    assert branch_points(generation, tokenizer, {0}) == [(inside[1], star), (inside[0], star)]


UNCHANGED_PATCH = """*** Begin Patch
*** Update File: shapes.py
@@
 def area(radius):
     return math.pi * radius * radius
*** End Patch"""


def test_a_line_edit_that_changes_nothing_branches_at_a_hunk_line_marker(taught):
    """apply_patch and udiff: the grammar fixes a context line's text, so the choice the answer missed is a hunk
    line's marker: '-' or '+' for ' '. Never a header line's, nor for a rewrite."""
    model, tokenizer = taught
    # Each line encoded on its own (a real model's tokenizer splits at line ends; this tiny one may not).
    lines = [tokenizer.encode(line, add_special_tokens=False) for line in UNCHANGED_PATCH.split("\n")]
    newline = tokenizer.encode("\n", add_special_tokens=False)
    tokens = [t for line in lines[:-1] for t in line + newline] + lines[-1]
    pieces = [tokenizer.decode([t]) for t in tokens]
    starts = [i for i in range(1, len(tokens)) if pieces[i - 1] == "\n"]
    hunk_starts = starts[2:4]  # " def area(radius):" and "     return ..."
    minus, plus, star = (tokenizer.encode(c, add_special_tokens=False)[0] for c in ("-", "+", "x"))
    runner_ups = [(9.0, None)] * len(tokens)
    runner_ups[starts[0]] = (0.1, minus)  # the "*** Update File" line: not a hunk line
    runner_ups[hunk_starts[0]] = (1.0, minus)
    runner_ups[hunk_starts[1]] = (0.5, plus)
    generation = Generation(tokens, Stats(), "eos", runner_ups)
    assert all(pieces[i].startswith(" ") for i in hunk_starts)
    assert branch_points(generation, tokenizer, {0}, markers=" ") == [(hunk_starts[1], plus), (hunk_starts[0], minus)]
    assert branch_points(generation, tokenizer, {0}) == []
    runner_ups[hunk_starts[1]] = (0.5, star)  # a marker is '-' or '+'
    assert branch_points(generation, tokenizer, {0}, markers=" ") == [(hunk_starts[0], minus)]
    # The Editor: a patch that changes nothing, decoded again from the '-' runner-up, renames area.
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, {(): (UNCHANGED_PATCH, tokens, runner_ups),
                                               (*tokens[:hunk_starts[0]], minus): (PATCH, [], [])})
    result = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert result.ok and result.new_text == EXPECTED and result.stats["branches"] == 1


BROKEN_PATCH = """*** Begin Patch
*** Update File: shapes.py
@@
-def area(radius):
     return math.pi * radius * radius
*** End Patch"""


def patch_tokens(tokenizer, patch: str) -> tuple[list[int], list[int]]:
    """(tokens of `patch`, each line encoded on its own; the positions where its lines start)."""
    lines = [tokenizer.encode(line, add_special_tokens=False) for line in patch.split("\n")]
    newline = tokenizer.encode("\n", add_special_tokens=False)
    tokens = [t for line in lines[:-1] for t in line + newline] + lines[-1]
    pieces = [tokenizer.decode([t]) for t in tokens]
    return tokens, [i for i in range(1, len(tokens)) if pieces[i - 1] == "\n"]


def test_a_line_edit_that_breaks_the_code_branches_at_any_hunk_line_marker(taught):
    """A patch that removes a line it meant to keep (here the `def` line: the body is left unindented under
    nothing) adds a syntax error; its markers are branch points whichever marker the model chose."""
    model, tokenizer = taught
    tokens, starts = patch_tokens(tokenizer, BROKEN_PATCH)
    removed, kept = starts[2], starts[3]  # "-def area(radius):", "     return ..."
    minus, plus, space = (tokenizer.encode(c, add_special_tokens=False)[0] for c in ("-", "+", " "))
    runner_ups = [(9.0, None)] * len(tokens)
    runner_ups[removed] = (1.0, space)  # '-' chosen over ' '
    runner_ups[kept] = (0.5, minus)  # ' ' chosen over '-'
    generation = Generation(tokens, Stats(), "eos", runner_ups)
    assert branch_points(generation, tokenizer, {0}, markers=" -+") == [(kept, minus), (removed, space)]
    assert branch_points(generation, tokenizer, {0}, markers=" ") == [(kept, minus)]
    # The Editor: the syntax error is the rejection; the second point's branch is the rename.
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, {(): (BROKEN_PATCH, tokens, runner_ups),
                                               (*tokens[:kept], minus): (BROKEN_PATCH, [], []),
                                               (*tokens[:removed], space): (PATCH, [], [])})
    result = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert result.ok and result.new_text == EXPECTED and result.diagnostics == []
    assert result.stats["branches"] == 2 and result.stats["first_answer"] == "broke the code"


def test_an_answer_that_changes_nothing_is_decoded_again_from_its_least_sure_token(taught):
    model, tokenizer = taught
    text, tokens, _ = unchanged_whole_answer(tokenizer, {})
    inside = [i for i in range(1, len(tokens)) if "math.pi" in tokenizer.decode(tokens[:i]).rsplit("\n", 1)[-1]]
    spacing, star = tokenizer.encode("  ", add_special_tokens=False)[0], tokenizer.encode("x", add_special_tokens=False)[0]
    runner_ups = {inside[0]: (0.3, star), inside[1]: (0.6, star)}
    squared = SOURCE.replace("radius * radius", "radius ** 2")
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, {
        (): unchanged_whole_answer(tokenizer, runner_ups),
        # the least sure token's runner-up gives an answer that only spaces a line differently: no change either
        (*tokens[:inside[0]], star): ("```\n" + SOURCE.replace("pi * radius", "pi *  radius") + "```", [], []),
        (*tokens[:inside[1]], star): ("```\n" + squared + "```", [], []),
    })
    result = editor.edit(SOURCE, "Square radius with **.", format="whole", path="shapes.py")
    assert result.ok and result.new_text == squared and result.diagnostics == []
    assert editor.backend.prefixes == [(), (*tokens[:inside[0]], star), (*tokens[:inside[1]], star)]
    assert result.stats["attempts"] == 1 and result.stats["branches"] == 2
    # No branch accepted: the try's own failure is reported, and each branch was tried once.
    editor.backend = ScriptedModel(tokenizer, {(): unchanged_whole_answer(tokenizer, {inside[0]: (0.3, spacing)})})
    editor.backend.answers[(*tokens[:inside[0]], spacing)] = (text, [], [])
    result = editor.edit(SOURCE, "Square radius with **.", format="whole", path="shapes.py")
    assert not result.ok and [d["error"] for d in result.diagnostics] == ["NoChangeError"]
    assert editor.backend.prefixes == [(), (*tokens[:inside[0]], spacing)] and result.stats["branches"] == 1


UDIFF_HEAD = """--- a/shapes.py
+++ b/shapes.py
@@ -4,5 +4,5 @@
-def area(radius):
+def circle_area(radius):
     return math.pi * radius * radius
 
 
-print(area(2.0))
"""
LOOPED_LINE = "+print(circle_area(2.0))\n"


@pytest.mark.parametrize("ends_there", [True, False])
def test_an_answer_stopped_in_a_loop_is_decoded_again_where_the_loop_began(taught, ends_there):
    model, tokenizer = taught
    line = tokenizer.encode(LOOPED_LINE, add_special_tokens=False)
    head = tokenizer.encode(UDIFF_HEAD, add_special_tokens=False)
    tokens = head + line * 5
    second = len(head) + len(line)  # the loop's second copy
    other = tokenizer.encode("x", add_special_tokens=False)[0]
    runner_ups = [(9.0, other)] * len(tokens)
    runner_ups[second] = (1.0, 0 if ends_there else other)
    answers = {(): (UDIFF_HEAD + LOOPED_LINE * 5, tokens, runner_ups, "repetition")}
    if not ends_there:  # the model goes on from the runner-up
        answers[(*tokens[:second], other)] = (UDIFF_HEAD + LOOPED_LINE, [], [])
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, answers)
    result = editor.edit(SOURCE, INSTRUCTION, format="udiff", path="shapes.py")
    assert result.ok and result.new_text == EXPECTED and result.stats["branches"] == 1
    # An end of turn as the runner-up ends the answer after the first copy, with no decoding.
    assert editor.backend.prefixes == ([()] if ends_there else [(), (*tokens[:second], other)])
    assert result.answer.rstrip("\n").endswith("+print(circle_area(2.0))")


def test_an_answer_cut_off_at_its_budget_in_lines_that_count_is_decoded_again_at_the_second(taught):
    """Two copies and a cut third, numbers apart, are no loop to the repetition guard (three equal copies), but in
    an answer that ran to its budget they are one: it is decoded again where the second began."""
    model, tokenizer = taught
    head = tokenizer.encode(UDIFF_HEAD, add_special_tokens=False)
    lines = [tokenizer.encode(f"+print(circle_area({n}.0))\n", add_special_tokens=False) for n in (2, 3, 4)]
    assert len(lines[0]) >= 8
    tokens = head + lines[0] + lines[1] + lines[2][:4]
    second = len(head) + len(lines[0])
    other = tokenizer.encode("x", add_special_tokens=False)[0]
    runner_ups = [(9.0, other)] * len(tokens)
    runner_ups[second] = (1.0, 0)  # the end of turn: the first copy was all the answer needed
    assert loop_points(Generation(tokens, Stats(), "length", runner_ups), tokenizer) == [(second, 0)]
    assert loop_points(Generation(tokens, Stats(), "repetition", runner_ups), tokenizer) == []  # the guard's loop
    assert loop_points(Generation(head + lines[0] + lines[1][:4], Stats(), "length", runner_ups), tokenizer) == []
    counting = tokenizer.encode("+print(" + ", ".join(str(n) for n in range(10, 60)), add_special_tokens=False)
    assert loop_points(Generation(head + counting, Stats(), "length", [(1.0, other)] * 400), tokenizer) == []
    text = tokenizer.decode(tokens)
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=len(tokens))
    editor.backend = ScriptedModel(tokenizer, {(): (text, tokens, runner_ups, "length")})
    result = editor.edit(SOURCE, INSTRUCTION, format="udiff", path="shapes.py")
    assert result.ok and result.stats["branches"] == 1
    assert result.new_text == EXPECTED and result.answer.rstrip("\n").endswith("+print(circle_area(2.0))")


RAN_ON_UDIFF = UDIFF_HEAD + "+print(circle_area(2.0))\n@@ -9,0 +9,4 @@\n+def area(r):\n+    return 1\n+def area(r):\n+    re"


def test_a_line_edit_cut_off_keeps_its_complete_hunks(taught):
    """An answer that ran to its budget in a hunk of its own, past the change asked for, is taken without that
    hunk where it was not decoded again (no loop to branch at) and the hunks before it change the file."""
    assert complete_hunks("udiff", RAN_ON_UDIFF)[0] == UDIFF_HEAD + "+print(circle_area(2.0))\n"
    patch = PATCH.replace("*** End Patch", "@@\n print(circle_area(2.0))\n+def area(r):\n+    ret")
    assert complete_hunks("apply_patch", patch)[0] == PATCH + "\n"
    # one hunk, ending in the line that replaces a removed one: a cut would keep the removal alone
    assert complete_hunks("udiff", UDIFF_HEAD + "+print(circle") == []
    model, tokenizer = taught
    tokens = tokenizer.encode(RAN_ON_UDIFF, add_special_tokens=False)
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=len(tokens))
    editor.backend = ScriptedModel(tokenizer, {(): (RAN_ON_UDIFF, tokens, [(9.0, None)] * len(tokens), "length")})
    result = editor.edit(SOURCE, INSTRUCTION, format="udiff", path="shapes.py")
    assert result.ok and result.new_text == EXPECTED and result.stats["cut_to_complete_hunks"]
    assert result.answer.endswith("+print(circle_area(2.0))\n") and editor.backend.prefixes == [()]
    # Hunks that change nothing once the last is left out are no edit: the try's own failure stands.
    unchanged = "--- a/shapes.py\n+++ b/shapes.py\n@@ -4,1 +4,1 @@\n def area(radius):\n@@ -9,0 +9,1 @@\n+x = ["
    tokens = tokenizer.encode(unchanged, add_special_tokens=False)
    editor.backend = ScriptedModel(tokenizer, {(): (unchanged, tokens, [(9.0, None)] * len(tokens), "length")})
    result = editor.edit(SOURCE, INSTRUCTION, format="udiff", path="shapes.py")
    assert not result.ok and [d["error"] for d in result.diagnostics] == ["StoppedError"]
    assert not result.stats["cut_to_complete_hunks"]


def test_a_line_edit_cut_off_in_its_one_hunk_keeps_the_units_it_completed(taught):
    """One hunk that ran on adding a unit again and again (EditEval/165's n_longest, four times) is cut before the
    second copy; one that ran on in the last unit it began (a `__main__` block) before that unit. The scripted
    model's answer, cut off at its budget, goes through the Editor as the first copy alone."""
    head = "--- a/shapes.py\n+++ b/shapes.py\n@@ -8,0 +9,6 @@\n"
    unit = "+def circle_area(radius):\n+    return area(radius)\n+\n"
    looped = head + unit * 3 + "+def circle_area(rad"
    assert complete_hunks("udiff", looped) == [head + unit.removesuffix("+\n")]
    demo = head + unit + "+if __name__ == '__main__':\n+    print(circle_area(1.0))\n+    print(circ"
    assert complete_hunks("udiff", demo) == [head + unit.removesuffix("+\n")]
    patch = "*** Begin Patch\n*** Update File: shapes.py\n@@\n print(area(2.0))\n" + unit * 2
    assert complete_hunks("apply_patch", patch) == [patch.removesuffix(unit + unit) + unit.removesuffix("+\n")
                                                    + "*** End Patch\n"]
    assert complete_hunks("udiff", head + "+x = 1\n+y = 2\n+z = [") == [head + "+x = 1\n+y = 2\n"]
    assert complete_hunks("udiff", head + "+def f():\n+    return [1,\n+            2,") == []  # no unit past the first
    model, tokenizer = taught
    tokens = tokenizer.encode(looped, add_special_tokens=False)
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=len(tokens))
    editor.backend = ScriptedModel(tokenizer, {(): (looped, tokens, [(9.0, None)] * len(tokens), "length")})
    result = editor.edit(SOURCE, INSTRUCTION, format="udiff", path="shapes.py")
    assert result.ok and result.stats["cut_to_complete_hunks"]
    assert result.new_text == SOURCE + "def circle_area(radius):\n    return area(radius)\n"


def test_a_local_model_continues_an_answer_from_a_prefix(taught):
    """Continued from its own first tokens, a greedy answer is the same; from a runner-up, it starts with it and
    still fits the grammar (the constraint read the prefix first)."""
    model, tokenizer = taught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    request = lambda: editor._request("apply_patch", "shapes.py", SOURCE, INSTRUCTION, "python", [])  # noqa: E731
    text, whole = editor.backend.generate(request(), temperature=0.0, seed=0, on_progress=None)
    assert text == PATCH and len(whole.runner_ups) == len(whole.tokens)
    again, continued = editor.backend.generate(request(), temperature=0.0, seed=0, on_progress=None,
                                               prefix=whole.tokens[:20])
    assert again == text and continued.tokens == whole.tokens and continued.runner_ups[:20] == [(float("inf"), None)] * 20
    position = next(i for i in range(20, len(whole.tokens)) if whole.runner_ups[i][1] is not None)
    prefix = whole.tokens[:position] + [whole.runner_ups[position][1]]
    other, branch = editor.backend.generate(request(), temperature=0.0, seed=0, on_progress=None, prefix=prefix)
    assert branch.tokens[:len(prefix)] == prefix and other != text
    if branch.finish_reason in ("eos", "grammar"):  # a whole answer: one the grammar admits
        assert grammar_admits(format_grammar("apply_patch", "shapes.py", SOURCE, "python"), other)


@pytest.mark.parametrize("fmt", ["ot", "udiff", "block", "apply_patch"])
def test_an_edit_is_handed_out_in_any_format_whatever_the_model_wrote(taught, fmt):
    """`recast`: the change the model made in apply_patch, written in `fmt`; applied as `edit apply` would, it
    gives the same new file (OT with counts, as canonical OT is)."""
    model, tokenizer = taught
    result = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200).edit(
        SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert result.ok, result.diagnostics
    recast = result.recast(fmt)
    assert (recast.edit_format, recast.to_json()["format"], recast.to_json()["model_format"]) == (
        fmt, fmt, "apply_patch")
    new_text = Editor._apply(fmt, "shapes.py", SOURCE, recast.edit_text, "python")[1]
    assert new_text == EXPECTED
    assert (recast.diff, recast.new_text, recast.stats) == (result.diff, result.new_text, result.stats)
    if fmt == "ot":
        assert re.fullmatch(r"\[retain\(\d+\), .*\]", recast.edit_text) and "seek(" not in recast.edit_text


def test_an_edit_cannot_be_handed_out_as_a_rule_and_a_rejected_one_stays_as_it_is(taught):
    from editor.errors import ParseError

    model, tokenizer = taught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    result = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    with pytest.raises(ParseError, match="cannot hand an edit out as 'rule'"):
        result.recast("rule")
    rejected = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py",
                           check=lambda new_text: "injected failure")
    assert not rejected.ok and rejected.recast("ot") is rejected


def test_a_change_a_format_cannot_say_is_an_error_naming_the_file_once():
    from editor.errors import EditError
    from editor.propose import EditResult

    result = EditResult("notes.txt", "whole", "hello\n", None, "", "hello\n", "")
    with pytest.raises(EditError) as raised:
        result.recast("block")
    assert str(raised.value) == ("notes.txt: no block edit turns the old text into the new one "
                                 "(a change outside every unit)")
    assert result.recast("ot").edit_text == '[insert("hello\\n")]'


def test_choose_format():
    long_file = "x = 1\n" * 200
    assert choose_format("Replace all calls of print with logger.info", "python", long_file) == "rule"
    assert choose_format("Fix the off-by-one error in the loop", "python", long_file) == "excerpt"
    assert choose_format("Fix the off-by-one error in the loop", "python", SOURCE) == "whole"
    assert choose_format("Replace all uses of foo", None, long_file) == "excerpt"


def test_cli_never_writes_without_yes(taught, tmp_path, monkeypatch):
    from editor import cli
    from editor.commands import propose as propose_command

    model, tokenizer = taught
    target = tmp_path / "shapes.py"
    target.write_text(SOURCE)
    monkeypatch.setattr(propose_command, "make_editor",
                        lambda **options: Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200))
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["propose", str(target), INSTRUCTION, "--format", "apply_patch"])
    assert shown.exit_code == 0, shown.output
    assert "+def circle_area(radius):" in shown.output
    assert target.read_text() == SOURCE  # no --yes, no terminal to answer: nothing written
    as_json = runner.invoke(cli.app, ["propose", str(target), INSTRUCTION, "--format", "apply_patch", "--json"])
    assert json.loads(as_json.stdout)["ok"] is True
    assert target.read_text() == SOURCE
    as_ot = runner.invoke(cli.app, ["propose", str(target), INSTRUCTION, "--format", "apply_patch", "--as", "ot"])
    assert as_ot.exit_code == 0, as_ot.output
    assert as_ot.stdout.startswith("[retain(") and "+def circle_area" not in as_ot.stdout  # the OT, not the diff
    assert "apply_patch (handed out as ot): " in as_ot.output
    as_rule = runner.invoke(cli.app, ["propose", str(target), INSTRUCTION, "--as", "rule"])
    assert as_rule.exit_code == 2 and "--as rule: choose one of apply_patch, udiff, ot, block" in as_rule.output
    assert target.read_text() == SOURCE
    written = runner.invoke(cli.app, ["propose", str(target), INSTRUCTION, "--format", "apply_patch", "--yes"])
    assert written.exit_code == 0, written.output
    assert target.read_text() == EXPECTED


@pytest.fixture(scope="module")
def default_editor():
    from decoding.model_registry import REGISTRY, is_installed

    if not is_installed(REGISTRY["default"]):
        pytest.skip("the default model is not installed: run `edit model install default`")
    return Editor("default")


@pytest.mark.slow
def test_real_default_model_renames(default_editor):
    """The real default model makes a rename edit (needs `edit model install default`)."""
    result = default_editor.edit(SOURCE, "Rename the function area to circle_area, and its call.",
                                 path="shapes.py")
    assert result.ok, result.diagnostics
    assert result.new_text == EXPECTED


@pytest.mark.slow
def test_real_default_model_makes_the_readme_demo_edit(default_editor):
    """`make demo`'s edit: every print call of examples/report.py becomes logger.info."""
    demo = Path(__file__).resolve().parents[1] / "examples" / "report.py"
    result = default_editor.edit(demo, "Replace every print call with logger.info")
    assert result.ok and result.format == "rule", result.diagnostics
    assert result.new_text == demo.read_text().replace("print(", "logger.info(")


def test_mtp_drafter_lives_as_long_as_the_generator_cache(taught):
    """The generator keeps its KV cache between edits, so the MTP drafter (which holds the hidden
    states of that cached prefix) must be the same object from one edit to the next."""
    from decoding.mtp import MTPHeads

    model, tokenizer = taught
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=40,
                    mtp_heads=MTPHeads(model, "qwen3_5"))
    first = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    drafter = editor.mtp_drafter
    drafted_with = []
    generate = editor.backend.generator.generate
    editor.backend.generator.generate = lambda *args, **kwargs: drafted_with.append(kwargs["drafters"]) or generate(*args, **kwargs)
    second = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert editor.mtp_drafter is drafter
    assert drafted_with and drafted_with[0][0].mtp is drafter
    assert second.edit_text == first.edit_text


# --- the daemon that keeps the model loaded between `edit` calls (editor/daemon.py) ---------------------------


@pytest.fixture
def daemon_dir(monkeypatch):
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ed-"))  # short: a Unix socket's path has ~100 bytes
    monkeypatch.setenv("EDIT_DAEMON_DIR", str(folder))
    monkeypatch.delenv("EDIT_KEEP_ALIVE")
    yield folder
    for log in folder.glob("*.log"):  # stop what the test left running
        for pid in re.findall(r"daemon (\d+) serving", log.read_text()):
            if f"daemon {pid} exits" not in log.read_text():
                try:
                    os.kill(int(pid), 15)
                except ProcessLookupError:
                    pass
    shutil.rmtree(folder, ignore_errors=True)


def test_edit_hands_its_request_to_one_daemon_that_keeps_the_model_loaded(taught, tmp_path, daemon_dir):
    from editor import cli

    model, tokenizer = taught
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")  # (this tokenizer does not encode as before once reloaded)
    args = [INSTRUCTION, "--model", str(tmp_path / "model"), "--format", "apply_patch", "--quantize", "none",
            "--json"]
    answers = []
    for keep_alive in ("0", "60", "60"):  # in this process, then twice through the daemon
        target = tmp_path / f"{len(answers)}" / "shapes.py"
        target.parent.mkdir()
        target.write_text(SOURCE)
        result = CliRunner().invoke(cli.app, ["propose", str(target), *args, "--keep-alive", keep_alive])
        answer = json.loads(result.stdout)
        answers.append({key: answer[key] for key in ("ok", "format", "edit", "diff", "errors")})
        assert answer["stats"]["output_tokens"] > 0
        assert target.read_text() == SOURCE  # --json never writes
    assert answers[1] == answers[0] and answers[2] == answers[0]  # the daemon proposes what the CLI would
    (log,) = daemon_dir.glob("*.log")
    assert len(re.findall(r"daemon \d+ serving", log.read_text())) == 1  # loaded once for two edits
    (socket_file,) = daemon_dir.glob("*.sock")
    assert socket_file.stat().st_mode & 0o777 == 0o600
    unloaded = CliRunner().invoke(cli.app, ["model", "unload"])
    assert unloaded.exit_code == 0 and "stopped 1 edit daemon(s)" in unloaded.output
    assert re.search(r"daemon \d+ exits", log.read_text()) and not list(daemon_dir.glob("*.sock"))


def test_the_daemon_exits_after_its_keep_alive(tmp_path, daemon_dir):
    import time

    from editor import cli
    from tests.tiny_models import save_instant_model

    target = tmp_path / "a.py"
    target.write_text("x = 1\n")
    result = CliRunner().invoke(cli.app, ["propose", str(target), "Rename x.", "--model",
                                          str(save_instant_model(tmp_path / "model")), "--quantize", "none",
                                          "--keep-alive", "0.5", "--json"])
    assert "stats" in json.loads(result.stdout)  # answered by the daemon
    deadline = time.monotonic() + 20
    while list(daemon_dir.glob("*.sock")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(daemon_dir.glob("*.sock"))
    assert re.search(r"daemon \d+ exits", next(daemon_dir.glob("*.log")).read_text())


def test_a_model_the_daemon_cannot_load_is_a_usage_error(tmp_path, daemon_dir):
    from editor import cli

    target = tmp_path / "a.py"
    target.write_text("x = 1\n")
    result = CliRunner().invoke(cli.app, ["propose", str(target), "Rename x.", "--model", "70b"])
    assert result.exit_code == 2
    assert "unknown model '70b'" in result.output


def test_keep_alive_comes_from_the_option_the_environment_or_the_default(monkeypatch):
    from editor import daemon

    monkeypatch.delenv("EDIT_KEEP_ALIVE")
    assert daemon.keep_alive_seconds(None) == daemon.DEFAULT_KEEP_ALIVE
    monkeypatch.setenv("EDIT_KEEP_ALIVE", "12")
    assert daemon.keep_alive_seconds(None) == 12 and daemon.keep_alive_seconds(0) == 0
    monkeypatch.setenv("EDIT_KEEP_ALIVE", "soon")
    with pytest.raises(daemon.DaemonError, match="EDIT_KEEP_ALIVE='soon'"):
        daemon.keep_alive_seconds(None)


def test_the_daemon_folder_must_be_private(tmp_path, monkeypatch):
    from editor import daemon

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    monkeypatch.setenv("EDIT_DAEMON_DIR", str(folder))
    with pytest.raises(daemon.DaemonError, match="0700"):
        daemon.daemon_dir()


def test_one_daemon_per_set_of_options(daemon_dir):
    from editor import daemon

    options = {"model": None, "quantize": "auto", "threads": None}
    assert daemon.socket_path(options) == daemon.socket_path(dict(reversed(options.items())))
    assert daemon.socket_path(options) != daemon.socket_path({**options, "quantize": "none"})
    assert daemon.socket_path(options).parent == daemon_dir


def test_the_daemon_answers_its_first_edit_before_packing_float16(float32_whatever_the_cpu, monkeypatch):
    from decoding import cpu_linear
    from editor.daemon import first_load

    monkeypatch.setattr(cpu_linear, "has_float16_product", lambda: True)  # an AVX2 + F16C CPU without AMX
    options = {"model": "default", "quantize": "auto"}
    assert first_load(options) == ({"model": "default", "quantize": "none"}, "float16")
    assert first_load({**options, "quantize": "float16"}) == ({**options, "quantize": "float16"}, None)
    assert first_load({**options, "server": "http://127.0.0.1:8000"})[1] is None  # a server has its own weights
    monkeypatch.setattr(cpu_linear, "has_amx", lambda: True)  # bfloat16 either way: loaded at once
    assert first_load(options) == (options, None)


@pytest.mark.skipif(not __import__("decoding.cpu_linear").cpu_linear.float16_available(),
                    reason="this torch build has no fbgemm float16 product")
def test_requantize_edits_as_an_editor_loaded_with_those_weights(taught, monkeypatch):
    import copy

    from decoding import cpu_linear

    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 0)  # the tiny model's layers are all small: convert them all
    model, tokenizer = taught
    loaded_as_float16 = Editor(model_obj=cpu_linear.float16_weights(copy.deepcopy(model)), tokenizer=tokenizer)
    editor = Editor(model_obj=copy.deepcopy(model), tokenizer=tokenizer)
    in_float32 = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    prefix = list(editor.backend.generator._cache_tokens)
    editor.requantize("float16")
    assert isinstance(editor.backend.model.lm_head, cpu_linear.Float16Linear)
    generator = editor.backend.generator  # the last prompt's KV cache, computed again with float16 weights
    assert prefix and generator._cache_tokens == prefix and generator._cache.get_seq_length() == len(prefix)
    expected = loaded_as_float16.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    got = editor.edit(SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert (got.edit_text, got.new_text) == (expected.edit_text, expected.new_text)
    assert got.stats["output_tokens"] == expected.stats["output_tokens"]
    assert in_float32.ok and got.ok  # the taught answer survives the rounding


def test_the_summary_line_says_when_the_edit_is_a_branch():
    from editor.commands.propose import _branched

    assert _branched(0) == "" and _branched(3) == ""  # branches tried, none taken
    assert _branched(1, "changed nothing") == ", 1 branch from the least sure token (the first answer changed nothing)"
    assert _branched(2, "broke the code").startswith(", 2 branches")
    assert _branched(2, "ran on", cut=True) == ", the first answer cut to what it completed (it ran on unfinished)"


DOCUMENTED = 'import math\n\n\ndef area(radius):\n    """The area of a circle."""\n    return math.pi * radius\n'


def test_a_block_edit_that_only_leaves_out_a_docstring_changes_nothing_and_is_decoded_again(taught):
    """The 1.5B's block edits of HumanEvalFix items left the docstring out and kept the bug: with the docstring
    kept (editor/docstrings.py) such an edit changes nothing, and the runner-up's branch is taken, docstring kept."""
    model, tokenizer = taught
    head = "*** Replace: def area(radius):\ndef area(radius):\n"
    unchanged = head + "    return math.pi * radius\n*** End\n"
    tokens = tokenizer.encode(unchanged, add_special_tokens=False)
    inside = [i for i in range(1, len(tokens)) if "math.pi" in tokenizer.decode(tokens[:i]).rsplit("\n", 1)[-1]]
    star = tokenizer.encode("x", add_special_tokens=False)[0]
    runner_ups = [(9.0, None)] * len(tokens)
    runner_ups[inside[0]] = (0.5, star)
    fixed = head + "    return math.pi * radius ** 2\n*** End\n"
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, {(): (unchanged, tokens, runner_ups),
                                               (*tokens[:inside[0]], star): (fixed, [], [])})
    result = editor.edit(DOCUMENTED, "Fix bugs in area.", format="block", path="shapes.py")
    expected = DOCUMENTED.replace("radius\n", "radius ** 2\n")
    assert result.ok and result.new_text == expected and result.stats["branches"] == 1
    block = formats.get("block")
    assert block.apply_text(DOCUMENTED, result.edit, "shapes.py") == expected  # the edit handed out gives it
    assert block.parse(result.edit_text) == result.edit
    # Asked about the documentation, the answer is taken as written.
    editor.backend = ScriptedModel(tokenizer, {(): (unchanged, tokens, runner_ups)})
    result = editor.edit(DOCUMENTED, "Remove the docstring of area.", format="block", path="shapes.py")
    assert result.ok and result.new_text == DOCUMENTED.replace('    """The area of a circle."""\n', "")


def test_an_answer_that_only_changes_spacing_is_decoded_again_and_kept_where_no_branch_changes_more(taught):
    """The 1.5B's "fixes" of HumanEvalFix items that kept the bug and dropped a blank line: decoded again as an edit
    that changes nothing is; with no branch that changes more, the spacing edit stands ("Format this")."""
    model, tokenizer = taught
    spaced = SOURCE.replace("radius * radius", "radius*radius")
    _, tokens, _ = unchanged_whole_answer(tokenizer, {}, spaced)
    inside = [i for i in range(1, len(tokens)) if "math.pi" in tokenizer.decode(tokens[:i]).rsplit("\n", 1)[-1]]
    star = tokenizer.encode("x", add_special_tokens=False)[0]
    text, _, runner_ups = unchanged_whole_answer(tokenizer, {inside[0]: (0.5, star)}, spaced)
    squared = SOURCE.replace("radius * radius", "radius ** 2")
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, {(): (text, tokens, runner_ups),
                                               (*tokens[:inside[0]], star): ("```\n" + squared + "```", [], [])})
    result = editor.edit(SOURCE, "Fix bugs in area.", format="whole", path="shapes.py")
    assert result.ok and result.new_text == squared and result.stats["branches"] == 1
    assert result.stats["first_answer"] == "changed only spacing"
    editor.backend = ScriptedModel(tokenizer, {(): (text, tokens, runner_ups),
                                               (*tokens[:inside[0]], star): (text, [], [])})
    result = editor.edit(SOURCE, "Format area.", format="whole", path="shapes.py")
    assert result.ok and result.new_text == spaced and result.diagnostics == []
    assert result.stats["branches"] == 1 and result.stats["first_answer"] == ""


def test_an_answer_that_reads_a_name_the_file_defines_nowhere_is_rejected_and_decoded_again(taught):
    """The forgotten import (EditEval/20: `Tuple` with only `List, Any` imported) fails no syntax check; the Editor
    rejects it as it does a syntax error, naming the line, and the runner-up's branch is taken."""
    model, tokenizer = taught
    unimported = SOURCE.replace("math.pi * radius * radius", "pi * radius * radius")
    _, tokens, _ = unchanged_whole_answer(tokenizer, {}, unimported)
    inside = [i for i in range(1, len(tokens)) if "pi *" in tokenizer.decode(tokens[:i]).rsplit("\n", 1)[-1]]
    star = tokenizer.encode("x", add_special_tokens=False)[0]
    text, _, runner_ups = unchanged_whole_answer(tokenizer, {inside[0]: (0.5, star)}, unimported)
    squared = SOURCE.replace("radius * radius", "radius ** 2")
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=200)
    editor.backend = ScriptedModel(tokenizer, {(): (text, tokens, runner_ups),
                                               (*tokens[:inside[0]], star): ("```\n" + squared + "```", [], [])})
    result = editor.edit(SOURCE, "Square radius with **.", format="whole", path="shapes.py")
    assert result.ok and result.new_text == squared and result.stats["first_answer"] == "broke the code"
    editor.backend = ScriptedModel(tokenizer, {(): unchanged_whole_answer(tokenizer, {}, unimported)})
    result = editor.edit(SOURCE, "Square radius with **.", format="whole", path="shapes.py")
    line = unimported.split("\n").index("    return pi * radius * radius") + 1
    assert not result.ok and result.diagnostics[0]["error"] == "ValidationError"
    assert result.diagnostics[0]["line"] == line and "'pi'" in result.diagnostics[0]["message"]
