"""Names a model's edit reads but the file defines nowhere (editor/undefined_names.py)."""

from __future__ import annotations

from editor.undefined_names import new_undefined_names, undefined_names

OLD = '''from typing import Any, List
import os.path as osp


def filter_integers(values: List[Any]) -> List[int]:
    return [x for x in values if isinstance(x, int)]
'''


def test_a_name_the_edit_reads_and_nothing_binds_is_reported_with_its_line():
    new = OLD.replace("-> List[int]:", "-> Tuple[List[int], List[Any]]:")
    assert new_undefined_names(OLD, new) == {"Tuple": 5}
    assert new_undefined_names(OLD, "from typing import Tuple\n" + new) == {}
    assert new_undefined_names(OLD, new.replace("return [", "return float64(1), [")) == {"Tuple": 5, "float64": 6}


def test_anything_bound_anywhere_or_built_in_counts_as_defined():
    code = '''import os.path
from a import b as c
CONST = 1


class K:
    def m(self, arg, *rest, key=None, **more):
        global G
        G = [y for y in rest if (z := y)]
        try:
            with open(__file__) as handle:
                pass
        except OSError as problem:
            raise problem
        match arg:
            case {"k": kv, **others}:
                return kv, others
            case [first, *tail]:
                return first, tail
        for i, (j, k) in enumerate(more):
            del i
        return os.path.join, c, CONST, K, len, print, z, handle, key, j, k, __name__, nested


def nested():
    return lambda q: q
'''
    assert undefined_names(code) == {}
    assert new_undefined_names(code, code.replace("return lambda q: q", "return lambda q: q + r")) == {"r": 26}


def test_names_the_old_file_already_missed_and_files_it_cannot_judge_are_not_the_edits():
    old = "def f():\n    return helper()\n"
    assert new_undefined_names(old, "def f():\n    return helper() + 1\n") == {}  # helper was missing before
    assert new_undefined_names("from m import *\n", "from m import *\nx = thing\n") == {}
    assert new_undefined_names(old, "def f(:\n") == {}
    assert new_undefined_names("def f(:\n", "x = thing\n") == {}
    # A string annotation is not read: no NameError until something evaluates it.
    assert new_undefined_names("x = 1\n", "def f(a: 'Tuple') -> None:\n    pass\n") == {}
