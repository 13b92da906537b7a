"""Files as the edit formats see them, and the one place that writes them.

Formats never touch the disk. They read `Document`s from a `Files` source (a `Workspace` rooted in a
folder, or `MemoryFiles` for the library and tests), stage their work in a `Staging`, and return
`FileChange`s. `Workspace.commit` then writes every change atomically, or none of them.
"""

from __future__ import annotations

import difflib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Protocol

from .errors import ApplyError, EditError, UnreadableFileError, UnsafePathError

BOM = "\ufeff"


@dataclass(frozen=True)
class Document:
    """A text file: `text` without its BOM, line endings exactly as stored."""

    text: str
    bom: bool = False
    mode: int | None = None  # permission bits of a file on disk; kept when it is rewritten

    def encode(self, text: str | None = None) -> bytes:
        return ((BOM if self.bom else "") + (self.text if text is None else text)).encode("utf-8")


def decode(data: bytes, path: str) -> Document:
    """Bytes -> Document; refuses binary files and invalid UTF-8, naming the line."""
    if b"\0" in data:
        raise UnreadableFileError("binary file (contains NUL bytes); refusing to edit it", file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UnreadableFileError(f"not valid UTF-8 (byte {exc.start}): refusing to edit it",
                                  file=path, line=line) from None
    if text.startswith(BOM):
        return Document(text[1:], bom=True)
    return Document(text)


def newline_of(text: str) -> str:
    """The file's line ending: CRLF when its first line ends so, else LF."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


@dataclass(frozen=True)
class FileChange:
    """One file's change. `old` None: created; `new_text` None: deleted; `move_to`: renamed."""

    path: str
    old: Document | None
    new_text: str | None
    move_to: str | None = None

    @property
    def status(self) -> str:
        if self.old is None:
            return "added"
        if self.new_text is None:
            return "deleted"
        return "renamed" if self.move_to else "modified"

    @property
    def dest(self) -> str:
        return self.move_to or self.path

    def diff(self) -> str:
        old = self.old.text if self.old else ""
        new = self.new_text or ""
        a = "/dev/null" if self.old is None else "a/" + self.path
        b = "/dev/null" if self.new_text is None else "b/" + self.dest
        return unified_diff(old, new, a, b)


def unified_diff(old: str, new: str, a: str = "a", b: str = "b", context: int = 3) -> str:
    """A unified diff that marks a missing final newline the way GNU diff does."""
    out = []
    for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True), a, b, n=context):
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)


class Files(Protocol):
    def read(self, path: str) -> Document: ...
    def exists(self, path: str) -> bool: ...


def normalize(path: str) -> str:
    """A relative POSIX path with no `.` parts; refuses absolute paths and `..`."""
    if not path.strip():
        raise UnsafePathError("empty path", file=path)
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError("absolute paths are refused; give a path relative to the root", file=path)
    if ".." in p.parts:
        raise UnsafePathError("paths with '..' are refused", file=path)
    parts = [part for part in p.parts if part != "."]
    if not parts:
        raise UnsafePathError("path names no file", file=path)
    return "/".join(parts)


class MemoryFiles:
    """Files held in a dict {path: text}; `commit` updates the dict."""

    def __init__(self, texts: dict[str, str] | None = None):
        self.texts = dict(texts or {})

    def read(self, path: str) -> Document:
        path = normalize(path)
        if path not in self.texts:
            raise ApplyError("file not found", file=path)
        text = self.texts[path]
        return Document(text[1:], bom=True) if text.startswith(BOM) else Document(text)

    def exists(self, path: str) -> bool:
        return normalize(path) in self.texts

    def commit(self, changes: Iterable[FileChange]) -> None:
        for change in changes:
            self.texts.pop(change.path, None)
            if change.new_text is not None:
                self.texts[change.dest] = (BOM if change.old and change.old.bom else "") + change.new_text


class Staging:
    """Pending changes over a `Files` source: reads see earlier writes; `changes()` nets them out."""

    def __init__(self, base: Files):
        self.base = base
        self._originals: dict[str, Document | None] = {}  # path -> as in base (None: absent)
        self._current: dict[str, str | None] = {}  # path -> staged text (None: deleted)
        self._moves: dict[str, str] = {}  # destination -> source, for renames

    def _original(self, path: str) -> Document | None:
        if path not in self._originals:
            self._originals[path] = self.base.read(path) if self.base.exists(path) else None
        return self._originals[path]

    def exists(self, path: str) -> bool:
        path = normalize(path)
        if path in self._current:
            return self._current[path] is not None
        return self._original(path) is not None

    def read(self, path: str) -> Document:
        path = normalize(path)
        original = self._original(path)
        if path in self._current:
            text = self._current[path]
            if text is None:
                raise ApplyError("file not found (deleted earlier in this edit)", file=path)
            source = original or self._original(self._moves.get(path, path))
            return Document(text, bom=source.bom if source else False,
                            mode=source.mode if source else None)
        if original is None:
            raise ApplyError("file not found", file=path)
        return original

    def write(self, path: str, text: str) -> None:
        path = normalize(path)
        self._original(path)
        self._current[path] = text

    def delete(self, path: str) -> None:
        path = normalize(path)
        self.read(path)
        self._current[path] = None

    def move(self, src: str, dest: str, text: str) -> None:
        src, dest = normalize(src), normalize(dest)
        self.read(src)
        self._original(dest)
        if src != dest:
            self._current[src] = None
            self._moves[dest] = self._moves.pop(src, src)
        self._current[dest] = text

    def changes(self) -> list[FileChange]:
        """Net changes against the base, a rename as one change."""
        out: list[FileChange] = []
        renamed_sources = {src for dest, src in self._moves.items()
                           if src != dest and self._current.get(src, "") is None
                           and self._original(src) is not None and self._original(dest) is None}
        for path, text in self._current.items():
            original = self._originals[path]
            if path in renamed_sources:
                continue
            source = self._moves.get(path)
            if source in renamed_sources and text is not None:
                out.append(FileChange(source, self._originals[source], text, move_to=path))
                continue
            if original is None and text is None:
                continue
            if original is not None and text == original.text:
                continue
            out.append(FileChange(path, original, text))
        return out


class Workspace:
    """Files under a root folder. Every path is confined to the root, symlinks included."""

    def __init__(self, root: str | os.PathLike = "."):
        self.root = Path(root).resolve()
        self._raw: dict[str, bytes] = {}  # exact bytes read, to restore on rollback

    def resolve(self, path: str) -> Path:
        rel = normalize(path)
        full = Path(os.path.realpath(self.root / rel))
        if full != self.root and self.root not in full.parents:
            raise UnsafePathError(f"leads out of the root {self.root} (through a symlink)", file=rel)
        return full

    def exists(self, path: str) -> bool:
        return self.resolve(path).is_file()

    def read(self, path: str) -> Document:
        full = self.resolve(path)
        rel = normalize(path)
        if not full.is_file():
            raise ApplyError("file not found" if not full.exists() else "not a regular file", file=rel)
        data = full.read_bytes()
        self._raw[rel] = data
        doc = decode(data, rel)
        return Document(doc.text, doc.bom, stat.S_IMODE(full.stat().st_mode))

    def commit(self, changes: list[FileChange]) -> None:
        """Write all changes or none: stage temp files, then rename; undo on any failure."""
        plan = []  # (target path, bytes or None for delete, mode)
        touched: set[Path] = set()
        for change in changes:
            for p in {change.path, change.dest}:
                full = self.resolve(p)  # refuse before anything is written
                if full in touched:  # two changes to one file: which wins would be an accident
                    raise EditError("changed twice in one commit", file=normalize(p))
                touched.add(full)
            if change.new_text is not None:
                doc = change.old or Document("")
                plan.append((change.dest, doc.encode(change.new_text), self._mode_of(change)))
            if change.new_text is None or change.move_to:
                plan.append((change.path, None, None))
        temps: list[tuple[Path, Path]] = []
        made_dirs: list[Path] = []
        done: list[tuple[Path, bytes | None, int | None]] = []  # (target, bytes before, mode before)
        try:
            for rel, data, mode in plan:
                if data is None:
                    continue
                target = self.resolve(rel)
                made_dirs += _make_parents(target.parent, self.root)
                temps.append((_write_temp(target, data, mode), target))
            temp_for = {target: temp for temp, target in temps}
            for rel, data, _ in plan:
                target = self.resolve(rel)
                before = self._before(rel, target)
                if data is None:
                    if target in temp_for:  # deleted and re-created in the same edit
                        continue
                    os.unlink(target)
                else:
                    os.replace(temp_for.pop(target), target)
                done.append((target, *before))
            _fsync_dirs({t.parent for t, _, _ in done})
        except BaseException as exc:
            for target, data, mode in reversed(done):
                if data is None:
                    target.unlink(missing_ok=True)
                else:
                    os.replace(_write_temp(target, data, mode), target)
            for temp, _ in temps:
                temp.unlink(missing_ok=True)
            for d in reversed(made_dirs):
                try:
                    d.rmdir()
                except OSError:
                    pass
            if isinstance(exc, EditError):
                raise
            if isinstance(exc, OSError):
                raise EditError(f"writing failed, every file restored: {exc}") from exc
            raise

    def _mode_of(self, change: FileChange) -> int | None:
        """The permission bits to write: the old file's (read now if the change did not carry them)."""
        if change.old is None:
            return None
        if change.old.mode is not None:
            return change.old.mode
        source = self.resolve(change.path)
        return stat.S_IMODE(source.stat().st_mode) if source.is_file() else None

    def _before(self, rel: str, target: Path) -> tuple[bytes | None, int | None]:
        if not target.exists():
            return None, None
        data = self._raw.get(normalize(rel))
        if data is None:
            data = target.read_bytes()
        return data, stat.S_IMODE(target.stat().st_mode)


def _make_parents(folder: Path, root: Path) -> list[Path]:
    made = []
    missing = []
    while not folder.exists() and folder != root:
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir()
        made.append(d)
    return made


def _write_temp(target: Path, data: bytes, mode: int | None) -> Path:
    """Write data beside target (same filesystem, so the rename is atomic) and fsync it."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".edit-tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, mode if mode is not None else 0o666 & ~_umask())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dirs(folders: Iterable[Path]) -> None:
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
