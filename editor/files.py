"""Files as the edit formats see them, and the one place that writes them.

Formats never touch the disk. They read `Document`s from a `Files` source (a `Workspace` rooted in a
folder, or `MemoryFiles` for the library and tests), stage their work in a `Staging`, and return
`FileChange`s. `Workspace.commit` then writes every change atomically, or none of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import signal
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Protocol

from .diffing import unified_diff
from .errors import ApplyError, EditError, UnreadableFileError, UnsafePathError

BOM = "\ufeff"

# The most bytes read from or written to one file: past it, a file is refused, never truncated.
MAX_FILE_BYTES = 64 * 1024 * 1024


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


def read_regular(path: str | os.PathLike, label: str, *, follow: bool = True) -> tuple[bytes, int]:
    """The bytes and permission bits of a regular file, for every reader of files to edit.

    Anything else is refused by type before it is read (a FIFO would block forever, a device
    could stream without end), and so is a file over MAX_FILE_BYTES. `follow`: False refuses a
    symlink in the last component. FileNotFoundError when there is nothing at `path`.
    """
    _check_regular(os.stat(path) if follow else os.lstat(path), label)
    # O_NONBLOCK: should a FIFO be swapped in after the check, opening it does not wait for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        _check_regular(st, label)
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableFileError(f"grew past the {MAX_FILE_BYTES}-byte limit while read", file=label)
    return data, stat.S_IMODE(st.st_mode)


def read_document(path: str | os.PathLike) -> Document:
    """A text file named by the user, outside any Workspace: a regular file only (`read_regular`), decoded."""
    label = str(path)
    return decode(read_regular(path, label)[0], label)


def _check_regular(st: os.stat_result, label: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a symbolic link"
                if stat.S_ISLNK(st.st_mode) else "not a regular file")
        raise UnreadableFileError(f"is {kind}; only regular files are read or written", file=label)
    if st.st_size > MAX_FILE_BYTES:
        raise UnreadableFileError(f"is {st.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit "
                                  "on files to edit", file=label)


def check_text(path: str, text: str) -> None:
    """Refuse new text that would make a file unreadable to the editor: NUL bytes, past the cap."""
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise EditError("the new text contains a NUL byte; refusing to write a binary file",
                        file=path, line=line)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise EditError(f"the new text is {size} bytes, over the {MAX_FILE_BYTES}-byte limit",
                        file=path)


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
        return unified_diff(old, new, a, b)  # in about linear time, however large the change




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
    if any(c in path for c in "\n\r\0"):
        raise UnsafePathError("file names with newlines, carriage returns or NUL are refused",
                              file=path)
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

    def commit(self, changes: Iterable[FileChange], *, force: bool = False) -> None:
        """`force` is taken as `Workspace.commit` takes it; nothing in memory is read-only."""
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
        check_text(path, text)
        self._original(path)
        self._current[path] = text

    def delete(self, path: str) -> None:
        path = normalize(path)
        self.read(path)
        self._current[path] = None

    def move(self, src: str, dest: str, text: str) -> None:
        src, dest = normalize(src), normalize(dest)
        check_text(dest, text)
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
    """Files under a root folder. Every path is confined to the root, symlinks included.

    Only regular files are read or written. A commit that was cut short (the process killed, the
    power lost) is rolled back from its journal by the next read or commit under the same root.
    """

    def __init__(self, root: str | os.PathLike = "."):
        self.root = Path(root).resolve()
        self._recovered = False

    def resolve(self, path: str) -> Path:
        rel = normalize(path)
        full = Path(os.path.realpath(self.root / rel))
        if full != self.root and self.root not in full.parents:
            raise UnsafePathError(f"leads out of the root {self.root} (through a symlink)", file=rel)
        return full

    def exists(self, path: str) -> bool:
        # Anything at the path counts, so reading a FIFO or a folder says what it is.
        return self.resolve(path).exists()

    def read(self, path: str) -> Document:
        rel = normalize(path)
        if not self._recovered:
            recover(self.root)
            self._recovered = True
        try:
            data, mode = read_regular(self.resolve(rel), rel, follow=False)
        except FileNotFoundError:
            raise ApplyError("file not found", file=rel) from None
        doc = decode(data, rel)
        return Document(doc.text, doc.bom, mode)

    def commit(self, changes: list[FileChange], *, force: bool = False) -> None:
        """Write all changes or none.

        Under a lock on each touched folder, every file must still be byte for byte what the
        change was computed from (else "changed since read"); a journal of the old bytes is made
        durable before the first rename; SIGINT and SIGTERM wait until the commit is whole.
        Read-only files are refused unless `force`.
        """
        recover(self.root)
        entries = self._plan(changes)
        made_dirs: list[Path] = []
        with _signals_deferred():
            try:
                for entry in entries:
                    if entry.data is not None:
                        made_dirs += _make_parents(entry.target.parent, self.root)
                with _locked({entry.target.parent for entry in entries}):
                    for entry in entries:
                        self._check_unchanged(entry, force)
                    _Commit(self.root, entries, made_dirs).run()
            except BaseException as exc:
                _remove_dirs(made_dirs)
                if isinstance(exc, OSError):
                    raise EditError(f"writing failed, every file restored: {exc}") from exc
                raise

    def _plan(self, changes: list[FileChange]) -> list[_Entry]:
        """What to write where, checked before anything is touched."""
        entries: list[_Entry] = []
        touched: set[Path] = set()
        for change in changes:
            for p in {change.path, change.dest}:
                full = self.resolve(p)
                if full in touched:  # two changes to one file: which wins would be an accident
                    raise EditError("changed twice in one commit", file=normalize(p))
                touched.add(full)
            old = change.old.encode() if change.old else None
            if change.new_text is None or change.move_to:
                self._refuse_symlink(change.path)
                entries.append(_Entry(normalize(change.path), self.resolve(change.path), old, None,
                                      self._mode_of(change)))
            if change.new_text is not None:
                check_text(change.dest, change.new_text)
                data = (change.old or Document("")).encode(change.new_text)
                entries.append(_Entry(normalize(change.dest), self.resolve(change.dest),
                                      None if change.move_to else old, data, self._mode_of(change)))
        return entries

    def _refuse_symlink(self, path: str) -> None:
        link = Path(os.path.realpath((self.root / normalize(path)).parent)) / PurePosixPath(path).name
        if link.is_symlink():
            raise EditError("is a symbolic link: deleting or moving it would act on the file it "
                            "points to; change the link itself by hand", file=normalize(path))

    def _check_unchanged(self, entry: _Entry, force: bool) -> None:
        try:
            current, mode = read_regular(entry.target, entry.rel, follow=False)
        except FileNotFoundError:
            current, mode = None, None
        if current != entry.old:
            state = "it is gone" if current is None else "it exists now" if entry.old is None else \
                "its bytes differ"
            raise EditError(f"changed since read ({state}); nothing written", file=entry.rel)
        if mode is not None and not mode & 0o222 and not force:
            raise EditError(f"is read-only (mode {mode:04o}); nothing written (force rewrites it)",
                            file=entry.rel)

    def _mode_of(self, change: FileChange) -> int | None:
        """The permission bits to write: the old file's (read now if the change did not carry them)."""
        if change.old is None:
            return None
        if change.old.mode is not None:
            return change.old.mode
        source = self.resolve(change.path)
        return stat.S_IMODE(source.stat().st_mode) if source.is_file() else None


@dataclass
class _Entry:
    """One file a commit touches: `old` the bytes it must hold now (None: absent), `data` what
    it gets (None: removed)."""

    rel: str
    target: Path
    old: bytes | None
    data: bytes | None
    mode: int | None = None
    temp: Path | None = None


class _Commit:
    """The renames of one commit, journaled so that a killed process can be rolled back."""

    def __init__(self, root: Path, entries: list[_Entry], made_dirs: list[Path]):
        self.root, self.entries, self.made_dirs = root, entries, made_dirs
        self.id = secrets.token_hex(6)
        for n, entry in enumerate(entries):
            # short: a name near the 255-byte limit must still be editable
            entry.temp = entry.target.parent / f".{self.id}.{n}.edit-tmp"

    def run(self) -> None:
        journal = _write_journal(self.root, self.id, self.entries, self.made_dirs)
        done: list[_Entry] = []
        try:
            for entry in self.entries:
                if entry.data is not None:
                    _write_file(entry.temp, entry.data, entry.mode)
            for entry in self.entries:
                if entry.data is None:
                    os.unlink(entry.target)
                else:
                    os.replace(entry.temp, entry.target)
                done.append(entry)
            _fsync_dirs({entry.target.parent for entry in done})
        except BaseException as exc:
            try:
                for entry in reversed(done):
                    _restore(entry)
                for entry in self.entries:
                    entry.temp.unlink(missing_ok=True)
                _fsync_dirs({entry.target.parent for entry in done})
            except OSError as undo:
                journal[0].close()  # unlocked, so that the next read or `edit recover` finishes it
                raise EditError(f"writing failed ({exc}), and so did undoing it ({undo}): run "
                                f"`edit recover --root {self.root}`") from exc
            _remove_journal(journal)
            raise
        _remove_journal(journal)


def _restore(entry: _Entry) -> None:
    """Put back the bytes `entry` had before its commit (or remove the file it created)."""
    if entry.old is None:
        entry.target.unlink(missing_ok=True)
    else:
        entry.temp.unlink(missing_ok=True)
        _write_file(entry.temp, entry.old, entry.mode)
        os.replace(entry.temp, entry.target)


# --- the journal --------------------------------------------------------------------------------
# `.edit-<id>.journal` in the root: one JSON line (each entry's path, temp name, mode, old size or
# null, sha256 of the new bytes or null), then the old bytes one after another. Its writer holds
# an flock on it until the commit is over, so a journal that can be locked belongs to a dead
# process: roll back every file that holds what that commit wrote, leave the rest alone.

JOURNAL_SUFFIX = ".journal"


def _write_journal(root: Path, commit_id: str, entries: list[_Entry], made_dirs: list[Path]):
    header = {"entries": [{"path": e.target.relative_to(root).as_posix(), "temp": e.temp.name,
                           "mode": e.mode,
                           "old": None if e.old is None else len(e.old),
                           "new": None if e.data is None else hashlib.sha256(e.data).hexdigest()}
                          for e in entries],
              "dirs": [d.relative_to(root).as_posix() for d in made_dirs]}
    final = root / f".edit-{commit_id}{JOURNAL_SUFFIX}"
    # written under a name recovery only deletes, and renamed once whole and locked
    fresh = final.with_name(final.name + ".new")
    fh = open(fresh, "xb")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(header).encode() + b"\n")
        for entry in entries:
            if entry.old is not None:
                fh.write(entry.old)
        fh.flush()
        os.fsync(fh.fileno())
        os.replace(fresh, final)
        _fsync_dirs([root])
    except BaseException:
        fh.close()
        fresh.unlink(missing_ok=True)
        raise
    return fh, final


def _remove_journal(journal) -> None:
    fh, path = journal
    path.unlink(missing_ok=True)
    _fsync_dirs([path.parent])  # a journal that came back after a power loss would undo this commit
    fh.close()


def recover(root: str | os.PathLike) -> list[str]:
    """Roll back the commits under `root` whose process died mid-way; what was done, one line each.

    Waits for commits still running (their journal is locked) to finish.
    """
    root = Path(root).resolve()
    report: list[str] = []
    try:
        names = sorted(n for n in os.listdir(root)
                       if n.startswith(".edit-") and n.endswith((JOURNAL_SUFFIX, JOURNAL_SUFFIX + ".new")))
    except OSError:
        return report
    for name in names:
        path = root / name
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            continue
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:
                    continue
            except FileNotFoundError:  # its commit finished while we waited
                continue
            if name.endswith(JOURNAL_SUFFIX):
                report += _roll_back(root, fh)
            path.unlink()
            _fsync_dirs([root])
    return report


def _roll_back(root: Path, fh) -> list[str]:
    header = json.loads(fh.readline())
    entries = []
    for item in header["entries"]:
        target = root / item["path"]
        old = None if item["old"] is None else fh.read(item["old"])
        entries.append((_Entry(item["path"], target, old, None, item["mode"],
                               target.parent / item["temp"]), item["new"]))
    report = []
    with _locked({entry.target.parent for entry, _ in entries if entry.target.parent.is_dir()}):
        for entry, new in entries:
            entry.temp.unlink(missing_ok=True)
            try:
                data = read_regular(entry.target, entry.rel, follow=False)[0]
                now = hashlib.sha256(data).hexdigest()
            except FileNotFoundError:
                now = None
            except EditError:  # no longer a regular file: not what the commit wrote
                continue
            if now == new:
                _restore(entry)
                report.append(f"{entry.rel}: restored as it was before an interrupted commit")
        _fsync_dirs({entry.target.parent for entry, _ in entries})
    _remove_dirs([root / d for d in header["dirs"]])
    return report


def sweep_temps(root: str | os.PathLike) -> list[str]:
    """Delete `*.edit-tmp` files under `root` that no commit is using (a commit holds the lock
    on a temp file's folder for as long as the temp file exists)."""
    removed = []
    root = Path(root).resolve()
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        temps = [n for n in names if n.endswith(".edit-tmp")]
        if not temps:
            continue
        with _locked({Path(folder)}):
            for name in temps:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(f"{path.relative_to(root).as_posix()}: removed a temp file "
                                   "left by an interrupted commit")
    return removed


@contextmanager
def _locked(folders: Iterable[Path]):
    """Exclusive flocks on folders, taken in sorted order so that two writers never deadlock.
    Locking the real folder (not the root) serialises writers whose roots differ."""
    fds = []
    try:
        for folder in sorted(set(folders)):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)



def replace_text(path: Path, text: str) -> None:
    """Write one of the tool's own files (a results file, a cache entry) whole or not at all: a temporary file
    beside it, then a rename, so a stopped run leaves the last complete one. User files go through
    `Workspace.commit`."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)

@contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM take effect once the commit is whole (written or rolled back).
    Python runs signal handlers in the main thread only, so elsewhere there is nothing to defer:
    an exception there still rolls back, and a kill is undone by the journal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: caught.append(sig))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])


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


def _remove_dirs(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty: something else was put there meanwhile
            pass


def _write_file(path: Path, data: bytes, mode: int | None) -> None:
    """Create `path` (it must not exist) holding `data`, synced to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, mode if mode is not None else 0o666 & ~_umask())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


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
