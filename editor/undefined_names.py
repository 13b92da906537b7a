"""Names a model's edit of Python code reads but the file defines nowhere: the import it forgot.

The 1.5B wrote `-> Tuple[List[int], List[Any]]` into a file importing only `List, Any` (EditEval/20, short and long),
`float64` without numpy's import, `@dataclass` after rewriting the import away: each passed validation (the syntax
is fine) and failed its tests on a NameError. The Editor rejects such an edit as it rejects a new syntax error, so it
is decoded again from its least sure tokens. Model-facing only: `edit apply` takes a person's edit as it is.

Deliberately coarse, so that it never blames a name that exists: a name counts as defined if anything in the file
binds it anywhere (any scope), or it is a builtin; a file with a star import is not checked; only names the old
file did not already leave undefined are the edit's.
"""

from __future__ import annotations

import ast
import builtins

# Module attributes Python defines in every module, readable as plain names.
MODULE_NAMES = {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__path__",
                "__builtins__", "__annotations__", "__dict__", "__class__", "__debug__"}


def new_undefined_names(old: str, new: str) -> dict[str, int]:
    """{name: first line it is read on in `new`} for the names `new` reads, defines nowhere and `old` did not
    already read undefined; {} where either text does not parse or has a star import."""
    before, after = undefined_names(old), undefined_names(new)
    if before is None or after is None:
        return {}
    return {name: line for name, line in after.items() if name not in before}


def undefined_names(text: str) -> dict[str, int] | None:
    """{name: first line} of the names `text` reads and binds nowhere (nor builtins); None where it does not parse
    or imports with `*`."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    bound = set(dir(builtins)) | MODULE_NAMES
    read: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                read[node.id] = min(node.lineno, read.get(node.id, node.lineno))
            else:
                bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        else:
            bound.update(_binds(node))
    return {name: line for name, line in sorted(read.items(), key=lambda item: item[1]) if name not in bound}


def _binds(node: ast.AST) -> list[str]:
    """The names a definition, parameter, handler or pattern binds (a Name's binding is its context)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
        return [node.name] if node.name else []
    if isinstance(node, ast.MatchMapping):
        return [node.rest] if node.rest else []
    return []
