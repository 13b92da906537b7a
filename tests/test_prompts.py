"""Each format's prompt example, as the chat messages show it to the model, is a correct edit of the example's file.

The model imitates the example's answer down to how it ends: the unified diff example, its last context lines
blank, lost them to the chat's stripping and ended on an added line without its newline, a diff whose header
counted lines it did not have. The 1.5B then ended its own diffs there, where the grammar wanted a newline first.
"""

from __future__ import annotations

import re

import pytest

from decoding.constraint import grammar_admits
from editor import prompting, validation
from editor.propose import Editor
from editor.request import format_grammar

FORMATS = ["apply_patch", "udiff", "ot", "rule", "block", "whole"]


def shown_example(fmt: str) -> tuple[str, str, str]:
    """(file name, file text, answer) of `fmt`'s example, as the chat messages carry them."""
    chat = prompting.messages(fmt, path="item.py", text="pass\n", instruction="Do it.", language="python")
    request, answer = chat[1]["content"], chat[2]["content"]
    name = re.search(r"^(?:File|Text): (\S+)", request, flags=re.MULTILINE)[1]
    text = re.search(r"^```\n(.*?)\n```$", request, flags=re.MULTILINE | re.DOTALL)[1] + "\n"
    if fmt == "udiff":  # shown with line numbers
        text = re.sub(r"^\d+: ", "", text, flags=re.MULTILINE)
    return name, text, answer


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_prompt_example_is_a_correct_edit_of_its_file(fmt):
    name, text, answer = shown_example(fmt)
    language = validation.detect_language(name, text, None)
    grammar = format_grammar(fmt, name, text, language)
    if grammar is not None:
        assert grammar_admits(grammar, answer), f"the {fmt} grammar refuses its own example answer"
    _, new_text = Editor._apply(fmt, name, text, answer, language)  # exact: no recount, no retry
    assert new_text != text
