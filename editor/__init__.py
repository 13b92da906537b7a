"""Structured edits for code and text.

    from editor import Editor, apply, validate

    Editor(model="default").edit("app.py", "Rename load to load_config")  # -> EditResult
    apply(patch_text, root="repo")                                        # -> ApplyResult, no model
    validate(["app.py"])                                                  # -> {path: [SyntaxIssue]}

`Editor` loads torch and transformers on first use; `apply` and `validate` never do.
See docs/API.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import ApplyError, EditError, ParseError, UnreadableFileError, UnsafePathError, ValidationError

if TYPE_CHECKING:
    from .applying import ApplyResult
    from .propose import Editor, EditResult
    from .validation import SyntaxIssue

__all__ = ["Editor", "EditResult", "apply", "validate", "EditError", "ParseError", "ApplyError",
           "ValidationError", "UnsafePathError", "UnreadableFileError"]


def __getattr__(name: str):
    # Editor pulls in torch; import it only when asked for.
    if name in ("Editor", "EditResult"):
        from . import propose

        return getattr(propose, name)
    raise AttributeError(f"module 'editor' has no attribute {name!r}")


def apply(edit_text: str, **options) -> ApplyResult:
    """Parse, apply, validate and atomically write an edit; see `editor.applying.apply_edit` for the
    options (format, root, targets, partial, allow_syntax_errors, language, dry_run, files)."""
    from .applying import apply_edit

    return apply_edit(edit_text, **options)


def validate(paths: Iterable[str | Path], *, language: str | None = None) -> dict[str, list[SyntaxIssue]]:
    """The syntax errors (tree-sitter ERROR and MISSING nodes) of each file; files of an unknown
    language map to an empty list (nothing to check)."""
    from .files import read_document
    from .validation import syntax_issues

    found = {}
    for path in map(str, paths):
        text = read_document(path).text
        found[path] = syntax_issues(path, text, language)[1]
    return found
