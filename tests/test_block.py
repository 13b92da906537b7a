"""Block edits: editor/formats/block.py, grammars/block.lark and prompts/block.txt."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import grammars
from bench.grammar import stdlib_tokenizer
from decoding.constraint import GrammarConstraint, tokenizer_for
from editor import formats, prompting, validation
from editor.cli import app
from editor.errors import ApplyError, NoChangeError, ParseError
from editor.files import MemoryFiles
from editor.formats import apply_patch, block

PYTHON = '''import sys

TIMEOUT = 5


@dataclass
class Loader:
    """Loads configs."""

    def __init__(self, path):
        self.path = path

    def load(self):
        return open(self.path).read()


class Saver:
    def __init__(self, path):
        self.path = path


def main():
    print(Loader(sys.argv[1]).load())
'''

JAVASCRIPT = '''import fs from "fs";

export class Store {
  constructor(path) {
    this.path = path;
  }

  read() {
    return fs.readFileSync(this.path, "utf8");
  }
}

function main() {
  console.log(new Store("a").read());
}
'''

MARKDOWN = '''# Guide

How to use it.

## Install

Run the installer.

- step one
- step two

## Usage

Call it.
'''

TEXT = "First paragraph\nstill first.\n\nSecond paragraph.\n\n\nThird.\n"

UNITS = {
    "a.py": (PYTHON, ["import sys", "TIMEOUT = 5", "class Loader:", '"""Loads configs."""',
                      "def __init__(self, path):", "def load(self):", "class Saver:",
                      "def __init__(self, path): #2", "def main():"]),
    "a.js": (JAVASCRIPT, ['import fs from "fs";', "export class Store {", "constructor(path) {",
                          "read() {", "function main() {"]),
    "a.md": (MARKDOWN, ["# Guide", "How to use it.", "## Install", "Run the installer.",
                        "- step one", "## Usage", "Call it."]),
    "a.txt": (TEXT, ["First paragraph", "Second paragraph.", "Third."]),
}


def changed(path: str, text: str, edit_text: str) -> str:
    [change] = block.apply(MemoryFiles({path: text}), block.parse(edit_text), target=path)
    return change.new_text


@pytest.mark.parametrize("path", sorted(UNITS))
def test_units_of_each_kind_of_file(path):
    text, names = UNITS[path]
    assert block.unit_names(text, path) == names


def test_duplicate_first_lines_get_numbers_that_no_line_has():
    text = "x = 1\n\nx = 1\n\nx = 1 #2\n\nx = 1\n"
    assert block.unit_names(text, "a.py") == ["x = 1", "x = 1 #2", "x = 1 #2 #2", "x = 1 #3"]
    assert changed("a.py", text, "*** Replace: x = 1 #3\nx = 4\n*** End\n").endswith("\nx = 4\n")


def test_unit_spans_cover_decorators_and_sections():
    spans = {unit.name: (unit.start, unit.end) for unit in block.units(PYTHON, "a.py")}
    assert spans["class Loader:"] == (5, 14)  # from "@dataclass" to the end of load()
    assert spans["def load(self):"] == (12, 14)
    sections = {unit.name: (unit.start, unit.end) for unit in block.units(MARKDOWN, "a.md")}
    assert sections["## Install"] == (4, 10)  # the heading, its paragraph and list, no blank line
    assert sections["# Guide"] == (0, 14)


@pytest.fixture(scope="module")
def tokenizer():
    return stdlib_tokenizer(2000)


@pytest.mark.parametrize("path", sorted(UNITS))
def test_grammar_admits_exactly_the_files_units(tokenizer, path):
    text, names = UNITS[path]
    assert grammars.markers("block") == ["UNIT"]
    grammar = grammars.document_grammar("block", units=block.unit_names(text, path))
    llg = tokenizer_for(tokenizer)

    def accepted(edit: str) -> bool:
        ids = tokenizer.encode(edit, add_special_tokens=False) + [llg.eos_token]
        return GrammarConstraint(llg, grammar).valid_prefix_len(ids) == len(ids)

    for name in names:
        assert accepted(f"*** Delete: {name}\n*** End\n"), name
        assert accepted(f"*** Replace: {name}\nnew text\n\n**bold** *x* ***y\n*** End\n"), name
    others = {line.strip() for line in text.splitlines() if line.strip()} - set(names)
    for line in others | {names[0] + " ", names[0] + " #2", "def missing():"}:
        assert not accepted(f"*** Delete: {line}\n*** End\n"), line
    assert not accepted(f"*** Replace: {names[0]}\n*** Delete: {names[0]}\n*** End\n")  # no text
    assert not accepted(f"*** Replace: {names[0]}\n*** Bogus\n*** End\n")


def test_the_edit_grammar_names_units_top_to_bottom_once_and_not_inside_one_named(tokenizer):
    names, after = block.unit_order(PYTHON, "a.py")
    grammar = grammars.document_grammar("block", units=names, unit_after=after)
    llg = tokenizer_for(tokenizer)

    def accepted(*ops: str) -> bool:
        ids = tokenizer.encode("".join(ops) + "*** End\n", add_special_tokens=False) + [llg.eos_token]
        return GrammarConstraint(llg, grammar).valid_prefix_len(ids) == len(ids)

    replace = {name: f"*** Replace: {name}\nnew\n" for name in names}
    load, main, loader = replace["def load(self):"], replace["def main():"], replace["class Loader:"]
    assert accepted(load, main) and accepted(loader, "*** Delete: def main():\n")
    assert not accepted(main, load)  # bottom to top
    assert not accepted(main, main)  # one unit twice: what a small model does after its first rewrite
    assert not accepted(loader, load)  # a method of a class already rewritten
    assert not accepted()  # no operation at all
    assert after[names.index("class Loader:")] > names.index("def load(self):")


def test_rewrite_of_a_method_applies_and_validates():
    edit = ("*** Replace: def load(self):\n"
            "def load(self, encoding=\"utf-8\"):\n"  # flush left: indented like the method it replaces
            "    with open(self.path, encoding=encoding) as f:\n"
            "        return f.read()\n"
            "*** End\n")
    new = changed("a.py", PYTHON, edit)
    assert new == PYTHON.replace(
        "    def load(self):\n        return open(self.path).read()\n",
        "    def load(self, encoding=\"utf-8\"):\n"
        "        with open(self.path, encoding=encoding) as f:\n            return f.read()\n")
    assert validation.check("a.py", PYTHON, new).ok
    broken = changed("a.py", PYTHON, "*** Replace: def main():\ndef main(:\n    pass\n*** End\n")
    assert not validation.check("a.py", PYTHON, broken).ok


def test_a_new_body_alone_keeps_the_units_header_and_decorators():
    top = changed("a.py", PYTHON, "*** Replace: def main():\n    print('hello')\n*** End\n")
    assert top == PYTHON.replace("    print(Loader(sys.argv[1]).load())", "    print('hello')")
    method = changed("a.py", PYTHON, "*** Replace: def load(self):\n        return ''\n*** End\n")
    assert method == PYTHON.replace("        return open(self.path).read()", "        return ''")
    decorated = changed("a.py", PYTHON, '*** Replace: class Loader:\n    """Nothing."""\n*** End\n')
    assert decorated.startswith('import sys\n\nTIMEOUT = 5\n\n\n@dataclass\nclass Loader:\n    """Nothing."""\n\n\nclass Saver')
    flush_left = changed("a.py", PYTHON, "*** Replace: def load(self):\ndef load(self):\n    return ''\n*** End\n")
    assert flush_left == method  # a whole unit is taken as it is


def test_a_new_header_alone_keeps_the_units_body():
    # What the 1.5B model wrote for "Add a new parameter 'k' to the 'interleave' method".
    method = changed("a.py", PYTHON, "*** Replace: def load(self):\ndef load(self, encoding):\n*** End\n")
    assert method == PYTHON.replace("def load(self):", "def load(self, encoding):")
    top = changed("a.py", PYTHON, "*** Replace: def main():\ndef main(argv):\n*** End\n")
    assert top == PYTHON.replace("def main():", "def main(argv):") and validation.check("a.py", PYTHON, top).ok
    same = block.apply_text(PYTHON, block.parse("*** Replace: class Saver:\nclass Saver:\n*** End\n"), "a.py")
    assert same == PYTHON
    one_line = changed("a.py", PYTHON, "*** Replace: def main():\ndef main(): pass\n*** End\n")
    assert "def main(): pass\n" in one_line and "sys.argv" not in one_line  # a whole unit: taken as written


def test_insert_after_and_delete_keep_the_spacing():
    edit = ("*** Insert after: def load(self):\n"
            "    def close(self):\n        pass\n"
            "*** Delete: class Saver:\n"
            "*** Insert after: def main():\n"
            "if __name__ == \"__main__\":\n    main()\n"
            "*** Delete: import sys\n"
            "*** End\n")
    new = changed("a.py", PYTHON, edit)
    assert new == (PYTHON.replace("import sys\n\n", "")
                   .replace(".read()\n", ".read()\n\n    def close(self):\n        pass\n")
                   .replace("class Saver:\n    def __init__(self, path):\n        self.path = path"
                            "\n\n\n", "")
                   + '\n\nif __name__ == "__main__":\n    main()\n')
    assert validation.check("a.py", PYTHON, new).ok


def test_javascript_and_markdown_units():
    js = changed("a.js", JAVASCRIPT, "*** Replace: read() {\nread() {\n  return \"\";\n}\n*** End\n")
    assert '  read() {\n    return "";\n  }\n}' in js and validation.check("a.js", JAVASCRIPT, js).ok
    md = changed("a.md", MARKDOWN, "*** Replace: ## Install\n## Install\n\n`pip install it`\n"
                                   "*** Insert after: Call it.\nOr run it.\n*** End\n")
    assert md == "# Guide\n\nHow to use it.\n\n## Install\n\n`pip install it`\n\n## Usage\n\n" \
                 "Call it.\n\nOr run it.\n"


@pytest.mark.parametrize("path, text, edit", [
    ("a.py", PYTHON, "*** Replace: def __init__(self, path): #2\ndef __init__(self):\n    pass\n"
                     "*** Delete: TIMEOUT = 5\n*** End\n"),
    ("a.py", PYTHON.replace("\n", "\r\n"), "*** Insert after: def main():\nmain()\n*** End\n"),
    ("a.txt", TEXT.rstrip("\n"), "*** Replace: Third.\nThird, changed.\n*** End\n"),
    ("a.txt", TEXT.rstrip("\n"), "*** Delete: First paragraph\n*** End\n"),
    ("a.txt", TEXT, "*** Delete: First paragraph\n*** Delete: Second paragraph.\n"
                    "*** Delete: Third.\n*** End\n"),
])
def test_same_result_as_its_apply_patch_serialisation(path, text, edit):
    parsed = block.parse(edit)
    [direct] = block.apply(MemoryFiles({path: text}), parsed, target=path)
    patch = block.to_apply_patch(parsed, text, path)
    [via_patch] = apply_patch.apply(MemoryFiles({path: text}), apply_patch.parse(patch))
    assert direct.new_text == via_patch.new_text != text


@pytest.mark.parametrize("path", sorted(UNITS))
@pytest.mark.parametrize("final_newline", [True, False])
def test_every_operation_on_every_unit_matches_its_apply_patch_serialisation(path, final_newline):
    text = UNITS[path][0] if final_newline else UNITS[path][0].rstrip("\n")
    for name in block.unit_names(text, path):
        for op in (block.Op("replace", name, ("changed = 1",)), block.Op("delete", name),
                   block.Op("insert", name, ("added = 2", "", "added = 3"))):
            edit = block.Edit((op,))
            direct = block.apply_text(text, edit, path)
            patch = apply_patch.parse(block.to_apply_patch(edit, text, path))
            [via_patch] = apply_patch.apply(MemoryFiles({path: text}), patch)
            assert via_patch.new_text == direct, (path, op)


def test_parse_render_round_trip():
    text = ("*** Replace: def f(x):\n\ndef f(x):\n\n    return x\n\n"
            "*** Insert after: def f(x):\ndef g():\n    pass\n"
            "*** Delete: import os\n*** End")
    edit = block.parse(text)
    assert edit.ops == (block.Op("replace", "def f(x):", ("def f(x):", "", "    return x")),
                        block.Op("insert", "def f(x):", ("def g():", "    pass")),
                        block.Op("delete", "import os"))
    assert block.render(edit) == ("*** Replace: def f(x):\ndef f(x):\n\n    return x\n"
                                  "*** Insert after: def f(x):\ndef g():\n    pass\n"
                                  "*** Delete: import os\n*** End\n")
    assert block.parse(block.render(edit)) == edit


@pytest.mark.parametrize("text, message, line", [
    ("def f():\n*** End\n", r"expected '\*\*\* Replace: <unit>'.*found 'def f\(\):'", 1),
    ("*** Replace: f\nx\n*** Rewrite: g\n*** End\n", r"unknown marker '\*\*\* Rewrite: g'", 3),
    ("*** Replace: f\n*** Delete: g\n*** End\n", r"no lines for 'f'", 1),
    ("*** Delete: g\n  x\n*** End\n", r"takes no lines", 2),
    ("*** Delete: g\n", r"missing '\*\*\* End'", 2),
    ("*** End\n", r"no operation", 1),
    ("*** Delete: g\n*** End\nmore\n", r"text after", 3),
])
def test_parse_errors_name_the_line(text, message, line):
    with pytest.raises(ParseError, match=message) as caught:
        block.parse(text)
    assert caught.value.line == line


def test_unknown_unit_and_overlaps_are_named():
    files = MemoryFiles({"a.py": PYTHON})
    with pytest.raises(ApplyError, match=r"no unit 'def lod\(self\):' in the file.*did you mean "
                                         r"'def load\(self\):'") as caught:
        block.apply(files, block.parse("*** Delete: TIMEOUT = 5\n*** Delete: def lod(self):\n"
                                       "*** End\n"), target="a.py")
    assert (caught.value.file, caught.value.hunk) == ("a.py", 2)
    with pytest.raises(ApplyError, match=r"operations 1 \('class Loader:'\) and 2 "
                                         r"\('def load\(self\):'\) overlap"):
        block.apply(files, block.parse("*** Replace: class Loader:\nclass Loader:\n    pass\n"
                                       "*** Delete: def load(self):\n*** End\n"), target="a.py")
    with pytest.raises(ApplyError, match="give the target file"):
        block.apply(files, block.parse("*** Delete: TIMEOUT = 5\n*** End\n"))
    with pytest.raises(NoChangeError, match="changes nothing"):
        block.to_apply_patch(block.parse("*** Replace: TIMEOUT = 5\nTIMEOUT = 5\n*** End\n"),
                             PYTHON, "a.py")


def test_detect_tells_block_edits_from_the_other_formats():
    assert formats.detect("\n*** Replace: def f():\ndef f():\n    pass\n*** End\n") == "block"
    assert formats.detect("*** Delete: x = 1\n*** End\n") == "block"
    assert formats.detect("*** Begin Patch\n*** Delete File: a\n*** End Patch\n") == "apply_patch"
    assert formats.detect("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n") == "udiff"
    assert not block.looks_like("*** Begin Patch\n*** Update File: a\n")


def test_prompt_shows_the_file_and_an_answer_in_the_format():
    chat = prompting.messages("block", path="a.py", text=PYTHON, instruction="Drop TIMEOUT.",
                              language="python")
    assert chat[-1]["content"].endswith("Instruction: Drop TIMEOUT.")
    assert PYTHON.rstrip("\n") in chat[-1]["content"]
    example = chat[1]["content"].split("```\n")[1]
    answer = changed("greet.py", example, chat[2]["content"])  # the example answer applies
    assert "def welcome(name):" in answer and "    welcome(sys.argv[1])" in answer


def test_cli_applies_a_block_edit_to_the_named_file(tmp_path):
    (tmp_path / "a.py").write_text(PYTHON)
    edit = tmp_path / "edit.txt"
    edit.write_text("*** Replace: TIMEOUT = 5\nTIMEOUT = 10\n*** End\n")
    result = CliRunner().invoke(app, ["apply", str(edit), "--format", "block", "--file", "a.py",
                                      "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.py").read_text() == PYTHON.replace("TIMEOUT = 5", "TIMEOUT = 10")
    edit.write_text("*** Delete: TIMEOUT = 5\n*** End\n")
    result = CliRunner().invoke(app, ["apply", str(edit), "--file", "a.py", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "no unit 'TIMEOUT = 5'" in result.output


def test_a_code_units_text_cannot_open_a_fence_nor_start_with_stars_but_markdown_can():
    from decoding.constraint import grammar_admits
    from editor.request import format_grammar

    code = "def f():\n    return 1\n"
    fenced = "*** Replace: def f():\ndef f():\n    return 2\n```\n*** End\n"
    starred = "*** Replace: def f():\ndef f():\n    return 2\n***Insert after: def f():\n*** End\n"
    plain = "*** Replace: def f():\ndef f():\n    return 2\n*** End\n"
    grammar = format_grammar("block", "f.py", code, "python")
    assert grammar_admits(grammar, plain)
    assert not grammar_admits(grammar, fenced) and not grammar_admits(grammar, starred)
    notes = "# Notes\n\nRun it.\n"
    prose = format_grammar("block", "notes.md", notes, "markdown")
    assert grammar_admits(prose, "*** Replace: Run it.\n```\nrun\n```\n*** End\n")


def test_a_code_edit_may_end_with_a_fence_or_with_its_end_marker_on_the_last_line_and_reads_as_ended():
    # The default model, editing an excerpt of a long file, closed its code with a fence or wrote "*** End" on at
    # the end of the last line, then went on in prose: the grammar ends the answer there, and `closed` reads it.
    from decoding.constraint import grammar_admits
    from editor.propose import as_taken
    from editor.request import format_grammar

    code = "def f():\n    return 1\n"
    head = "*** Replace: def f():\ndef f():\n"
    grammar = format_grammar("block", "f.py", code, "python")
    for answer in (head + "    return 2\n```", head + "    return 2 *** End", head + "    return 2*** End\n```\n"):
        assert grammar_admits(grammar, answer), answer
        assert as_taken("block", answer, "python") == head + "    return 2\n*** End\n"
        assert block.parse(as_taken("block", answer, "python")).ops[0].lines == ("def f():", "    return 2")
    for answer in (head + "    return 2\n```\nThe function now returns 2.", head + "    return 2 *** End\nIt returns 2."):
        assert not grammar_admits(grammar, answer), answer  # nothing after the end
    assert grammar_admits(grammar, head + "    s = '*** End'\n    return s\n*** End\n")  # text inside, then the end
    # What comes before a glued end is a line of code: not an operation the grammar refuses (f named twice).
    assert not grammar_admits(grammar, head + "    return 2\n*** Replace: def f(): return 3 *** End")
    # Markdown keeps fences and "*** End" in its text: neither ends an edit of it, and an answer is taken as it is.
    prose = format_grammar("block", "notes.md", "# Notes\n\nRun it.\n", "markdown")
    assert not grammar_admits(prose, "*** Replace: Run it.\nRun `make`.\n```")
    assert not grammar_admits(prose, "*** Replace: Run it.\nRun it *** End")
    assert as_taken("block", "*** Replace: Run it.\nRun it *** End", "markdown") == "*** Replace: Run it.\nRun it *** End"
    cut = head + "    return 2\n    retu"  # an answer stopped at its budget stays unended
    assert as_taken("block", cut, "python") == cut


def test_a_file_of_thousands_of_units_gets_a_grammar_the_parser_survives():
    """The top-to-bottom rules chain one unit to the next; past a few thousand units llguidance's recursion
    over the chain overflowed the stack and killed the process. Past CONTIGUOUS_MAX_LINES units any unit may
    be named in any order (the applier still refuses overlapping operations)."""
    from decoding.constraint import grammar_admits
    from editor.request import format_grammar

    code = "".join(f"def f_{i}():\n    return {i}\n\n\n" for i in range(4000))
    grammar = format_grammar("block", "many.py", code, "python")
    assert grammar_admits(grammar, "*** Replace: def f_3999():\ndef f_3999():\n    return 0\n*** End\n")
    assert not grammar_admits(grammar, "*** Replace: def f_4000():\ndef f_4000():\n    return 0\n*** End\n")


# --- the name check: a Replace of a Python definition keeps its name -------------------------------------------

FIX = "Fix the bug in frequency_Of_Smallest."


def test_a_replace_keeps_the_definitions_name_unless_the_instruction_offers_a_new_one():
    # The 1.5B, asked to fix functions, renamed them (EditEval/88, /110) and their callers broke.
    check = block.name_check("The function finds the frequency of the smallest value.")
    head = "*** Replace: def frequency_Of_Smallest(n, arr):\n"
    assert check(head + "def frequency_Of_Smallest(n, arr):\n    return 0\n*** End\n")
    assert check(head + "def frequency_Of")  # on its way to the name
    assert not check(head + "def frequency_of")  # no longer
    assert not check(head + "def frequency_of_smallest(n, arr):")
    assert not check(head + "def frequency(")  # a word of the instruction is no name it offers
    # Decorators, comments and blank lines come before the definition line; a class keeps its name too.
    assert not check("*** Replace: class Student:\n\n@dataclass\n# a record\nclass Pupil:")
    assert check("*** Replace: class Student:\n@dataclass\nclass Student(ABC):\n    name: str\n")
    # Only the first definition line of the text: helpers after it, and other operations, are free.
    assert check(head + "def frequency_Of_Smallest(n, arr):\n    return helper(arr)\n\ndef helper(arr):")
    assert check("*** Insert after: def frequency_Of_Smallest(n, arr):\ndef helper(arr):\n")
    assert check("*** Replace: TIMEOUT = 5\ndef timeout():\n")  # the unit is no definition
    assert check(head + "    return min(arr)\n")  # a new body alone keeps the header
    assert not check(head + "def f():\n    pass\n*** Replace: def g():\ndef g():\n")  # every Replace was checked
    assert check(head + "async def frequency_Of_Smallest(n, arr):")


def test_names_the_instruction_offers_and_instructions_that_ask_for_a_rename():
    head = "*** Replace: def find_Max_Num(arr):\n"
    assert block.name_check("Modify the function to 'find_Min_Num' and return the smallest.")(head + "def find_Min_Num(")
    assert block.name_check("Make it a Plane class.")("*** Replace: def will_it_fly(q, w):\nclass Plane:")
    assert block.name_check("Call it `smallest`.")(head + "def smallest(arr):")
    assert not block.name_check("Return the smallest number instead.")(head + "def smallest(arr):")
    assert block.name_check("Rename it to smallest.") is None  # asked in words: any name goes
    assert block.name_check("Give the function a better name.") is None


def test_every_prefix_of_an_answer_the_check_takes_is_taken():
    check = block.name_check(FIX)
    answer = ("*** Replace: def frequency_Of_Smallest(n, arr):\n@cache\ndef frequency_Of_Smallest(n, arr):\n"
              "    return arr.count(min(arr))\n*** Delete: def unused():\n*** End\n")
    assert all(check(answer[:k]) for k in range(len(answer) + 1))
    renamed = answer.replace("def frequency_Of_Smallest(n, arr):\n    return", "def frequency_of_smallest(n, arr):\n    return")
    first_refused = next(k for k in range(len(renamed) + 1) if not check(renamed[:k]))
    assert renamed[:first_refused].endswith("def frequency_o")


def test_a_block_edit_of_python_is_decoded_under_the_name_check():
    from editor.request import document_check, format_grammar

    code = "def f(x):\n    return x\n"
    check = document_check("block", code, "Fix f.", "python")
    tokenizer = stdlib_tokenizer(2000)
    constraint = GrammarConstraint(tokenizer_for(tokenizer), format_grammar("block", "f.py", code, "python"),
                                   token_check=check)
    kept = tokenizer.encode("*** Replace: def f(x):\ndef f(x):\n", add_special_tokens=False)
    renamed = tokenizer.encode("*** Replace: def f(x):\ndef g(x):\n", add_special_tokens=False)
    assert constraint.valid_prefix_len(kept) == len(kept)
    assert constraint.valid_prefix_len(renamed) < len(renamed)  # the grammar alone takes it
    assert GrammarConstraint(tokenizer_for(tokenizer), format_grammar("block", "f.py", code, "python")
                             ).valid_prefix_len(renamed) == len(renamed)
    assert document_check("block", code, "Fix f.", "javascript") is None
    assert document_check("block", "# Notes\n", "Fix it.", "markdown") is None
