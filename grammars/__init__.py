"""Lark grammars, one per edit format, shipped inside the package."""

from __future__ import annotations

from importlib.resources import files


def load(name: str) -> str:
    """The text of `grammars/<name>.lark`."""
    return files(__name__).joinpath(f"{name}.lark").read_text(encoding="utf-8")
