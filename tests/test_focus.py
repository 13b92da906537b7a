"""Excerpts of long files (editor/focus.py): which units an instruction is about, and splicing an excerpt's
rewrite back into the file without touching a line that was left out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editor import formats, prompting
from editor.errors import ValidationError
from editor.focus import EXCERPT_MAX_LINES, MAX_GROUPS, View, focus, names_a_unit, outline, rank
from editor.formats import block
from editor.propose import FOCUS_MIN_LINES, Editor, to_locate
from editor.request import locate_messages
from tests.tiny_models import chat_model, chat_tokenizer, teach


def filler(name: str, lines: int = 6) -> str:
    body = "\n".join(f"    total = total + {i}  # step {i} of {name}" for i in range(lines))
    return f"def {name}(values):\n    total = 0\n{body}\n    return total\n"


NAMES = [f"helper_{word}" for word in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")]
AREA = "def area(radius):\n    return 3.14 * radius * radius\n"
LONG = "import math\nimport os\n\n\n" + "\n\n".join([*map(filler, NAMES[:4]), AREA, *map(filler, NAMES[4:])])


def test_the_named_unit_and_the_imports_are_shown_and_nothing_else():
    view = focus(LONG, "shapes.py", "Use math.pi in area.", "python")
    assert view.excerpt == "import math\nimport os\n\n\n\n\n" + AREA + "\n\n"
    assert view.splice(view.excerpt) == LONG  # the excerpt unchanged gives the file unchanged


def test_new_code_where_the_shown_lines_meet_goes_with_the_code_it_belongs_to():
    import ast

    longest = ("def n_longest(strings, n):\n    if not strings:\n        return []\n\n"
               "    unique = sorted(set(strings), key=len)\n    return unique[:n]\n")
    text = "from typing import List\n\n\n" + "\n\n".join([*map(filler, NAMES[:4]), longest, *map(filler, NAMES[4:])])
    view = focus(text, "strings.py", "Make n_longest a static method of a class StringFinder.", "python")
    # What the 1.5B model wrote (editeval-long): matched on the blank line inside the function, the class's
    # head fell where the import meets the function, above the lines left out, cut from its body below them.
    answer = ("from typing import List\n\n\nclass StringFinder:\n    @staticmethod\n    def n_longest(strings, n):\n"
              "        if not strings:\n            return []\n\n        unique = sorted(set(strings), key=len)\n"
              "        return unique[:n]\n")
    new = view.splice(answer)
    ast.parse(new)
    assert answer.split("\n\n\n")[1] in new and new.index("def helper_delta") < new.index("class StringFinder")
    imported = view.splice(view.excerpt.replace("import List\n", "import List\nimport sys\n"))
    assert imported == text.replace("import List\n", "import List\nimport sys\n")  # an import stays on top


def test_an_answer_of_new_code_alone_keeps_the_blank_lines_around_the_excerpt():
    # What the 1.5B model wrote for "return the n smallest instead of the largest" (editeval-long): a renamed
    # function alone. The unit it left out went back, the new one after it, and the blank lines before the
    # next unit left out were lost: the edit could not be handed out as a block edit and was refused.
    instruction = "Compute the circle's area with math.pi, as circle_area."
    view = focus(LONG, "shapes.py", instruction, "python")
    answer = "import math\nimport os\n\n\ndef circle_area(radius):\n    return math.pi * radius * radius\n"
    edit, new_text = Editor._apply("excerpt", "shapes.py", LONG, answer, "python", view, instruction)
    added = "\n\ndef circle_area(radius):\n    return math.pi * radius * radius\n"
    assert new_text == LONG.replace(AREA, AREA + added)
    assert block.apply_text(LONG, edit, "shapes.py") == new_text


def test_a_rewrite_of_the_excerpt_lands_in_place():
    view = focus(LONG, "shapes.py", "Use math.pi in area.", "python")
    new = view.splice(view.excerpt.replace("3.14", "math.pi"))
    assert new == LONG.replace("3.14", "math.pi")


def test_lines_left_out_are_never_lost_whatever_the_answer():
    view = focus(LONG, "shapes.py", "Use math.pi in area.", "python")
    for answer in ("", "x = 1\n", "import math\n"):
        new = view.splice(answer)
        assert all(filler(name) in new for name in NAMES)


def test_added_lines_go_after_the_shown_line_above_them_or_before_the_first():
    view = focus(LONG, "shapes.py", "Add a function circumference after area.", "python")
    circumference = "\n\ndef circumference(radius):\n    return 2 * math.pi * radius\n"
    new = view.splice(view.excerpt.replace(AREA, AREA + circumference))
    assert new == LONG.replace(AREA, AREA + circumference)
    assert view.splice("#!/usr/bin/env python3\n" + view.excerpt) == "#!/usr/bin/env python3\n" + LONG


def test_a_subclass_beside_its_base_is_shown_with_it_a_comment_joined_to_what_follows():
    base = "class Animal:\n    def sound(self):\n        return None\n"
    derived = "# Animals that roar.\nclass Lion(Animal):\n    def sound(self):\n        return 'roar'\n"
    text = "\n\n".join([*map(filler, NAMES[:4]), base, derived, *map(filler, NAMES[4:])])
    excerpt = focus(text, "zoo.py", "Add an age to Animal.", "python").excerpt
    assert base in excerpt and derived in excerpt
    assert not any(name in excerpt for name in NAMES)


def test_without_a_named_unit_the_best_few_are_shown():
    text = "\n\n".join([*map(filler, NAMES[:4]), "def mean(values):\n    return sum(values) / len(values)\n",
                        "def median(values):\n    return sorted(values)[len(values) // 2]\n", *map(filler, NAMES[4:])])
    excerpt = focus(text, "stats.py", "Make the median of an even count of values average the two middle ones.",
                    "python").excerpt
    assert "def median(values)" in excerpt
    assert excerpt.count("def ") <= 3


def test_an_instruction_about_no_unit_shows_the_last_units():
    text = "import os\n\n\n" + "\n\n".join(filler(name, 40) for name in NAMES)  # 8 functions of 43 lines
    view = focus(text, "tool.py", "Tidy up.", "python")
    assert view.excerpt.startswith("import os\n") and "def helper_hotel" in view.excerpt
    fitting = (EXCERPT_MAX_LINES + 1) // 44  # the last units whose span (44 lines a unit with its blank) fits
    assert 1 < fitting < len(NAMES)
    assert all((f"def {name}" in view.excerpt) == (i >= len(NAMES) - fitting) for i, name in enumerate(NAMES))
    short = "def f():\n    return 1\n"
    assert focus(short, "a.py", "Tidy up.", "python").excerpt == short


def test_ranking_prefers_the_unit_named_outright_over_common_words():
    units = [u for u in block.units(LONG, "shapes.py") if u.name.startswith("def ")]
    lines = LONG.splitlines()
    scores = rank(units, lines, "In area, add up the total of values step by step.")
    assert max(range(len(units)), key=scores.__getitem__) == [u.name for u in units].index("def area(radius):")


def test_javascript_and_non_ascii():
    functions = [f"function {name}(xs) {{\n  return xs.map((x) => x + 1); // «{name}»\n}}\n" for name in NAMES]
    text = "\n".join(functions[:4] + ["function greet(name) {\n  return 'héllo ' + name;\n}\n"] + functions[4:])
    view = focus(text, "greet.js", "Make greet say hi.", "javascript")
    assert "héllo" in view.excerpt and "helper_alpha" not in view.excerpt
    assert view.splice(view.excerpt.replace("héllo", "hi ✓")) == text.replace("héllo", "hi ✓")


def test_a_file_shown_whole_splices_like_a_whole_rewrite():
    view = View("a\nb\n", ((0, 2),))
    assert view.splice("a\nc\n") == "a\nc\n"
    assert View("", ()).splice("") == ""


@pytest.mark.parametrize("spec", [False, True])
def test_the_editor_makes_an_excerpt_edit_and_hands_out_a_block_edit(spec):
    instruction = "Use math.pi in area."
    view = focus(LONG, "shapes.py", instruction, "python")
    answer = "```\n" + view.excerpt.replace("3.14", "math.pi") + "```"
    tokenizer = chat_tokenizer(LONG + answer)
    model = chat_model(tokenizer)
    chat = prompting.messages("excerpt", path="shapes.py", text=view.excerpt, instruction=instruction,
                              language="python")
    teach(model, tokenizer, chat, answer)
    result = Editor(model_obj=model, tokenizer=tokenizer, spec=spec, max_new_tokens=200).edit(
        LONG, instruction, format="excerpt", path="shapes.py")
    assert result.ok and result.new_text == LONG.replace("3.14", "math.pi"), result.diagnostics
    assert result.edit_text.startswith("*** Replace: def area(radius):")
    assert block.apply_text(LONG, block.parse(result.edit_text), "shapes.py") == result.new_text
    assert result.answer == answer  # the model's own answer, about the excerpt: the benchmark rescores it
    assert Editor._apply("excerpt", "shapes.py", LONG, result.answer, "python", view, instruction)[1] == result.new_text
    whole_prompt = len(tokenizer.encode(LONG))
    assert result.stats["prompt_tokens"] < whole_prompt  # the prompt holds the excerpt, not the file


def test_an_answer_with_several_syntax_errors_is_rejected_as_a_validation_error():
    from editor.errors import ValidationError

    broken = "def f(:\n    return 1\n\n\ndef g(:\n    return 2\n"
    with pytest.raises(ValidationError) as raised:
        Editor._apply("whole", "item.py", "def f():\n    return 1\n", "```\n" + broken + "```", "python")
    assert raised.value.args[0].count("new syntax error") >= 2


def test_crlf_and_form_feeds_keep_their_places():
    text = LONG.replace("def helper_echo", "\x0c\ndef helper_echo").replace("\n", "\r\n")
    view = focus(text, "shapes.py", "Use math.pi in area.", "python")
    assert "def area(radius):" in view.excerpt and "\r" not in view.excerpt
    assert view.splice(view.excerpt) == text
    assert view.splice(view.excerpt.replace("3.14", "math.pi")) == text.replace("3.14", "math.pi")


@pytest.mark.parametrize("fmt", ["apply_patch", "udiff", "ot", "block", "excerpt"])
def test_an_answer_about_the_excerpt_is_handed_out_as_an_edit_of_the_whole_file(fmt):
    from editor.applying import apply_edit
    from editor.files import MemoryFiles
    from editor.propose import edit_format, file_edit, view_for
    from training.edit_render import answer_for

    instruction = "Use math.pi in area."
    view = view_for(fmt, "shapes.py", LONG, instruction, "python")
    assert view is not None and "helper_alpha" not in view.excerpt
    expected = LONG.replace("3.14", "math.pi")
    new_excerpt = view.excerpt.replace("3.14", "math.pi")
    # The model's answer, written about the excerpt as the prompt showed it (udiff: the excerpt's line numbers).
    answer = answer_for("whole" if fmt == "excerpt" else fmt, "shapes.py", view.excerpt, new_excerpt, "python")
    edit, new_text = Editor._apply(fmt, "shapes.py", LONG, answer, "python", view)
    assert new_text == expected
    handed_out = edit_format(fmt)
    rendered = formats.get(handed_out).render(edit)
    applied = apply_edit(rendered, format=handed_out, files=MemoryFiles({"shapes.py": LONG}), targets=["shapes.py"],
                         dry_run=True)
    assert not applied.errors and applied.changes[0].new_text == expected
    assert file_edit(fmt, LONG, expected, "shapes.py") == edit


def test_a_block_answer_that_spaces_a_new_unit_its_own_way_is_handed_out_as_the_applier_spaces_it():
    from editor.propose import file_edit, view_for

    # Found on editeval-long (EditEval/47): a unit's new text that ends in a new class after extra blank lines.
    # Spliced back, that is a new unit inserted after four blank lines, which no block edit gives exactly (an
    # operation's text has no blank lines at its ends): the edit handed out is the one that gives it spaced as the
    # applier spaces new units, and the new text is what that edit gives.
    instruction = "Add a Circle class after area."
    view = view_for("block", "shapes.py", LONG, instruction, "python")
    new_class = "class Circle:\n    pass\n"
    answer = f"*** Replace: def area(radius):\n{AREA}\n\n\n\n{new_class}*** End\n"
    edit, new_text = Editor._apply("block", "shapes.py", LONG, answer, "python", view, instruction)
    assert [(op.kind, op.unit, op.lines) for op in edit.ops] == [("insert", "def area(radius):", tuple(
        new_class.splitlines()))]
    assert new_text == block.apply_text(LONG, edit, "shapes.py") == LONG.replace(AREA, AREA + "\n\n" + new_class)
    with pytest.raises(ValueError, match="no block edit"):  # exactly as the answer spaced it: none
        block.edit_between(LONG, LONG.replace(AREA, AREA + "\n\n\n\n" + new_class), "shapes.py")
    assert file_edit("block", LONG, LONG.replace(AREA, AREA + "\n\n\n\n" + new_class), "shapes.py") == edit


def test_an_excerpt_answer_that_only_moves_blank_lines_between_units_changes_nothing():
    from editor.errors import NoChangeError
    from editor.propose import file_edit, view_for

    # Spliced back, more blank lines after area differ from the file; the block edit that says it (a unit
    # rewritten as it was) gives the file back as it was, with its own spacing: that is no edit.
    instruction = "Use math.pi in area."
    view = view_for("excerpt", "shapes.py", LONG, instruction, "python")
    answer = "```\n" + view.excerpt.replace(AREA, AREA + "\n\n\n") + "```"
    respaced = view.splice(view.excerpt.replace(AREA, AREA + "\n\n\n"))
    assert respaced != LONG
    assert block.apply_text(LONG, file_edit("excerpt", LONG, respaced, "shapes.py"), "shapes.py") == LONG
    with pytest.raises(NoChangeError):
        Editor._apply("excerpt", "shapes.py", LONG, answer, "python", view, instruction)


def test_the_excerpt_after_a_change_splices_back_to_it_and_a_change_left_out_has_none():
    view = focus(LONG, "shapes.py", "Use math.pi in area.", "python")
    after = LONG.replace("3.14", "math.pi")
    assert view.excerpt_after(after) == view.excerpt.replace("3.14", "math.pi")
    assert view.splice(view.excerpt_after(after)) == after
    assert view.excerpt_after(LONG.replace("def helper_alpha", "def helper_one")) is None


def test_an_excerpt_rewrite_keeps_the_units_it_left_out_where_they_were():
    from editor.focus import units_kept

    excerpt = "import math\n\n\ndef area(r):\n    return 3.14 * r * r\n\n\ndef other():\n    return 1\n"
    stopped = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n"
    assert units_kept(excerpt, stopped, "a.py") == excerpt.replace("3.14", "math.pi")
    started_late = "def area(r):\n    return math.pi * r * r\n\n\ndef other():\n    return 1\n"
    assert units_kept(excerpt, started_late, "a.py") == excerpt.replace("3.14", "math.pi")
    assert units_kept(excerpt, "def xor(a, b):\n    return a ^ b\n", "a.py") == (  # only new code: added
        excerpt + "def xor(a, b):\n    return a ^ b\n")
    middle = excerpt + "\n\ndef last():\n    return 'the last one'\n"
    answer = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef last():\n    return 'the last one'\n"
    assert units_kept(middle, answer, "a.py") == middle.replace("3.14", "math.pi")
    changed_end = stopped + "\n\ndef other():\n    return 2\n"
    assert units_kept(excerpt, changed_end, "a.py") == changed_end


def test_units_put_back_stay_whole_when_the_answer_shares_blank_lines_and_words_with_them():
    from editor.focus import units_kept

    # Found on editeval-long: the answer's blank line matched the one inside a left-out docstring, its
    # `else:` the one inside a left-out function, and the new class landed inside both.
    excerpt = ('def frames(tb):\n    """Records of the frames.\n\n    One per frame."""\n    return [tb]\n\n\n'
               'def first(lines):\n    if lines:\n        return lines[0]\n    else:\n        return None\n')
    answer = ("class MyList:\n    def __init__(self, items):\n        self.items = items\n\n"
              "    def __or__(self, other):\n        if other:\n            return self.items\n"
              "        else:\n            return other\n")
    assert units_kept(excerpt, answer, "a.py") == excerpt + answer
    rewritten = excerpt.replace("lines[0]", "lines[-1]").split("\n\n\n")[1]  # `frames` left out, `first` changed
    assert units_kept(excerpt, rewritten, "a.py") == excerpt.replace("lines[0]", "lines[-1]")


# Units whose insides look like an answer's lines: blank lines in docstrings, `else:`, `return None`.
UNIT_BODIES = ['    """Records.\n\n    One per line."""\n    return None\n',
               "    if value:\n        return value\n    else:\n        return None\n",
               "    total = 0\n\n    for item in value:\n        total += item\n    return total\n"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(range(len(UNIT_BODIES))), min_size=1, max_size=5),
       st.lists(st.booleans(), min_size=5, max_size=5), st.lists(st.booleans(), min_size=5, max_size=5),
       st.sampled_from(["", "def added(value):\n    if value:\n\n        return None\n    else:\n        return 1\n"]))
def test_units_left_out_come_back_whole_and_the_answer_keeps_its_order(bodies, kept, changed, new_code):
    from editor.focus import units_kept

    units = [f"def unit_{i}(value):\n{UNIT_BODIES[b]}" for i, b in enumerate(bodies)]
    excerpt = "\n\n".join(units)
    written = [unit.replace("value", "argument") if changed[i] else unit
               for i, unit in enumerate(units) if kept[i]]
    answer = "\n\n".join(written + ([new_code] if new_code else []))
    result = units_kept(excerpt, answer, "a.py")
    for i, unit in enumerate(units):
        if not kept[i]:
            assert unit in result  # whole, not cut around the answer's lines
    position = 0
    for line in answer.splitlines():  # every line of the answer, in its order
        position = result.index(line + "\n", position) + len(line) + 1


def test_a_unit_rewritten_under_its_own_name_counts_as_kept():
    from editor.focus import units_kept

    # The 1.5B model's answer to "handle any number of input lists" (editeval-long): a new signature, a new
    # first line; the old function was put back beside it, and the edit could not be handed out.
    excerpt = ("def merge(a, b, c):\n    lists = [sorted(x) for x in [a, b, c]]\n    return list(heapq.merge(*lists))\n"
               "\n\ndef other(values):\n    return values\n")
    answer = "def merge(*lists):\n    lists = [sorted(x) for x in lists]\n    return list(heapq.merge(*lists))\n"
    assert units_kept(excerpt, answer, "a.py") == answer + "\n\ndef other(values):\n    return values\n"


def test_a_removal_word_deletes_only_the_units_the_instruction_names():
    from editor.focus import units_kept

    excerpt = "def area(r):\n    return 3.14 * r * r\n\n\ndef chown(path, user=None):\n    return path\n"
    answer = "def area(r):\n    return 3.14 * abs(r) * r\n"
    kept = excerpt.replace("r * r", "abs(r) * r")
    assert units_kept(excerpt, answer, "a.py", "Fix area to remove the sign of r.") == kept
    assert units_kept(excerpt, answer, "a.py", "Fix area and remove chown.") == answer


def test_the_editor_keeps_what_an_excerpt_rewrite_left_off_unless_asked_to_remove():
    main = "\n\ndef main():\n    print(area(2.0))\n"
    view = focus(LONG.replace(AREA, AREA + main), "shapes.py", "Use math.pi in area.", "python")
    assert "def main():" in view.excerpt  # main uses area: shown beside it
    text = view.text
    stopped = view.excerpt[:view.excerpt.index("def main")].rstrip("\n").replace("3.14", "math.pi") + "\n"
    _, new_text = Editor._apply("excerpt", "shapes.py", text, stopped, "python", view, "Use math.pi in area.")
    assert new_text == text.replace("3.14", "math.pi")
    _, new_text = Editor._apply("excerpt", "shapes.py", text, stopped, "python", view,
                                "Use math.pi in area and remove main.")
    assert "def main" not in new_text and "math.pi" in new_text


def test_a_whole_rewrite_of_a_long_file_keeps_the_units_it_left_off():
    """Asked for a whole long file, the model writes back the one function it changed: the rest stays. A short
    file's whole rewrite is taken as written (the model saw all of it and means what it left out)."""
    answer = "```python\ndef area(radius):\n    return math.pi * radius * radius\n```\n"
    _, new_text = Editor._apply("whole", "shapes.py", LONG, answer, "python", None, "Use math.pi in area.")
    assert new_text == LONG.replace("3.14", "math.pi")
    _, new_text = Editor._apply("whole", "shapes.py", LONG, answer, "python", None,
                                "Use math.pi in area and remove helper_alpha.")
    assert "def helper_alpha" not in new_text and "def helper_bravo" in new_text and "math.pi" in new_text
    short = "import math\n\n\n" + filler("helper_alpha") + "\n\n" + AREA
    assert short.count("\n") <= FOCUS_MIN_LINES
    bare = answer.replace("math.pi", "3.14159")  # the rewrite drops `import math`: math.pi would read a name defined nowhere
    _, new_text = Editor._apply("whole", "shapes.py", short, bare, "python", None, "Use 3.14159 in area.")
    assert new_text == "def area(radius):\n    return 3.14159 * radius * radius\n"
    with pytest.raises(ValidationError, match="'math'"):
        Editor._apply("whole", "shapes.py", short, answer, "python", None, "Use math.pi in area.")


def test_the_outline_offers_each_named_unit_by_its_first_line_of_code():
    text = ("import os\n\n\nLIMIT = 3\n\n\n# the shape's area\n@cache\ndef area(radius):\n    return radius\n\n\n"
            "class Shape:\n    pass\n\n\nif __name__ == '__main__':\n    print(area(2))\n")
    assert outline(text, "shapes.py") == [("LIMIT", "LIMIT = 3"), ("area", "def area(radius):"),
                                          ("Shape", "class Shape:")]  # the `if` defines no name: not offered
    assert names_a_unit(LONG, "shapes.py", "Use math.pi in area.")
    assert not names_a_unit(LONG, "shapes.py", "Use math.pi in the function.")


def test_the_unit_the_model_picked_is_shown_alone_whatever_the_words_point_to():
    instruction = "Add up the total of values step by step."  # every helper's words; area has none of them
    assert "def area" not in focus(LONG, "shapes.py", instruction, "python").excerpt
    assert focus(LONG, "shapes.py", instruction, "python").excerpt.count("def helper_") == MAX_GROUPS
    view = focus(LONG, "shapes.py", instruction, "python", about="area")
    assert view.excerpt == "import math\nimport os\n\n\n\n\n" + AREA + "\n\n"
    assert focus(LONG, "shapes.py", instruction, "python", about="nothing_of_the_file").excerpt == \
        focus(LONG, "shapes.py", instruction, "python").excerpt


def test_the_editor_asks_the_model_which_unit_an_unnamed_instruction_means_and_shows_it():
    instruction = "Give the result to two decimals."  # names no unit, and its words are in none
    units = outline(LONG, "shapes.py")
    assert to_locate("excerpt", "shapes.py", LONG, instruction) == units
    assert to_locate("excerpt", "shapes.py", LONG, "Use math.pi in area.") == []  # named outright: no pick
    assert to_locate("whole", "shapes.py", LONG, instruction) == []  # the whole file is shown
    tokenizer = chat_tokenizer(LONG)
    model = chat_model(tokenizer)
    teach(model, tokenizer, locate_messages("shapes.py", units, instruction), "area")
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=40)
    result = editor.edit(LONG, instruction, format="excerpt", path="shapes.py")
    assert result.stats["about"] == "area"
    # Its answer is one of the file's names whatever the model: an untaught one picks by the grammar alone.
    untaught = Editor(model_obj=chat_model(tokenizer), tokenizer=tokenizer, max_new_tokens=40)
    assert untaught.edit(LONG, instruction, format="block", path="shapes.py").stats["about"] in dict(units)
