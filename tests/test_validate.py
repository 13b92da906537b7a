"""Tree-sitter validation: language detection, ERROR/MISSING nodes, only new issues blamed on an edit."""

from __future__ import annotations

import random

import pytest

from editor import validation
from editor.validation import SyntaxIssue, check, detect_language, syntax_issues

# one valid and one broken snippet per language
SAMPLES = {
    "python": ("a.py", "def f(x):\n    return x + 1\n", "def f(x):\n    return (x + 1\n"),
    "javascript": ("a.js", "function f(x) { return x + 1; }\n", "function f(x) { return x + ; }\n"),
    "typescript": ("a.ts", "let n: number = 1;\n", "let n: number = ;\n"),
    "tsx": ("a.tsx", "const e = <div>{n}</div>;\n", "const e = <div>{n}</div;\n"),
    "rust": ("a.rs", "fn main() { let x = 1; }\n", "fn main() { let x = ; }\n"),
    "go": ("a.go", "package main\n\nfunc main() {}\n", "package main\n\nfunc main() {\n"),
    "java": ("A.java", "class A { void f() {} }\n", "class A { void f() { }\n"),
    "c": ("a.c", "int main(void) { return 0; }\n", "int main(void) { return 0 }\n"),
    "cpp": ("a.cpp", "int main() { return 0; }\n", "int main() { return 0 }\n"),
    "json": ("a.json", '{"a": [1, 2]}\n', '{"a": [1, 2}\n'),
    "yaml": ("a.yaml", "a:\n  - 1\n  - 2\n", "a: [1, 2\n"),
    "toml": ("a.toml", "[tool]\nname = \"x\"\n", "[tool\nname = \n"),
    "bash": ("a.sh", "if true; then\n  echo hi\nfi\n", "if true; then\n  echo hi\n"),
    "html": ("a.html", "<p>hi</p>\n", "<p>hi</p\n"),
    "css": ("a.css", "a { color: red; }\n", "a { color: red; \n"),
    "ruby": ("a.rb", "def f\n  1\nend\n", "def f\n  1\n"),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_each_grammar_accepts_valid_and_flags_broken_code(language):
    path, good, bad = SAMPLES[language]
    assert syntax_issues(path, good) == (language, [])
    lang, issues = syntax_issues(path, bad)
    assert lang == language and issues
    assert all(issue.kind in ("ERROR", "MISSING") and issue.line >= 1 and issue.column >= 1
               for issue in issues)
    report = check(path, good, bad)
    assert report.validated and report.language == language and report.new_issues


def test_markdown_grammar_loads_and_parses():
    assert syntax_issues("README.md", "# Title\n\n* item\n\n```py\ncode\n```\n") == ("markdown", [])
    assert check("README.md", "# a\n", "# a\n\nmore\n").validated


def test_every_grammar_loads_once():
    for language in validation.GRAMMARS:
        assert validation.parser_for(language) is validation.parser_for(language)


@pytest.mark.parametrize("path,text,expected", [
    ("x.py", "", "python"), ("x.PY", "", "python"), ("dir/x.pyi", "", "python"),
    ("x.mjs", "", "javascript"), ("x.tsx", "", "tsx"), ("x.hpp", "", "cpp"), ("x.yml", "", "yaml"),
    ("Rakefile", "", "ruby"), ("notes.markdown", "", "markdown"),
    ("tool", "#!/usr/bin/env python3\nprint(1)\n", "python"),
    ("tool", "#!/usr/bin/python3.11\n", "python"),
    ("tool", "#!/usr/bin/env -S python3 -u\n", "python"),
    ("run", "#!/bin/bash\necho\n", "bash"), ("run", "#!/bin/sh\n", "bash"),
    ("srv", "#!/usr/bin/env node\n", "javascript"), ("gem", "#!/usr/bin/env ruby\n", "ruby"),
    ("x.txt", "#!/usr/bin/env python3\n", "python"),  # unknown extension: the shebang decides
    ("x.txt", "hello\n", None), ("Makefile", "all:\n", None), ("run", "#!/usr/bin/env perl\n", None),
])
def test_language_detection(path, text, expected):
    assert detect_language(path, text) == expected


def test_language_override_and_aliases():
    assert detect_language("x.txt", "", "Python") == "python"
    assert detect_language("x.py", "", "js") == "javascript"  # the override wins over the extension
    assert detect_language("x", "", "c++") == "cpp"
    with pytest.raises(ValueError, match="unknown language 'cobol'"):
        detect_language("x.py", "", "cobol")


def test_unknown_language_validates_nothing():
    report = check("notes.txt", "a\n", "a (\n")
    assert report == validation.Report("notes.txt", None, False, [])
    assert report.summary() == "not validated: unknown language"
    assert syntax_issues("notes.txt", "(((") == (None, [])


def test_issue_positions_are_one_based_and_count_characters():
    # "é" is two bytes in UTF-8: the column must still count characters
    lang, issues = syntax_issues("a.py", "x = 1\nprint('é' +)\n")
    assert lang == "python"
    [issue] = issues
    assert (issue.line, issue.kind) == (2, "ERROR")
    assert issue.column == len("print('é' ") + 1
    assert issue.snippet == "+"
    assert issue.describe() == "ERROR near '+'"


def test_missing_node_is_reported_as_missing():
    _, issues = syntax_issues("a.py", "def f(:\n    pass\n")
    assert SyntaxIssue(1, 7, "MISSING", ")") in issues
    assert issues[0].describe() == "MISSING ')'"


def test_long_snippets_are_shortened():
    _, issues = syntax_issues("a.json", '{"a": 1 ' + '"b" ' * 40 + "}\n")
    assert issues and all(len(issue.snippet) <= validation.SNIPPET_CHARS for issue in issues)


def test_clean_edit_has_no_new_issues():
    report = check("a.py", "x = 1\n", "x = 2\ny = 3\n")
    assert report.validated and report.ok and report.summary() == "validated: python"


OLD_BROKEN = "import os\n\ndef broken(:\n    pass\n\nvalue = 1\n"


def test_old_error_shifted_by_an_edit_above_is_not_new():
    new = "import os\nimport sys\nimport re\n\ndef broken(:\n    pass\n\nvalue = 1\n"
    assert syntax_issues("a.py", OLD_BROKEN)[1]  # the old file really is broken
    assert check("a.py", OLD_BROKEN, new).new_issues == []


def test_edit_below_an_old_error_is_judged_on_its_own():
    clean_edit = OLD_BROKEN.replace("value = 1", "value = 2")
    assert check("a.py", OLD_BROKEN, clean_edit).new_issues == []
    bad_edit = OLD_BROKEN.replace("value = 1", "value = [1, 2")
    [issue] = check("a.py", OLD_BROKEN, bad_edit).new_issues
    assert issue.line == 6


def test_same_error_added_again_is_new_and_located_at_the_edit():
    old = "def a(:\n    pass\n\n\nx = 1\n\n\ny = 2\n"
    new = "def a(:\n    pass\n\n\nx = 1\n\n\ndef a(:\n    pass\ny = 2\n"
    report = check("a.py", old, new)
    assert [issue.line for issue in report.new_issues] == [8]
    assert report.summary() == "1 new syntax error(s) (python)"


def test_fixing_an_error_reports_nothing():
    assert check("a.py", OLD_BROKEN, OLD_BROKEN.replace("(:", "():")).new_issues == []


def test_shebang_file_is_validated():
    report = check("bin/tool", "#!/usr/bin/env python3\nx = 1\n", "#!/usr/bin/env python3\nx = (\n")
    assert report.language == "python" and [i.line for i in report.new_issues] == [2]


def test_created_file_is_checked_against_nothing():
    report = check("new.json", "", '{"a": }\n')
    assert report.language == "json" and report.new_issues


def test_incremental_reparse_matches_a_full_parse():
    """Each check reparses from the previous text's cached tree; the result must equal a fresh parse."""
    rng = random.Random(7)
    text = "def f(a, b):\n    s = 'é'\n    return [a, b]\n\n\nclass C:\n    x = {1: 2}\n" * 5
    validation.forget_trees()
    for _ in range(80):
        start = rng.randrange(len(text) + 1)
        end = min(len(text), start + rng.randrange(4))
        new = text[:start] + rng.choice(["", "(", ")", ":", "é", "\n", "x", "def ", "'"]) + text[end:]
        report = check("a.py", text, new)
        cached = validation._trees[("python", new.encode())]
        fresh = validation.parser_for("python").parse(new.encode())
        assert str(cached.root_node) == str(fresh.root_node)
        assert syntax_issues("a.py", new)[1] == [i for i, _ in validation._issues(fresh, new.encode())]
        assert all(issue in syntax_issues("a.py", new)[1] for issue in report.new_issues)
        text = new


def test_tree_cache_is_bounded():
    validation.forget_trees()
    for n in range(validation.TREE_CACHE_SIZE + 5):
        check("a.py", "", f"x = {n}\n")
    assert len(validation._trees) == validation.TREE_CACHE_SIZE


def test_python_compile_catches_what_tree_sitter_accepts():
    # A body left without its `def` line parses in tree-sitter-python, but Python refuses it.
    old = "def area(r):\n    return r * r\n"
    report = validation.check("a.py", old, "    return r * r\n")
    assert [(i.line, i.kind) for i in report.new_issues] == [(1, "ERROR")]
    assert "unexpected indent" in report.new_issues[0].snippet


def test_python_compile_blames_only_new_breakage():
    broken = "def f(:\n    pass\n"  # already broken: an edit elsewhere is not blamed for it
    assert validation._python_compile_issues("python", broken, broken + "x = 1\n") == []
    assert validation._python_compile_issues("javascript", "", "    return 1\n") == []


def test_an_error_tree_sitter_does_not_locate_is_still_refused():
    # tree-sitter marks the tree as broken but places no ERROR or MISSING node for this line.
    report = validation.check("a.js", "let a = 1;\n", "let a = 1;\nimport a * b\n")
    assert not report.ok
    python = validation.check("a.py", "x = 1\n", "x = 1\nimport math.pi * radius\n")
    assert [issue.line for issue in python.new_issues] == [2]  # compile() places it


@pytest.mark.parametrize("nested", ["x = a" + "[0]" * 50_000 + "\n",   # RecursionError in compile()
                                    "x = " + "-" * 100_000 + "1\n"])   # MemoryError in its parser
def test_code_nested_past_the_compilers_limits_is_an_issue_not_a_crash(nested):
    [issue] = check("a.py", "x = 1\n", nested).new_issues
    assert issue.snippet == "nested too deeply for Python to compile"
    assert check("a.py", nested, nested + "y = 2\n").new_issues == []  # already so: not the edit's


def test_deeply_nested_code_applies_with_allow_syntax_errors():
    from editor.applying import apply_edit
    from editor.files import MemoryFiles
    files = MemoryFiles({"a.py": "x = 1\n"})
    patch = "*** Begin Patch\n*** Update File: a.py\n@@\n-x = 1\n+x = a" + "[0]" * 50_000 + "\n*** End Patch\n"
    refused = apply_edit(patch, files=files)
    assert not refused.ok and "nested too deeply" in str(refused.errors[0])
    assert apply_edit(patch, files=files, allow_syntax_errors=True).ok
    assert files.texts["a.py"].startswith("x = a[0][0]")
