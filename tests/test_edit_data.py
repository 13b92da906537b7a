"""Edit data from commits (training/edit_data.py), its rendered examples (training/edit_render.py) and the block
before/after builder (editor/formats/block.py `edit_between`), on a git repository made here."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from decoding.constraint import grammar_admits
from editor.cli import app
from editor.formats import block
from editor.propose import FORMATS
from training import edit_data
from training.edit_data import EditDataError, Triplet, build, detect_licence, instruction_of
from training.edit_render import admitted, applied, examples_for, simple_rule

MIT = ("MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this "
       "software...\n")
GPL = "GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n"
BENCHMARK_FUNCTION = "def below_zero(operations):\n    balance = 0\n    for op in operations:\n" \
                     "        balance += op\n        if balance < 0:\n            return True\n    return False\n"

APP = '''import os


def count(items):
    return len(items) - 1


def greet(name):
    print("Hello " + name)
'''
MAIN_GO = '''package main

import "fmt"

func greet(name string) string {
\treturn "Hello " + name
}

func main() {
\tfmt.Println(greet("you"))
}
'''
README = "# Tool\n\nA tool.\n\n## Install\n\nRun it.\n"
UTIL_JS = "function add(a, b) {\n  return a + b;\n}\n\nmodule.exports = { add };\n"
GREETING = 'def hello():\n    return "helo"\n'


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@e", *args],
                          check=True, capture_output=True, text=True).stdout


def commit(repo: Path, message: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def benchmark_folder(folder: Path) -> Path:
    """EditEval and HumanEvalFix files of one item each; the HumanEvalFix one defines BENCHMARK_FUNCTION."""
    folder.mkdir()
    editeval = {"task_id": "EditEval/0", "instruction": "Double it.", "input": "def twice(x):\n    return x\n",
                "output": "def twice(x):\n    return 2 * x\n", "test": "def check():\n    assert twice(2) == 4\n"}
    prompt, body = BENCHMARK_FUNCTION.split("    balance = 0\n")
    fix = {"task_id": "Python/3", "entry_point": "below_zero", "prompt": prompt,
           "buggy_solution": "    balance = 0\n" + body.replace("< 0", "<= 0"),
           "canonical_solution": "    balance = 0\n" + body, "test": "def check(f):\n    assert f([-1])\n"}
    (folder / "editeval.jsonl").write_text(json.dumps(editeval) + "\n")
    (folder / "humanevalfix_python.jsonl").write_text(json.dumps(fix) + "\n")
    return folder


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, Path]:
    """A repository with one commit of each kind a filter drops, and the kept ones; and a benchmark folder."""
    base = tmp_path_factory.mktemp("edit-data")
    repo = base / "tool"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    big = "".join(f"VALUE_{i} = {i}\n" for i in range(350))
    commit(repo, "Initial import", {"LICENSE": MIT, "app.py": APP, "main.go": MAIN_GO, "README.md": README,
                                    "util.js": UTIL_JS, "notes.txt": "notes\n", "CHANGELOG.md": "# Changes\n",
                                    "big.py": big, "a.py": GREETING, "b.py": GREETING, "fmt.py": APP,
                                    "version.py": '__version__ = "1.2.2"\n', "consts.py": "C = 0\n",
                                    "broken.py": "import os\n", "scores.py": "import os\n"})
    commit(repo, "Fix off-by-one in count (#12)", {"app.py": APP.replace("len(items) - 1", "len(items)")})
    commit(repo, "Update app and util", {"app.py": APP.replace("Hello ", "Hi "), "util.js": UTIL_JS + "// x\n"})
    commit(repo, "Fixed the greeting", {"app.py": APP.replace("Hello ", "Hey ")})
    commit(repo, "Bump version to 1.2.3", {"version.py": '__version__ = "1.2.3"\n'})
    commit(repo, "Reformat fmt", {"fmt.py": APP.replace("    return len", "    return  len")})
    commit(repo, "Add many constants", {"consts.py": "".join(f"C{i} = {i}\n" for i in range(80))})
    commit(repo, "Add a broken function", {"broken.py": "import os\n\ndef broken(:\n    pass\n"})
    commit(repo, "Add below_zero", {"scores.py": "import os\n\n\n" + BENCHMARK_FUNCTION})
    commit(repo, "Update notes", {"notes.txt": "more notes\n"})
    commit(repo, "Add an entry to the changelog", {"CHANGELOG.md": "# Changes\n\n- things\n"})
    commit(repo, "Change the last value", {"big.py": big.replace("VALUE_349 = 349", "VALUE_349 = 0")})
    commit(repo, "Fix the greeting in a", {"a.py": GREETING.replace("helo", "hello")})
    commit(repo, "Fix the greeting in b", {"b.py": GREETING.replace("helo", "hello")})  # the same pair: duplicate
    commit(repo, "Handle an empty name", {"main.go": MAIN_GO.replace(
        '\treturn "Hello " + name', '\tif name == "" {\n\t\treturn "Hello"\n\t}\n\treturn "Hello " + name')})
    commit(repo, "docs: document the install step", {"README.md": README.replace("Run it.", "Run `pip install tool`.")})
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, "Add a sub function", {"util.js": UTIL_JS.replace(
        "module.exports = { add };", "function sub(a, b) {\n  return a - b;\n}\n\nmodule.exports = { add, sub };")})
    git(repo, "checkout", "-q", "main")
    commit(repo, "Use a template string in greet", {"main.go": MAIN_GO.replace("func main", "// main\nfunc main")})
    git(repo, "merge", "-q", "--no-ff", "side", "-m", "Merge branch side")
    git(repo, "revert", "--no-edit", "HEAD~1")
    return repo, benchmark_folder(base / "benchmarks")


def test_every_filter_counts_its_commit(history, tmp_path):
    repo, benchmarks = history
    out, examples = tmp_path / "triplets.jsonl", tmp_path / "examples.jsonl"
    card = build([repo], out, examples=examples, benchmarks=benchmarks, max_lines=300)
    stats = card["repositories"][0]
    assert stats["name"] == "tool" and stats["licence"] == "MIT" and len(stats["head"]) == 40
    assert stats["filtered"] == {"not one file": 1, "not imperative": 2, "release or version bump": 1,
                                 "format only": 1, "too many changed lines": 1, "syntax issues": 1,
                                 "benchmark function": 1, "language not validated": 1, "changelog": 1,
                                 "file too long": 1, "duplicate": 1, "merge commit": 1, "revert": 1}
    triplets = [Triplet(**json.loads(line)) for line in out.read_text().splitlines()]
    assert {(t.path, t.instruction, t.language) for t in triplets} == {
        ("app.py", "Fix off-by-one in count", "python"), ("main.go", "Handle an empty name", "go"),
        ("README.md", "Document the install step", "markdown"), ("util.js", "Add a sub function", "javascript"),
        ("main.go", "Use a template string in greet", "go"), ("b.py", "Fix the greeting in b", "python")}
    assert stats["commits_scanned"] == 20 and stats["triplets"] == 6 == card["totals"]["triplets"]
    assert card["decontamination"]["dropped"] == 1
    fix = next(t for t in triplets if t.path == "app.py")
    assert fix.before == APP and fix.after == APP.replace("len(items) - 1", "len(items)")
    assert fix.licence == "MIT" and fix.repo == "tool"
    rows = [json.loads(line) for line in examples.read_text().splitlines()]
    # Every format but a rule (no simple one says these changes) and excerpt (these files are short).
    assert card["examples"]["total"] == len(rows) and {row["format"] for row in rows} >= set(FORMATS) - {"rule", "excerpt"}
    assert "# Edit data" in edit_data.card_markdown(card)


def test_limit_per_repo_and_no_partial_output(history, tmp_path):
    repo, benchmarks = history
    card = build([repo], tmp_path / "t.jsonl", benchmarks=benchmarks, limit_per_repo=2)
    assert card["totals"]["triplets"] == 2 == len((tmp_path / "t.jsonl").read_text().splitlines())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.jsonl"]


def test_licences_are_recognised_and_others_refused(tmp_path, history):
    _, benchmarks = history
    for name, files, expected in (("mit", {"LICENSE": MIT}, "MIT"),
                                  ("dual", {"LICENSE-APACHE": "Apache License\n Version 2.0, January 2004\n",
                                            "LICENSE-MIT": MIT}, "Apache-2.0 OR MIT")):
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q")
        commit(repo, "Add licence", files)
        assert detect_licence(repo) == expected
    gpl = tmp_path / "gpl"
    gpl.mkdir()
    git(gpl, "init", "-q")
    commit(gpl, "Add licence", {"COPYING": GPL, "x.py": "x = 1\n"})
    with pytest.raises(EditDataError, match="no recognised permissive licence .*COPYING"):
        detect_licence(gpl)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["model", "edit-data", "--repos", str(tmp_path / "mit"), "--repos", str(gpl),
                                      "--out", str(out), "--benchmarks", str(benchmarks)])
    assert result.exit_code == 1 and "no recognised permissive licence" in " ".join(result.output.split())
    assert not out.exists()


def test_cli_writes_triplets_examples_and_card(history, tmp_path):
    repo, benchmarks = history
    paths = {name: tmp_path / name for name in ("t.jsonl", "e.jsonl", "card.json", "card.md")}
    result = CliRunner().invoke(app, ["model", "edit-data", "--repos", str(repo), "--out", str(paths["t.jsonl"]),
                                      "--examples", str(paths["e.jsonl"]), "--data-card", str(paths["card.json"]),
                                      "--data-card", str(paths["card.md"]), "--benchmarks", str(benchmarks)])
    assert result.exit_code == 0, result.output
    card = json.loads(paths["card.json"].read_text())
    assert card["totals"]["triplets"] == 6 and card["command"].startswith("edit model edit-data")
    assert "| tool | MIT |" in paths["card.md"].read_text()


@pytest.mark.parametrize("subject, instruction", [
    ("Fix off-by-one (#12)", "Fix off-by-one"),
    ("fix(ssr): normalize hidden states (#1, #2)", "Normalize hidden states"),
    ("docs: fix typo.", "Fix typo"), ("Only iterate once", "Only iterate once"), ("Don't panic", "Don't panic"),
    ("Fixed the bug", None), ("Adds a test", None), ("misc", None)])
def test_instructions_from_subject_lines(subject, instruction):
    assert instruction_of(subject) == instruction


# ---------------------------------------------------------------------------------------------
# Rendered examples

VARIED = [
    Triplet("r", "c", "src/app.py", "python", "MIT", "Use logger.info instead of print",
            'import logging\n\nlogger = logging.getLogger()\n\n\ndef run(job):\n    print("start", job)\n'
            '    job.start()\n    print("done")\n',
            'import logging\n\nlogger = logging.getLogger()\n\n\ndef run(job):\n    logger.info("start", job)\n'
            '    job.start()\n    logger.info("done")\n'),
    Triplet("r", "c", "lib/util.js", "javascript", "MIT", "Add a sub function", UTIL_JS,
            UTIL_JS.replace("module.exports = { add };",
                            "function sub(a, b) {\n  return a - b;\n}\n\nmodule.exports = { add, sub };")),
    Triplet("r", "c", "docs/README.md", "markdown", "MIT", "Document the install step", README,
            README.replace("Run it.", "Run `pip install tool`.\n\nThen run it.")),
    Triplet("r", "c", "main.go", "go", "MIT", "Handle an empty name", MAIN_GO,
            MAIN_GO.replace('\treturn "Hello " + name', '\tif name == "" {\n\t\treturn "Hello"\n\t}\n'
                                                          '\treturn "Hello " + name')),
    Triplet("r", "c", "src/lib.rs", "rust", "MIT", "Remove the unused helper",
            "fn helper() -> u8 {\n    1\n}\n\npub fn run() -> u8 {\n    2\n}\n", "pub fn run() -> u8 {\n    2\n}\n"),
]


@pytest.mark.parametrize("triplet", VARIED, ids=lambda t: t.language)
def test_every_rendered_example_applies_back_exactly(triplet):
    tally = Counter()
    examples = examples_for(triplet, tally)
    formats = {example.format for example in examples}
    assert formats >= {"block", "apply_patch", "udiff", "ot", "whole"}, tally
    for example in examples:
        name = Path(triplet.path).name
        assert applied(example.format, name, triplet.before, example.answer, triplet.language) == triplet.after
        assert admitted(example.format, name, triplet.before, example.answer, triplet.language)
        assert example.messages[-1]["role"] == "user" and triplet.instruction in example.messages[-1]["content"]
        assert f"{name}" in example.messages[-1]["content"] and example.path == triplet.path
    assert sum(tally.values()) == len(FORMATS)


def test_rule_only_where_one_pattern_says_the_whole_change():
    logging = VARIED[0]
    found = simple_rule(logging.before, logging.after, "python")
    assert found.rule == {"pattern": "print($$$ARGS)"} and found.fix == "logger.info($$$ARGS)"
    two_changes = logging.after.replace("job.start()", "job.begin()")
    assert simple_rule(logging.before, two_changes, "python") is None
    assert simple_rule(README, README.replace("A tool.", "A fine tool."), "markdown") is None


def test_an_answer_that_does_not_apply_back_or_the_grammar_refuses_is_caught():
    triplet = VARIED[1]
    assert applied("apply_patch", "util.js", triplet.before, "*** Begin Patch\n*** Update File: util.js\n@@\n"
                   "-  return a * b;\n+  return 0;\n*** End Patch\n", "javascript") is None
    # applies (the applier is lenient about the marker's padding) but the grammar writes no such line
    lenient = "*** Begin Patch\n*** Update File: util.js\n@@\n-  return a + b;\n+  return b + a;\n*** End Patch  \n"
    assert applied("apply_patch", "util.js", triplet.before, lenient, "javascript") is not None
    assert not admitted("apply_patch", "util.js", triplet.before, lenient, "javascript")


def test_grammar_admits_checks_the_whole_text():
    grammar = 'start: "a" NAME "\\n"\nNAME: /[a-z]+/'
    assert grammar_admits(grammar, "abc\n")
    assert grammar_admits(grammar, "abc")  # as decoded: an EOS stands for the last newline
    assert not grammar_admits(grammar, "a")  # unfinished
    assert not grammar_admits(grammar, "aBc\n")


# ---------------------------------------------------------------------------------------------
# The block builder


def _python_file(functions: list[tuple[str, int]], classes: int) -> str:
    parts = ["import os"]
    parts += [f"def {name}(x):\n    y = x + {value}\n    return y" for name, value in functions]
    parts += [f"class K{i}:\n    def a(self):\n        return {i}\n\n    def b(self):\n        return {i + 1}"
              for i in range(classes)]
    return "\n\n\n".join(parts) + "\n"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_block_edit_between_round_trips(data):
    names = data.draw(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=6, unique=True))
    functions = [(name, data.draw(st.integers(0, 3))) for name in names]
    classes = data.draw(st.integers(0, 2))
    before = _python_file(functions, classes)
    # Each function kept, changed, deleted, or followed by a new one; maybe a method changed.
    changed = []
    for name, value in functions:
        action = data.draw(st.sampled_from(["keep", "change", "delete", "insert"]))
        if action != "delete":
            changed.append((name, value + 1 if action == "change" else value))
        if action == "insert":
            changed.append((name.upper(), 9))
    after = _python_file(changed, classes)
    if classes and data.draw(st.booleans()):
        after = after.replace("return 0\n", "return -1\n", 1)
    if after == before:
        return
    edit = block.edit_between(before, after, "m.py")
    assert block.apply_text(before, edit, "m.py") == after
    assert block.parse(block.render(edit)) == edit


def test_block_edit_between_prefers_the_smallest_units():
    before = _python_file([("a", 1), ("b", 2)], 1)
    after = before.replace("return 1\n", "return 7\n")  # the body of K0.b
    assert block.edit_between(before, after, "m.py").ops == (
        block.Op("replace", "def b(self):", ("    def b(self):", "        return 7")),)
    inserted = _python_file([("a", 1), ("c", 0), ("b", 2)], 0)
    assert [op.kind for op in block.edit_between(_python_file([("a", 1), ("b", 2)], 0), inserted, "m.py").ops] \
        == ["insert"]
    deleted = _python_file([("b", 2)], 0)
    assert block.edit_between(_python_file([("a", 1), ("b", 2)], 0), deleted, "m.py").ops == (
        block.Op("delete", "def a(x):"),)
    with pytest.raises(ValueError, match="nothing to edit"):
        block.edit_between(before, before, "m.py")


def test_a_long_files_examples_show_the_excerpt_the_editor_shows():
    from tests.test_focus import LONG

    after = LONG.replace("3.14", "math.pi")
    triplet = Triplet("r", "c", "src/shapes.py", "python", "MIT", "Use math.pi in area", LONG, after)
    tally = Counter()
    examples = {example.format: example for example in examples_for(triplet, tally)}
    assert {"apply_patch", "udiff", "ot", "block", "excerpt", "whole"} <= set(examples)
    for fmt, example in examples.items():
        shown = example.messages[-1]["content"]
        assert "def area(radius):" in shown
        assert ("def helper_alpha" in shown) == (fmt in ("whole", "rule"))  # they show the file; others, the excerpt
    excerpt = examples["excerpt"]
    assert "math.pi * radius" in excerpt.answer and "helper_alpha" not in excerpt.answer
    left_out = Triplet("r", "c", "src/shapes.py", "python", "MIT", "Use math.pi in area", LONG,
                       after.replace("def helper_alpha", "def helper_one"))
    examples_for(left_out, tally)
    assert tally["block: change outside the excerpt"] == 1 and tally["whole: kept"] == 2
