"""Errors that name what went wrong and where: the file, the line, the hunk.

Every failure a user can cause is an `EditError`; the CLI turns one into a message and exit code 1
(rejected: nothing written) without a traceback.
"""

from __future__ import annotations


class EditError(Exception):
    """A rejected edit. `file`, `line` (1-based) and `hunk` (1-based) locate it when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 hunk: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.hunk = hunk

    def location(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file + (f":{self.line}" if self.line else ""))
        elif self.line:
            parts.append(f"line {self.line}")
        if self.hunk:
            parts.append(f"hunk {self.hunk}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.message}" if where else self.message

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "hunk": self.hunk, "message": self.message}


class ParseError(EditError):
    """The edit text is not well-formed in its format."""


class ApplyError(EditError):
    """The edit is well-formed but does not fit the files (context not found, count past the end...).

    `applied` holds the changes that succeeded before the failure, in order: `--partial` commits them
    (codex's behaviour); the default commits nothing.
    """

    def __init__(self, message: str, *, applied: list | None = None, **where):
        super().__init__(message, **where)
        self.applied = list(applied or [])


class ValidationError(EditError):
    """The edit applies but introduces new syntax errors."""

    def __init__(self, message: str, *, issues: list | None = None, **where):
        super().__init__(message, **where)
        self.issues = list(issues or [])


class NoChangeError(EditError):
    """The edit is well-formed and applies, but leaves the file as it was: a wrong edit, not a broken one."""


class StoppedError(EditError):
    """The model's output was cut off before it ended: it repeated itself, or it reached the output budget."""


class UnsafePathError(EditError):
    """A path that is absolute, climbs with `..`, or leads out of the root through a symlink."""


class UnreadableFileError(EditError):
    """A binary file (NUL bytes), one that is not valid UTF-8, not a regular file (a FIFO, a
    device, a folder), or over the size limit."""
