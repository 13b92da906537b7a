"""Apply an edit text to files: detect its format, parse, apply, validate, then commit all or nothing.

This is the library entry point behind `edit apply` (and anything else that applies model output):

    result = apply_edit(patch_text, root="repo")
    if not result.ok:
        for error in result.errors: print(error)

Nothing is written unless every changed file parses as well as it did before (or
`allow_syntax_errors`), and then every file is written atomically through `files.commit`.
`commit` is that last step alone (validate, then write all or nothing): every writer goes through it,
`edit FILE INSTRUCTION`, `edit rules` and the pre-commit hooks included.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from . import formats, validation
from .errors import ApplyError, EditError, ValidationError
from .files import FileChange, Files, MemoryFiles, Workspace, normalize

FORMATS = ("auto",) + formats.NAMES


@dataclass
class ApplyResult:
    """`ok`: applied with no error. `written`: `changes` were committed (also after a partial failure)."""

    ok: bool
    format: str | None = None
    edit: object | None = None  # the parsed edit
    changes: list[FileChange] = field(default_factory=list)
    reports: list[validation.Report] = field(default_factory=list)
    errors: list[EditError] = field(default_factory=list)
    written: bool = False


def apply_edit(edit_text: str, *, format: str = "auto", files: Files | None = None, root: str = ".",
               targets: Iterable[str] = (), partial: bool = False, allow_syntax_errors: bool = False,
               language: str | None = None, dry_run: bool = False, force: bool = False) -> ApplyResult:
    """Apply `edit_text` to `files` (default: a Workspace at `root`). Never raises for a bad edit.

    `targets` names the files a rule runs over (globs allowed), or the one file an OT edit, a
    single-file unified diff or a bare apply_patch body applies to. `partial`: when a hunk fails,
    still commit the changes before it (codex's behaviour) and report the failure. `force`:
    rewrite read-only files too.
    ValueError (a caller's mistake, not the edit's): unknown format or language, several targets
    for a format that takes one.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if language is not None:
        validation.canonical_language(language)
    targets = list(targets)
    files = Workspace(root) if files is None else files
    result = ApplyResult(ok=False)
    try:
        result.format = formats.detect(edit_text) if format == "auto" else format
        if result.format != "rule" and len(targets) > 1:
            raise ValueError(f"the {result.format} format applies to one target file, not {len(targets)}")
        module = formats.get(result.format)
        result.edit = module.parse(edit_text)
        result.changes = _apply(module, result.format, files, result.edit, targets, partial)
    except ApplyError as exc:
        if not partial:
            return _fail(result, [exc])
        result.changes, result.errors = list(exc.applied), [exc]
    except EditError as exc:
        return _fail(result, [exc])
    except OSError as exc:  # a file that exists but cannot be read (permissions, a folder...)
        return _fail(result, [EditError(f"cannot read: {exc.strerror or exc}", file=exc.filename)])

    result.reports, new_errors = syntax_errors(result.changes, language)
    if new_errors and not allow_syntax_errors:
        return _fail(result, result.errors + new_errors)

    if not dry_run and result.changes:
        write_errors = write(files, result.changes, force=force)
        if write_errors:
            return _fail(result, result.errors + write_errors)
        result.written = True
    result.ok = not result.errors
    return result


def syntax_errors(changes: Iterable[FileChange], language: str | None = None
                  ) -> tuple[list[validation.Report], list[ValidationError]]:
    """Each changed file's validation report, and an error for every syntax error the change adds."""
    reports = [validation.check(change.dest, change.old.text if change.old else "", change.new_text, language)
               for change in changes if change.new_text is not None]
    errors = [ValidationError(f"new syntax error at column {issue.column}: {issue.describe()}",
                              file=report.path, line=issue.line, issues=[issue])
              for report in reports for issue in report.new_issues]
    return reports, errors


def write(files: Files, changes: list[FileChange], *, force: bool = False) -> list[EditError]:
    """Write `changes` all or none (`force`: read-only files too); the error when nothing could be written."""
    try:
        files.commit(changes, force=force)
    except EditError as exc:
        return [exc]
    return []


def commit(files: Files, changes: list[FileChange], *, language: str | None = None,
           allow_syntax_errors: bool = False, force: bool = False) -> list[EditError]:
    """Validate `changes`, then write them all or none: the errors (then nothing was written)."""
    errors = [] if allow_syntax_errors else syntax_errors(changes, language)[1]
    if errors or not changes:
        return errors
    return write(files, changes, force=force)


def write_proposal(path: str | os.PathLike, old_text: str, new_text: str, *,
                   language: str | None = None) -> list[EditError]:
    """Write a proposed edit of the file at `path` (validated, atomic), unless the file changed since the edit
    was proposed from `old_text`: the errors (then nothing was written)."""
    file = Path(path)
    workspace = Workspace(file.resolve().parent)
    old = workspace.read(file.name)
    if old.text != old_text:
        return [EditError("changed since read (while the edit was generated)", file=str(path))]
    return commit(workspace, [FileChange(file.name, old, new_text)], language=language)


def _fail(result: ApplyResult, errors: list[EditError]) -> ApplyResult:
    result.ok, result.written, result.errors = False, False, errors
    return result


def _apply(module, name: str, files: Files, edit, targets: list[str], partial: bool) -> list[FileChange]:
    # A rule over several files (or a glob) skips those in languages it is not for; one named
    # file goes through `apply`, which says why a rule does not fit it.
    if name == "rule" and (len(targets) > 1 or any(glob.has_magic(t) for t in targets)):
        return module.apply_to_paths(files, edit, expand_targets(files, targets), partial=partial)
    return module.apply(files, edit, target=targets[0] if targets else None, partial=partial)


def expand_targets(files: Files, patterns: Iterable[str]) -> list[str]:
    """Target paths with globs expanded (under a Workspace's root, or over MemoryFiles' names).

    A glob that matches no file is an error, so a typo does not silently apply to nothing.
    """
    paths: dict[str, None] = {}  # ordered, and a set: 100,000 names must not cost n**2
    for pattern in patterns:
        pattern = normalize(pattern)
        if not glob.has_magic(pattern):
            matches = [pattern]
        elif isinstance(files, Workspace):
            matches = sorted(p for p in _workspace_glob(files.root, pattern) if (files.root / p).is_file())
        elif isinstance(files, MemoryFiles):
            matches = sorted(p for p in files.texts if fnmatch.fnmatchcase(p, pattern))
        else:
            raise EditError("globs need a Workspace or MemoryFiles to expand over", file=pattern)
        if not matches:
            raise EditError("no file matches this pattern", file=pattern)
        paths.update(dict.fromkeys(matches))
    return list(paths)


def _workspace_glob(root, pattern: str) -> list[str]:
    """glob.glob's matches under `root` ('/'-separated), except that `**` never descends into a
    symlinked folder: glob follows them, and a link to a parent makes it loop for ever."""
    if "**" not in pattern.split("/"):  # one level per part: no recursion to loop in
        return [p.replace(os.sep, "/") for p in glob.glob(pattern, root_dir=root, recursive=True)]
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    start = "/".join(parts[:fixed])
    hidden = any(part.startswith(".") for part in parts)
    found = []
    for folder, dirs, names in os.walk(os.path.join(root, start) if start else root):
        if not hidden:  # as glob: `*` and `**` skip names starting with '.'
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        found += [prefix + name for name in dirs + names if _glob_matches(parts, (prefix + name).split("/"))]
    return found


def _glob_matches(parts: list[str], names: list[str]) -> bool:
    """glob.glob's reading of a recursive pattern, one path component at a time: `**` is any number of
    folders (none included; at the end, one name at least), other parts match one name as fnmatch does,
    and no magic matches a name with a leading '.'."""
    if not parts:
        return not names
    if parts == ["**"]:
        return bool(names) and not any(name.startswith(".") for name in names)
    if parts[0] == "**":
        return _glob_matches(parts[1:], names) or (
            bool(names) and not names[0].startswith(".") and _glob_matches(parts, names[1:]))
    return (bool(names) and (parts[0].startswith(".") or not names[0].startswith("."))
            and fnmatch.fnmatchcase(names[0], parts[0]) and _glob_matches(parts[1:], names[1:]))
