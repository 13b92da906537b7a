"""The ast-grep rule format: parsing, fix filling, applying, rendering and its grammar."""

from __future__ import annotations

import dataclasses
import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ast_grep_py import SgRoot

from editor.errors import ApplyError, ParseError
from editor.files import MemoryFiles
from editor.formats import detect
from editor.formats import rule as fmt
from grammars import load as load_grammar


def rewrite(path: str, text: str, edit: str | fmt.RuleSet) -> str:
    """`text` (as file `path`) after applying `edit`; unchanged if nothing matched."""
    files = MemoryFiles({path: text})
    changes = fmt.apply(files, fmt.parse(edit) if isinstance(edit, str) else edit, target=path)
    files.commit(changes)
    return files.texts[path]


def assert_parses(text: str, language: str) -> None:
    """The rewritten code is valid: Python by compile(), others by tree-sitter (via ast-grep)."""
    if language == "python":
        compile(text, "<rewritten>", "exec")
        return
    root = SgRoot(text, language).root()
    assert not root.find(kind="ERROR"), text


PRINT_TO_LOGGER = """\
id: print-to-logger
language: python
rule:
  pattern: print($$$ARGS)
fix: logger.info($$$ARGS)
"""


# --- fix filling --------------------------------------------------------------------------------


def test_print_to_logger_rewrites_every_call():
    src = 'import logging\nprint("a")\nif x:\n    print(x, y)\n'
    out = rewrite("m.py", src, PRINT_TO_LOGGER)
    assert out == 'import logging\nlogger.info("a")\nif x:\n    logger.info(x, y)\n'
    assert_parses(out, "python")


def test_multiple_metavariable_keeps_commas_and_line_breaks_between_arguments():
    src = "def f():\n    print(a,\n          b,  # why\n          c)\n"
    out = rewrite("m.py", src, PRINT_TO_LOGGER)
    assert out == "def f():\n    logger.info(a,\n          b,  # why\n          c)\n"
    assert_parses(out, "python")


def test_empty_multiple_metavariable_fills_nothing():
    assert rewrite("m.py", "print()\n", PRINT_TO_LOGGER) == "logger.info()\n"


def test_multiline_fix_takes_the_indentation_of_the_match_inside_nested_blocks():
    edit = """\
id: guard
language: python
rule:
  pattern: print($A)
fix: |-
  if DEBUG:
      print($A)
"""
    src = ("class C:\n    def f(self):\n        for i in x:\n            print(i)\n"
           "        return 1\n")
    out = rewrite("m.py", src, edit)
    assert out == ("class C:\n    def f(self):\n        for i in x:\n            if DEBUG:\n"
                   "                print(i)\n        return 1\n")
    assert_parses(out, "python")


def test_multiline_capture_keeps_its_shape_where_the_template_puts_it():
    edit = """\
id: wrap
language: python
rule:
  pattern: foo($A)
fix: |-
  bar(
      $A,
  )
"""
    src = "if x:\n    foo([\n        1,\n        2,\n    ])\n"
    out = rewrite("m.py", src, edit)
    assert out == "if x:\n    bar(\n        [\n            1,\n            2,\n        ],\n    )\n"
    assert_parses(out, "python")


def test_multiline_string_content_is_not_reindented():
    edit = ('id: r\nlanguage: python\nrule:\n  pattern: foo($A)\n'
            'fix: |-\n  with ctx:\n      bar($A)\n')
    src = 'def f():\n    foo("""first\nsecond\n    third""")\n'
    out = rewrite("m.py", src, edit)
    # `second` sits left of the captured node's line: string content, kept byte for byte.
    # `third` is indented like code, so it moves with the capture (+4), as in ast-grep.
    assert out == 'def f():\n    with ctx:\n        bar("""first\nsecond\n        third""")\n'
    assert_parses(out, "python")


def test_non_ascii_before_a_match_does_not_shift_offsets():
    src = 's = "héllo → 世界 😀"\nprint(s)  # ünïcode\nt = "𝄞"; print(t)\n'
    out = rewrite("m.py", src, PRINT_TO_LOGGER)
    assert out == ('s = "héllo → 世界 😀"\nlogger.info(s)  # ünïcode\n'
                   't = "𝄞"; logger.info(t)\n')
    assert_parses(out, "python")


def test_crlf_file_keeps_crlf_in_a_multiline_fix():
    edit = ("id: r\nlanguage: python\nrule:\n  pattern: print($A)\n"
            "fix: |-\n  if DEBUG:\n      log($A)\n")
    out = rewrite("m.py", "x = 1\r\nprint(x)\r\n", edit)
    assert out == "x = 1\r\nif DEBUG:\r\n    log(x)\r\n"


def test_nested_matches_outermost_wins():
    out = rewrite("m.py", "print(print(1))\n", PRINT_TO_LOGGER)
    assert out == "logger.info(print(1))\n"


def test_overlapping_matches_from_two_rules_first_rule_wins_on_the_same_node():
    edit = """\
id: to-info
language: python
rule:
  pattern: print($A)
fix: info($A)
---
id: to-warn
language: python
rule:
  pattern: print($$$ARGS)
fix: warn($$$ARGS)
"""
    out = rewrite("m.py", "print(1)\nprint(1, 2)\n", edit)
    assert out == "info(1)\nwarn(1, 2)\n"


def test_file_without_matches_gives_no_change():
    files = MemoryFiles({"m.py": "x = 1\n"})
    assert fmt.apply(files, fmt.parse(PRINT_TO_LOGGER), target="m.py") == []


# --- rule keys ----------------------------------------------------------------------------------


def test_constraints_regex_on_a_metavariable():
    edit = """\
id: only-debug
language: python
rule:
  pattern: print($A)
constraints:
  A:
    regex: ^debug_
fix: log.debug($A)
"""
    out = rewrite("m.py", "print(debug_x)\nprint(y)\n", edit)
    assert out == "log.debug(debug_x)\nprint(y)\n"


def test_transform_substring_replace_and_convert():
    edit = """\
id: rename
language: python
rule:
  pattern: $F($ARG)
constraints:
  F:
    regex: ^get_
transform:
  BARE:
    substring:
      source: $F
      startChar: 4
  CAMEL:
    convert:
      source: $BARE
      toCase: camelCase
  DOTTED:
    replace:
      source: $ARG
      replace: _
      by: .
fix: "$CAMEL($DOTTED)  # was $F"
"""
    out = rewrite("m.py", "y = get_user_name(a_b_c)\n", edit)
    assert out == "y = userName(a.b.c)  # was get_user_name\n"


def test_transform_string_form():
    edit = """\
id: upper
language: python
rule:
  pattern: print($A)
transform:
  LOUD: convert($A, toCase=upperCase)
fix: print($LOUD)
"""
    assert rewrite("m.py", "print(quiet)\n", edit) == "print(QUIET)\n"


def test_multiline_transform_result_is_indented_like_the_template():
    edit = """\
id: t
language: python
rule:
  pattern: foo($A)
transform:
  B:
    replace:
      source: $A
      replace: x
      by: y
fix: |-
  bar(
      $B
  )
"""
    src = "def f():\n    foo([\n        x,\n    ])\n"
    out = rewrite("m.py", src, edit)
    assert out == "def f():\n    bar(\n        [\n            y,\n        ]\n    )\n"
    assert_parses(out, "python")


def test_relational_and_composite_rules():
    edit = """\
id: loop-prints
language: python
rule:
  all:
  - pattern: print($A)
  - inside:
      kind: for_statement
      stopBy: end
  - not:
      has:
        kind: string
        stopBy: end
  any:
  - pattern: print(i)
  - pattern: print(j)
fix: emit($A)
"""
    src = 'print(i)\nfor i in x:\n    print(i)\n    print(j)\n    print("s")\n    print(k)\n'
    out = rewrite("m.py", src, edit)
    assert out == 'print(i)\nfor i in x:\n    emit(i)\n    emit(j)\n    print("s")\n    print(k)\n'


def test_kind_rule_with_has_and_follows_a_pattern_object():
    edit = """\
id: k
language: python
rule:
  kind: return_statement
  has:
    kind: none
  follows:
    pattern:
      context: cleanup()
      selector: expression_statement
fix: return
"""
    src = "def f():\n    cleanup()\n    return None\n\ndef g():\n    return None\n"
    out = rewrite("m.py", src, edit)
    assert out == "def f():\n    cleanup()\n    return\n\ndef g():\n    return None\n"


def test_fix_config_expand_end_removes_the_trailing_comma():
    edit = """\
id: drop-debug-arg
language: javascript
rule:
  pattern: debug
  inside:
    kind: arguments
fix:
  template: ''
  expandEnd:
    regex: ','
"""
    out = rewrite("a.js", "call(debug, x);\n", edit)
    assert out == "call( x);\n"
    assert_parses(out, "javascript")


def test_fix_config_expand_start_searches_as_far_as_stop_by_allows():
    edit = """\
id: drop-last-arg
language: python
rule:
  pattern: debug
  inside:
    kind: argument_list
fix:
  template: ''
  expandStart:
    regex: ','
    stopBy: end
"""
    out = rewrite("m.py", "call(x, y, debug)\n", edit)
    assert out == "call(x, y)\n"
    assert_parses(out, "python")


def test_any_branch_that_did_not_capture_fills_empty():
    edit = """\
id: r
language: python
rule:
  any:
  - pattern: foo($A)
  - pattern: bar($B)
fix: baz($A$B)
"""
    assert rewrite("m.py", "foo(1)\nbar(2)\n", edit) == "baz(1)\nbaz(2)\n"


# --- languages ----------------------------------------------------------------------------------


def test_javascript_console_log():
    edit = ("id: js\nlanguage: javascript\nrule:\n  pattern: console.log($$$ARGS)\n"
            "fix: logger.log($$$ARGS)\n")
    src = "function f() {\n  console.log('a', {b: 1},\n    c);\n}\n"
    out = rewrite("app.js", src, edit)
    assert out == "function f() {\n  logger.log('a', {b: 1},\n    c);\n}\n"
    assert_parses(out, "javascript")


def test_rust_unwrap_to_expect_with_multiline_fix():
    edit = """\
id: unwrap
language: rust
rule:
  pattern: $E.unwrap()
fix: |-
  $E
      .expect("checked")
"""
    src = "fn main() {\n    let v = parse(s).unwrap();\n}\n"
    out = rewrite("src/main.rs", src, edit)
    assert out == 'fn main() {\n    let v = parse(s)\n        .expect("checked");\n}\n'
    assert_parses(out, "rust")


def test_go_tab_indentation_is_copied_into_a_multiline_fix():
    edit = """\
id: wrap-err
language: go
rule:
  pattern: return $E
  inside:
    kind: if_statement
    stopBy: end
fix: |-
  log.Print("failing")
  return $E
"""
    src = "package m\n\nfunc f() error {\n\tif bad {\n\t\treturn err\n\t}\n\treturn nil\n}\n"
    out = rewrite("m.go", src, edit)
    assert out == ("package m\n\nfunc f() error {\n\tif bad {\n\t\tlog.Print(\"failing\")\n"
                   "\t\treturn err\n\t}\n\treturn nil\n}\n")
    assert_parses(out, "go")


def test_single_and_multiple_spellings_fill_the_same_capture():
    edit = fmt.RuleSet((fmt.parse_oneline("f($FIRST, $$$REST) => g($$$FIRST | $REST)", "python"),))
    assert rewrite("m.py", "f(1, 2, 3)\n", edit) == "g(1 | 2, 3)\n"


def test_rule_only_touches_files_of_its_language():
    files = MemoryFiles({"a.py": "print(1)\n", "b.js": "print(1);\n", "c.txt": "print(1)\n"})
    changes = fmt.apply_to_paths(files, fmt.parse(PRINT_TO_LOGGER), ["a.py", "b.js", "c.txt"])
    assert [(c.path, c.new_text) for c in changes] == [("a.py", "logger.info(1)\n")]


def test_rule_without_language_takes_each_file_language():
    edit = fmt.parse("print($A) => log($A)")
    files = MemoryFiles({"a.py": "print(1)\n", "b.js": "print(2);\n", "c.txt": "print(3)\n"})
    changes = fmt.apply_to_paths(files, edit, ["a.py", "b.js", "c.txt"])
    assert {c.path: c.new_text for c in changes} == {"a.py": "log(1)\n", "b.js": "log(2);\n"}


def test_apply_to_a_file_of_another_language_is_refused():
    with pytest.raises(ApplyError, match="rules are for python, but this is a rust file") as err:
        fmt.apply(MemoryFiles({"x.rs": "fn f() {}\n"}), fmt.parse(PRINT_TO_LOGGER), target="x.rs")
    assert err.value.file == "x.rs"


def test_unknown_extension_takes_the_rule_language():
    assert rewrite("bin/tool", "print(1)\n", PRINT_TO_LOGGER) == "logger.info(1)\n"


def test_unknown_extension_and_no_rule_language_is_refused():
    edit = fmt.parse("print($A) => log($A)")
    with pytest.raises(ApplyError, match="cannot tell the file's language"):
        fmt.apply(MemoryFiles({"tool": "print(1)\n"}), edit, target="tool")


def test_languages_are_normalized_and_extensions_mapped():
    assert fmt.normalize_language("Py") == "python"
    assert fmt.normalize_language("golang") == "go"
    assert fmt.normalize_language("klingon") is None
    assert fmt.language_of("src/App.TSX") == "tsx"
    assert fmt.language_of("lib/a.rs") == "rust"
    assert fmt.language_of("README") is None


# --- forms --------------------------------------------------------------------------------------


def test_json_form_equals_yaml_form():
    as_json = json.dumps({"id": "print-to-logger", "language": "python",
                          "rule": {"pattern": "print($$$ARGS)"}, "fix": "logger.info($$$ARGS)"},
                         indent="\t")
    assert fmt.parse(as_json) == fmt.parse(PRINT_TO_LOGGER)
    listed = fmt.parse(json.dumps([json.loads(as_json), {**json.loads(as_json), "id": "two"}]))
    assert [r.id for r in listed.rules] == ["print-to-logger", "two"]


def test_oneline_form():
    rule = fmt.parse_oneline("print($A) => logger.info($A)", "python")
    assert rule == fmt.Rule(id="rule-1", language="python", rule={"pattern": "print($A)"},
                            fix="logger.info($A)")
    assert rewrite("m.py", "print(1)\n", fmt.RuleSet((rule,))) == "logger.info(1)\n"


def test_oneline_form_splits_at_the_top_level_arrow_only():
    rule = fmt.parse_oneline('$A.map(x => x + "=>") => $A.map(f)', "javascript")
    assert rule.rule == {"pattern": '$A.map(x => x + "=>")'} and rule.fix == "$A.map(f)"


def test_parse_of_oneline_leaves_the_language_to_the_file():
    edit = fmt.parse("print($A) => logger.info($A)")
    assert edit.rules[0].language is None
    assert rewrite("m.py", "print(1)\n", edit) == "logger.info(1)\n"


def test_several_rules_in_one_yaml_stream_apply_in_one_pass():
    edit = (PRINT_TO_LOGGER + "---\nid: eq-none\nlanguage: python\nrule:\n  pattern: $X == None\n"
            "fix: $X is None\n")
    out = rewrite("m.py", "if a == None:\n    print(a)\n", edit)
    assert out == "if a is None:\n    logger.info(a)\n"


# --- errors -------------------------------------------------------------------------------------


def test_unknown_metavariable_in_fix_is_refused_with_its_line():
    edit = "id: r\nlanguage: python\nrule:\n  pattern: print($A)\nfix: log($B)\n"
    with pytest.raises(ParseError, match=r"fix uses \$B, which rule 'r' does not capture "
                                         r"\(captured: \$A\)") as err:
        fmt.parse(edit)
    assert err.value.line == 5 and err.value.hunk == 1


def test_anonymous_metavariable_in_fix_is_refused():
    with pytest.raises(ParseError, match="capture nothing"):
        fmt.parse_oneline("print($_) => log($_)", "python")


def test_unknown_language_is_a_parse_error():
    with pytest.raises(ParseError, match="unknown language 'klingon'") as err:
        fmt.parse("id: r\nlanguage: klingon\nrule:\n  pattern: x\nfix: y\n")
    assert err.value.line == 2


def test_ast_grep_panic_becomes_an_apply_error():
    # ast-grep-py panics (pyo3 PanicException, a BaseException) on a language it does not know.
    with pytest.raises(ApplyError, match="ast-grep cannot parse 'klingon'"):
        fmt.rewrite("x", "klingon", [fmt.parse(PRINT_TO_LOGGER).rules[0]], "a.kl")


def test_bad_rule_key_is_reported_by_ast_grep_at_parse_time():
    with pytest.raises(ParseError, match="unknown field `patern`") as err:
        fmt.parse("id: r\nlanguage: python\nrule:\n  patern: x\nfix: y\n")
    assert err.value.line == 3
    assert "backtrace" not in str(err.value)


def test_bad_constraint_regex_is_reported_without_backtrace():
    edit = ("id: r\nlanguage: python\nrule:\n  pattern: f($A)\n"
            "constraints:\n  A:\n    regex: (\nfix: y\n")
    with pytest.raises(ParseError, match="unclosed group") as err:
        fmt.parse(edit)
    assert "Stack" not in str(err.value)


def test_bad_rule_without_language_fails_at_apply_naming_the_file():
    edit = fmt.parse("id: r\nrule:\n  patern: x\nfix: y\n")
    with pytest.raises(ApplyError, match="unknown field") as err:
        fmt.apply(MemoryFiles({"a.py": "x\n"}), edit, target="a.py")
    assert err.value.file == "a.py"


@pytest.mark.parametrize("text, message, line", [
    ("id: r\nlanguage: python\nfix: y\n", "missing `rule`", 1),
    ("id: r\nrule:\n  pattern: x\nrule:\n  kind: y\nfix: z\n", "duplicate key 'rule'", 4),
    ("id: r\nrule: [\n", "not valid YAML", 3),
    ("id: r\nrule:\n  pattern: x\nutils:\n  a: {kind: x}\nfix: y\n", "utility rules", 4),
    ("id: r\nrule:\n  pattern: x\nfixx: y\n", "unknown key 'fixx'", 4),
    ("- a\n- b\n", "must be a mapping", 1),
    ("{\"id\": 1,\n \"rule\": {}}", "`id` must be a non-empty string", None),
    ("{\"id\": \"r\",\n \"rule\": }", "not valid JSON", 2),
    ("id: r\nrule:\n  pattern: x\nfix:\n  - template: y\n", "list of fixes", 4),
    ("id: a\nrule:\n  pattern: x\n---\nid: a\nrule:\n  pattern: y\n", "duplicate rule id 'a'", 5),
    ("   \n", "empty rule edit", None),
])
def test_malformed_rules_are_parse_errors_naming_the_line(text, message, line):
    with pytest.raises(ParseError, match=re.escape(message)) as err:
        fmt.parse(text)
    assert err.value.line == line


ALIAS_BOMB = """\
id: bomb
language: python
rule:
  pattern: print($A)
  not:
    any: &e [&d {any: &c [&b {any: &a [{kind: x}, {kind: x}, {kind: x}, {kind: x}, {kind: x}]},
      *b, *b, *b, *b, *b, *b, *b, *b]}, *d, *d, *d, *d, *d, *d, *d, *d]
fix: x
"""


def nested_rule(levels: int) -> dict:
    inner = {"kind": "identifier"}
    for _ in range(levels):
        inner = {"not": inner}
    return {"id": "deep", "language": "python", "rule": {"pattern": "print($A)", "not": inner},
            "fix": "x"}


@pytest.mark.parametrize("text, message, line", [
    (ALIAS_BOMB, "anchors (&) and aliases (*) are not supported", 6),
    ("id: r\nrule: &r {pattern: x}\nfix: y\n", "anchors (&) and aliases (*)", 2),
    ("id: r\nrule: " + "{not: " * 60 + "{kind: x}" + "}" * 60 + "\nfix: y\n", "nested deeper than 50", 2),
    ("id: r\nrule: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 50", 2),
    (json.dumps(nested_rule(60)), "nested deeper than 50", None),
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 50", None),
])
def test_alias_bombs_and_deep_nesting_are_refused_at_once(text, message, line):
    started = time.monotonic()
    with pytest.raises(ParseError, match=re.escape(message)) as err:
        fmt.parse(text)
    assert time.monotonic() - started < 1
    assert err.value.line == line


def test_rules_nested_up_to_the_limit_still_parse():
    assert fmt.parse(json.dumps(nested_rule(fmt.MAX_NESTING - 4))).rules[0].id == "deep"


def test_rule_evaluation_past_the_time_limit_is_stopped_naming_the_file(monkeypatch):
    monkeypatch.setattr(fmt, "TIME_LIMIT", 0.5)
    has = {"kind": "identifier", "regex": "^never$"}
    for _ in range(3):  # each level multiplies the work by the nesting depth of the code
        has = {"has": {**has, "stopBy": "end"}}
    edit = fmt.RuleSet((fmt.Rule("slow", "python", has, fix="y"),))
    files = MemoryFiles({"a.py": "x = 1\n", "b.py": "x = " + "[" * 300 + "]" * 300 + "\n"})
    for run in (lambda: fmt.apply_to_paths(files, edit, ["a.py", "b.py"]),
                lambda: fmt.matches(files, edit, ["a.py", "b.py"])):
        started = time.monotonic()
        with pytest.raises(ApplyError, match=r"did not finish matching in 0.5 s") as err:
            run()
        assert time.monotonic() - started < 1.5
        assert err.value.file == "b.py"


def test_errors_raised_while_matching_come_back_from_the_worker():
    edit = fmt.parse("id: r\nrule:\n  patern: x\nfix: y\n")
    with pytest.raises(ApplyError, match="unknown field") as err:
        fmt.apply_to_paths(MemoryFiles({"a.py": "x\n"}), edit, ["a.py"])
    assert err.value.file == "a.py"


def test_apply_needs_a_target_and_a_fix():
    with pytest.raises(ApplyError, match="name the target file"):
        fmt.apply(MemoryFiles({}), fmt.parse(PRINT_TO_LOGGER))
    report_only = fmt.parse("id: r\nlanguage: python\nrule:\n  pattern: print($A)\n")
    with pytest.raises(ApplyError, match="no rule has a `fix`"):
        fmt.apply(MemoryFiles({"a.py": "print(1)\n"}), report_only, target="a.py")


def test_partial_apply_carries_the_files_rewritten_before_the_failure():
    files = MemoryFiles({"a.py": "print(1)\n"})  # b.py is missing
    with pytest.raises(ApplyError, match="file not found") as err:
        fmt.apply_to_paths(files, fmt.parse(PRINT_TO_LOGGER), ["a.py", "b.py"], partial=True)
    assert err.value.file == "b.py"
    assert [(c.path, c.new_text) for c in err.value.applied] == [("a.py", "logger.info(1)\n")]
    with pytest.raises(ApplyError) as err:
        fmt.apply_to_paths(files, fmt.parse(PRINT_TO_LOGGER), ["a.py", "b.py"])
    assert err.value.applied == []


# --- check mode ---------------------------------------------------------------------------------


def test_matches_reports_every_match_with_line_and_column_in_characters():
    edit = fmt.parse("id: p\nlanguage: python\nrule:\n  pattern: print($A)\n")  # no fix
    files = MemoryFiles({"a.py": 'x = "é😀"; print(x)\nprint(print(2))\n',
                         "b.rs": "fn f() {}\n"})
    assert fmt.matches(files, edit, ["a.py", "b.rs"]) == [
        fmt.Match("a.py", 1, 11, "p", "print(x)"),
        fmt.Match("a.py", 2, 1, "p", "print(print(2))"),
        fmt.Match("a.py", 2, 7, "p", "print(2)"),
    ]


# --- render, looks_like -------------------------------------------------------------------------


SAMPLES = [
    PRINT_TO_LOGGER,
    """\
id: nested
language: python
message: "prints inside loops: use the logger"
rule:
  pattern:
    context: |-
      class A:
          x = $A
    selector: expression_statement
  inside:
    kind: for_statement
    stopBy:
      kind: function_definition
  all:
  - kind: assignment
  - any:
    - pattern: $A = 1
    - not:
        regex: ^#
constraints:
  A:
    regex: ^[a-z]
transform:
  B:
    substring:
      source: $A
      startChar: 1
      endChar: -1
  C:
    convert:
      source: $A
      toCase: snakeCase
      separatedBy:
      - dash
      - caseChange
  D: replace($A, replace='a', by='b')
fix: |
  $A = ($B, $C, $D)
""",
    """\
id: js-item
language: javascript
rule:
  pattern: "$X: 1"
fix:
  template: "\\"quoted\\" \\u0007 ünï: $X"
  expandEnd:
    regex: ','
""",
    """\
id: multi
language: rust
rule:
  pattern: |-
    if $C {
        $$$BODY
    }
fix: |-
  if !$C {
      return;
  }

  $$$BODY
""",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_render_round_trips(text):
    edit = fmt.parse(text)
    assert fmt.parse(fmt.render(edit)) == edit
    assert fmt.render(fmt.parse(fmt.render(edit))) == fmt.render(edit)


def test_render_is_canonical_yaml_with_block_fixes():
    edit = fmt.RuleSet((fmt.parse_oneline('print($A) => logger.info("x: %s", $A)', "python"),))
    assert fmt.render(edit) == ('id: rule-1\nlanguage: python\nrule:\n  pattern: print($A)\n'
                                'fix: |-\n  logger.info("x: %s", $A)\n')


def test_render_of_several_rules_separates_them():
    edit = fmt.parse(SAMPLES[0] + "---\n" + SAMPLES[3])
    assert fmt.render(edit).count("\n---\n") == 1
    assert fmt.parse(fmt.render(edit)) == edit


def test_looks_like():
    assert fmt.looks_like(PRINT_TO_LOGGER)
    assert fmt.looks_like('{"id": "r", "rule": {"pattern": "x"}, "fix": "y"}')
    assert fmt.looks_like("print($A) => logger.info($A)")
    assert not fmt.looks_like("*** Begin Patch\n*** Update File: a.py\n")
    assert not fmt.looks_like("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    assert not fmt.looks_like("const f = (a) => a + 1;\nmore\n")
    assert detect(PRINT_TO_LOGGER) == "rule"


# --- grammar ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llg_tokenizer():
    """A tiny byte-level BPE: any text tokenizes, so the grammar alone decides."""
    llguidance_hf = pytest.importorskip("llguidance.hf")
    from transformers import PreTrainedTokenizerFast

    from tests.tiny_models import byte_bpe

    tokenizer = byte_bpe(SAMPLES, 320)
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")
    return llguidance_hf.from_tokenizer(hf)


def grammar_for(language: str) -> str:
    """The grammar as the decoding engine uses it: the LANGUAGE line pinned to one literal."""
    import llguidance

    text = load_grammar("rule")
    assert len(re.findall(r"^LANGUAGE:", text, re.M)) == 1
    return llguidance.LLMatcher.grammar_from_lark(
        re.sub(r"^LANGUAGE:.*$", f'LANGUAGE: "{language}"', text, flags=re.M))


def grammar_accepts(tokenizer, grammar: str, text: str) -> bool:
    import llguidance

    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(tokenizer.tokenize_str(text)) and matcher.is_accepting()


def test_grammar_compiles_without_warnings(llg_tokenizer):
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar_for("python"), llg_tokenizer)
    assert (is_error, messages) == (False, [])


@pytest.mark.parametrize("text", SAMPLES)
def test_grammar_accepts_rendered_rules(llg_tokenizer, text):
    edit = fmt.parse(text)
    language = edit.rules[0].language
    assert grammar_accepts(llg_tokenizer, grammar_for(language), fmt.render(edit))


def test_grammar_accepts_several_rules(llg_tokenizer):
    second = PRINT_TO_LOGGER.replace("id: print-to-logger", "id: again")
    rendered = fmt.render(fmt.parse(PRINT_TO_LOGGER + "---\n" + second))
    assert grammar_accepts(llg_tokenizer, grammar_for("python"), rendered)


@pytest.mark.parametrize("text", [
    PRINT_TO_LOGGER.replace("language: python", "language: rust"),  # not the pinned language
    PRINT_TO_LOGGER.replace("fix: logger.info($$$ARGS)\n", ""),  # no fix
    PRINT_TO_LOGGER.replace("  pattern", "   pattern"),  # off-grid indentation
    PRINT_TO_LOGGER.replace("fix: logger.info($$$ARGS)", "fix: |-\n   logger.info($$$ARGS)"),
    PRINT_TO_LOGGER.replace("pattern: print($$$ARGS)", "pattern: print(x): y"),  # `: ` in plain
])
def test_grammar_rejects(llg_tokenizer, text):
    assert not grammar_accepts(llg_tokenizer, grammar_for("python"), text)


no_metavariables = st.text(max_size=40).map(lambda text: text.replace("$", ""))


@settings(max_examples=60, deadline=None)
@given(rule_id=st.text(min_size=1, max_size=12).filter(str.strip), pattern=st.text(max_size=40),
       fix=no_metavariables, message=st.none() | st.text(max_size=20))
def test_any_strings_render_to_yaml_that_reads_back_and_fits_the_grammar(
        llg_tokenizer, rule_id, pattern, fix, message):
    rule = fmt.Rule(id=rule_id, language=None, rule={"pattern": pattern}, fix=fix,
                    message=message)
    assert fmt.parse(fmt.render(fmt.RuleSet((rule,)))) == fmt.RuleSet((rule,))
    with_language = fmt.RuleSet((dataclasses.replace(rule, language="python"),))
    assert grammar_accepts(llg_tokenizer, grammar_for("python"), fmt.render(with_language))


def test_render_plain_scalars_follow_the_grammar_terminal():
    grammar = load_grammar("rule")
    plain = re.search(r"^PLAIN: /(.*)/$", grammar, re.M).group(1)
    assert plain == fmt._PLAIN.pattern
