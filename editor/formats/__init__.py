"""The edit formats. Each module has the same small surface:

    parse(text: str) -> Edit                       # raises ParseError naming the line
    render(edit) -> str                            # parse(render(e)) == e
    apply(files: Files, edit, *, target=None, partial=False) -> list[FileChange]
                                                   # raises ApplyError; never writes to disk
    looks_like(text: str) -> bool                  # for `--format auto`

A new format is one module here, one grammar in grammars/ and one prompt in prompts/.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from ..errors import ParseError

NAMES = ("apply_patch", "udiff", "ot", "rule", "block")


def get(name: str) -> ModuleType:
    if name not in NAMES:
        raise ParseError(f"unknown format {name!r}; choose one of {', '.join(NAMES)}")
    return import_module(f"{__name__}.{name}")


def detect(text: str) -> str:
    """The format an edit text is written in (the first whose `looks_like` accepts it)."""
    for name in NAMES:
        if get(name).looks_like(text):
            return name
    raise ParseError("cannot tell the edit's format; name it with --format "
                     f"({', '.join(NAMES)})")
