"""A model's rewrite of Python code keeps the docstrings it left out (editor/docstrings.py)."""

from __future__ import annotations

import ast

from editor.docstrings import docstrings_kept

OLD = '''import math


def area(radius):
    """The area of a circle.

    >>> area(1.0)
    3.14...
    """
    return math.pi * radius * radius


class Shape:
    """A shape."""

    @property
    def name(self):
        \'\'\'Its name.\'\'\'
        return "shape"

    def sides(self):
        def count():
            "Counted."
            return 0
        return count()
'''


def test_a_left_out_docstring_is_put_back_where_the_definition_stays():
    new = OLD.replace('''    """The area of a circle.

    >>> area(1.0)
    3.14...
    """
''', "").replace("radius * radius", "radius ** 2")
    assert docstrings_kept(OLD, new) == OLD.replace("radius * radius", "radius ** 2")
    # A method, under its decorator; a nested function; a class: each by its path of names.
    new = OLD.replace("        '''Its name.'''\n", "").replace('            "Counted."\n', "").replace('    """A shape."""\n', "")
    kept = docstrings_kept(OLD, new)
    assert kept == OLD.replace('    """A shape."""\n\n    @property', '\n    """A shape."""\n    @property')  # above the decorator
    assert [ast.get_docstring(node) for node in ast.walk(ast.parse(kept))
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))] == \
        ["The area of a circle.\n\n>>> area(1.0)\n3.14...", "A shape.", "Its name.", None, "Counted."]


def test_a_rewritten_docstring_or_a_new_definition_is_left_as_written():
    changed = OLD.replace("The area of a circle.", "Area.")
    assert docstrings_kept(OLD, changed) == changed
    renamed = OLD.replace("def area(radius):", "def circle_area(radius):").replace('''    """The area of a circle.

    >>> area(1.0)
    3.14...
    """
''', "")
    assert docstrings_kept(OLD, renamed) == renamed  # not the same definition


def test_the_docstring_takes_the_new_indentation_and_a_body_on_the_def_line_gets_none():
    old = 'def f(x):\n    """Double x."""\n    return 2 * x\n'
    assert docstrings_kept(old, "class A:\n    def f(x):\n        return 3 * x\n") == \
        "class A:\n    def f(x):\n        return 3 * x\n"  # another path: A.f is not f
    assert docstrings_kept(old, "if True:\n  def f(x):\n    return 3 * x\n") == \
        'if True:\n  def f(x):\n    """Double x."""\n    return 3 * x\n'
    assert docstrings_kept(old, "def f(x): return 3 * x\n") == "def f(x): return 3 * x\n"
    # A first statement under decorators: the docstring goes above them.
    assert docstrings_kept(old, "def f(x):\n    @cache\n    def g():\n        pass\n    return g\n") == \
        'def f(x):\n    """Double x."""\n    @cache\n    def g():\n        pass\n    return g\n'


def test_nothing_is_put_back_where_the_instruction_is_about_documentation_or_a_text_does_not_parse():
    old = 'def f(x):\n    """Double x."""\n    return 2 * x\n'
    bare = "def f(x):\n    return 2 * x\n"
    assert docstrings_kept(old, bare, "Remove the docstrings.") == bare
    assert docstrings_kept(old, bare, "Drop the comments and documentation.") == bare
    assert docstrings_kept(old, "def f(x):\n  return (\n") == "def f(x):\n  return (\n"
    assert docstrings_kept("def f(:\n", bare) == bare
    # A docstring that shares its line with code is not copied with it.
    assert docstrings_kept('def f(x):\n    "Double x."; y = 1\n    return 2 * x\n', bare) == bare
