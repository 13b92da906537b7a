"""Safety of editor/files.py: path confinement, atomic all-or-nothing commits, bytes kept as they were."""

from __future__ import annotations

import os
import stat

import pytest

from editor import files as files_module
from editor.applying import apply_edit
from editor.errors import ApplyError, EditError, UnreadableFileError, UnsafePathError
from editor.files import (Document, FileChange, MemoryFiles, Staging, Workspace, decode, newline_of,
                          normalize, unified_diff)


def snapshot(root):
    """Every path under root (folders too) -> bytes (None for a folder), links not followed."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = None
        for n in names:
            full = os.path.join(folder, n)
            out[os.path.relpath(full, root)] = (os.readlink(full) if os.path.islink(full)
                                                else open(full, "rb").read())
    return out


def temp_files(root):
    return [p for p in snapshot(root) if p.endswith(".edit-tmp")]


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "pkg" / "b.py").write_bytes(b"x = 1\n")
    (root / "c.txt").write_bytes(b"gamma\n")
    return root


def fail_replace_at(monkeypatch, call: int, error) -> None:
    """os.replace raises `error` on its `call`-th call (counting from 1) and renames as usual otherwise."""
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == call:
            raise error
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def modify(ws: Workspace, path: str, new_text: str) -> FileChange:
    return FileChange(path, ws.read(path), new_text)


# --- paths --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc/passwd", "C:/Windows/x", "\\abs\\x", "../x", "a/../../x",
                                  "pkg/../../x", "", "   ", "."])
def test_normalize_refuses_unsafe_paths(path):
    with pytest.raises(UnsafePathError) as info:
        normalize(path)
    assert info.value.file == path


def test_normalize_makes_relative_posix_paths():
    assert normalize("./pkg//b.py") == "pkg/b.py"
    assert normalize("pkg\\b.py") == "pkg/b.py"


@pytest.mark.parametrize("path", ["/etc/hostname", "../outside.txt", "pkg/../../outside.txt"])
def test_workspace_refuses_paths_outside_root(repo, path):
    (repo.parent / "outside.txt").write_text("secret\n")
    ws = Workspace(repo)
    with pytest.raises(UnsafePathError):
        ws.read(path)
    with pytest.raises(UnsafePathError):
        ws.exists(path)


def test_symlinked_file_leading_out_is_refused_before_anything_is_written(repo):
    outside = repo.parent / "outside.txt"
    outside.write_bytes(b"secret\n")
    (repo / "link.txt").symlink_to(outside)
    ws = Workspace(repo)
    with pytest.raises(UnsafePathError) as info:
        ws.read("link.txt")
    assert "out of the root" in info.value.message and info.value.file == "link.txt"
    before = snapshot(repo)
    # the unsafe change comes second: the first must not have been written either
    changes = [modify(ws, "a.txt", "changed\n"),
               FileChange("link.txt", Document("secret\n"), "pwned\n")]
    with pytest.raises(UnsafePathError):
        ws.commit(changes)
    assert snapshot(repo) == before
    assert outside.read_bytes() == b"secret\n"


def test_symlinked_folder_leading_out_is_refused_for_new_files(repo):
    outside = repo.parent / "elsewhere"
    outside.mkdir()
    (repo / "out").symlink_to(outside, target_is_directory=True)
    ws = Workspace(repo)
    with pytest.raises(UnsafePathError):
        ws.commit([modify(ws, "a.txt", "changed\n"), FileChange("out/new.txt", None, "x\n")])
    assert list(outside.iterdir()) == []
    assert (repo / "a.txt").read_bytes() == b"alpha\n"


def test_dangling_symlink_out_of_root_is_refused(repo):
    (repo / "dangling").symlink_to(repo.parent / "not-there.txt")
    ws = Workspace(repo)
    with pytest.raises(UnsafePathError):
        ws.commit([FileChange("dangling", None, "x\n")])
    assert not (repo.parent / "not-there.txt").exists()


def test_symlink_inside_root_is_written_through_and_stays_a_link(repo):
    (repo / "alias.txt").symlink_to("a.txt")
    ws = Workspace(repo)
    ws.commit([modify(ws, "alias.txt", "via alias\n")])
    assert (repo / "alias.txt").is_symlink()
    assert (repo / "a.txt").read_bytes() == b"via alias\n"


def test_unsafe_paths_in_an_edit_are_refused_by_apply_edit(repo):
    outside = repo.parent / "victim.py"
    outside.write_text("x = 1\n")
    patch = ("*** Begin Patch\n*** Update File: ../victim.py\n@@\n-x = 1\n+x = 2\n*** End Patch\n")
    result = apply_edit(patch, format="apply_patch", root=str(repo))
    assert not result.ok and not result.written
    assert isinstance(result.errors[0], UnsafePathError)
    assert outside.read_text() == "x = 1\n"


# --- atomic writes ------------------------------------------------------------------------------

def test_commit_writes_through_a_synced_temp_file_then_renames(repo, monkeypatch):
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((str(src), str(dst))),
                                                         real_replace(src, dst))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    ws = Workspace(repo)
    ws.commit([modify(ws, "pkg/b.py", "x = 2\n")])
    assert (repo / "pkg" / "b.py").read_bytes() == b"x = 2\n"
    journal, (src, dst) = replaced  # the journal is in place before the file is replaced
    assert journal[1].endswith(".journal") and not os.path.exists(journal[1])
    assert dst == str(repo / "pkg" / "b.py")
    assert os.path.dirname(src) == os.path.dirname(dst) and src.endswith(".edit-tmp")
    assert len(synced) >= 2  # the temp file, then its folder
    assert temp_files(repo) == []


def test_failure_midway_leaves_every_file_as_before(repo, monkeypatch):
    (repo / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (repo / "exec.sh").chmod(0o755)
    before = snapshot(repo)
    ws = Workspace(repo)
    changes = [
        modify(ws, "a.txt", "ALPHA\n"),
        FileChange("new/deep/file.txt", None, "created\n"),
        modify(ws, "exec.sh", "#!/bin/sh\necho bye\n"),
        FileChange("c.txt", ws.read("c.txt"), None),
        FileChange("pkg/b.py", ws.read("pkg/b.py"), "x = 1\n", move_to="moved/b.py"),
    ]
    fail_replace_at(monkeypatch, 2, OSError(28, "No space left on device"))

    with pytest.raises(EditError) as info:
        ws.commit(changes)
    assert "restored" in info.value.message and "No space left" in info.value.message
    assert snapshot(repo) == before  # byte-identical, created folders gone, no temp files left
    assert stat.S_IMODE((repo / "exec.sh").stat().st_mode) == 0o755


@pytest.mark.parametrize("fail_at", [1, 3, 4])
def test_failure_at_any_rename_rolls_back(repo, monkeypatch, fail_at):
    before = snapshot(repo)
    ws = Workspace(repo)
    changes = [modify(ws, "a.txt", "1\n"), modify(ws, "c.txt", "3\n"),
               FileChange("d/new.txt", None, "new\n"), modify(ws, "pkg/b.py", "x = 9\n")]
    fail_replace_at(monkeypatch, fail_at, OSError(5, "I/O error"))

    with pytest.raises(EditError):
        ws.commit(changes)
    assert snapshot(repo) == before


def test_failure_while_writing_temp_files_leaves_nothing_behind(repo, monkeypatch):
    before = snapshot(repo)
    ws = Workspace(repo)
    changes = [modify(ws, "a.txt", "1\n"), FileChange("n/x.txt", None, "x\n")]

    def failing_fsync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(EditError):
        ws.commit(changes)
    assert snapshot(repo) == before


def test_keyboard_interrupt_midway_also_rolls_back(repo, monkeypatch):
    before = snapshot(repo)
    ws = Workspace(repo)
    fail_replace_at(monkeypatch, 2, KeyboardInterrupt)

    with pytest.raises(KeyboardInterrupt):
        ws.commit([modify(ws, "a.txt", "1\n"), modify(ws, "c.txt", "3\n")])
    assert snapshot(repo) == before


def test_a_path_changed_twice_in_one_commit_is_refused(repo):
    ws = Workspace(repo)
    before = snapshot(repo)
    with pytest.raises(EditError) as info:
        ws.commit([modify(ws, "a.txt", "1\n"), modify(ws, "a.txt", "2\n")])
    assert info.value.file == "a.txt"
    assert snapshot(repo) == before


def test_create_delete_and_rename_are_committed(repo):
    (repo / "pkg" / "b.py").chmod(0o750)
    ws = Workspace(repo)
    staging = Staging(ws)
    staging.write("docs/new.md", "# new\n")
    staging.delete("c.txt")
    staging.move("pkg/b.py", "lib/b.py", "x = 2\n")
    changes = staging.changes()
    assert sorted(c.status for c in changes) == ["added", "deleted", "renamed"]
    ws.commit(changes)
    assert (repo / "docs" / "new.md").read_bytes() == b"# new\n"
    assert not (repo / "c.txt").exists()
    assert not (repo / "pkg" / "b.py").exists()
    assert (repo / "lib" / "b.py").read_bytes() == b"x = 2\n"
    assert stat.S_IMODE((repo / "lib" / "b.py").stat().st_mode) == 0o750
    assert temp_files(repo) == []


def test_new_file_gets_umask_permissions(repo):
    ws = Workspace(repo)
    old = os.umask(0o027)
    try:
        ws.commit([FileChange("fresh.txt", None, "x\n")])
    finally:
        os.umask(old)
    assert stat.S_IMODE((repo / "fresh.txt").stat().st_mode) == 0o640


# --- bytes kept ---------------------------------------------------------------------------------

def test_crlf_bom_and_mode_are_kept_after_a_rewrite(repo):
    path = repo / "win.py"
    path.write_bytes(b"\xef\xbb\xbfdef f():\r\n    return 1\r\n")
    path.chmod(0o751)
    ws = Workspace(repo)
    doc = ws.read("win.py")
    assert doc.bom and doc.text == "def f():\r\n    return 1\r\n" and doc.mode == 0o751
    assert newline_of(doc.text) == "\r\n"
    ws.commit([FileChange("win.py", doc, doc.text.replace("return 1", "return 2"))])
    assert path.read_bytes() == b"\xef\xbb\xbfdef f():\r\n    return 2\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o751


def test_mode_is_kept_even_when_the_change_does_not_carry_it(repo):
    path = repo / "run.sh"
    path.write_bytes(b"echo 1\n")
    path.chmod(0o700)
    Workspace(repo).commit([FileChange("run.sh", Document("echo 1\n"), "echo 2\n")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_crlf_bom_and_mode_survive_a_patch(repo):
    path = repo / "win.py"
    path.write_bytes(b"\xef\xbb\xbfa = 1\r\nb = 2\r\nc = 3\r\n")
    path.chmod(0o755)
    patch = "*** Begin Patch\n*** Update File: win.py\n@@\n a = 1\n-b = 2\n+b = 20\n c = 3\n*** End Patch\n"
    result = apply_edit(patch, format="apply_patch", root=str(repo))
    assert result.ok, result.errors
    assert path.read_bytes() == b"\xef\xbb\xbfa = 1\r\nb = 20\r\nc = 3\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_binary_file_is_refused_clearly(repo):
    (repo / "blob.bin").write_bytes(b"abc\0def")
    with pytest.raises(UnreadableFileError) as info:
        Workspace(repo).read("blob.bin")
    assert "binary" in info.value.message and info.value.file == "blob.bin"


def test_invalid_utf8_is_refused_naming_the_line(repo):
    (repo / "latin1.txt").write_bytes(b"ok\nalso ok\ncaf\xe9\n")
    with pytest.raises(UnreadableFileError) as info:
        Workspace(repo).read("latin1.txt")
    assert "UTF-8" in info.value.message
    assert (info.value.file, info.value.line) == ("latin1.txt", 3)
    assert str(info.value).startswith("latin1.txt:3:")


def test_editing_a_binary_file_writes_nothing(repo):
    (repo / "blob.bin").write_bytes(b"abc\0def\n")
    before = snapshot(repo)
    patch = "*** Begin Patch\n*** Update File: blob.bin\n@@\n-abc\n+xyz\n*** End Patch\n"
    result = apply_edit(patch, format="apply_patch", root=str(repo))
    assert not result.ok and isinstance(result.errors[0], UnreadableFileError)
    assert snapshot(repo) == before


def test_decode_and_unified_diff_helpers():
    assert decode(b"\xef\xbb\xbfhi\n", "f") == Document("hi\n", bom=True)
    assert Document("hi\n", bom=True).encode("yo\n") == b"\xef\xbb\xbfyo\n"
    diff = unified_diff("a\nb", "a\nc", "a/f", "b/f")
    assert diff.count("\\ No newline at end of file") == 2 and "-b\n" in diff and "+c\n" in diff


def test_missing_file_and_folder_are_reported(repo):
    ws = Workspace(repo)
    with pytest.raises(ApplyError, match="file not found"):
        ws.read("nope.txt")
    with pytest.raises(UnreadableFileError, match="is a directory"):
        ws.read("pkg")


def test_memory_files_commit_keeps_bom():
    mem = MemoryFiles({"a.txt": "\ufeffone\n"})
    doc = mem.read("a.txt")
    mem.commit([FileChange("a.txt", doc, "two\n")])
    assert mem.texts == {"a.txt": "\ufefftwo\n"}


# --- dry run ------------------------------------------------------------------------------------

def test_dry_run_writes_nothing(repo, monkeypatch):
    before = snapshot(repo)
    monkeypatch.setattr(files_module.Workspace, "commit",
                        lambda self, changes: pytest.fail("dry run must not commit"))
    patch = ("*** Begin Patch\n*** Update File: a.txt\n@@\n-alpha\n+beta\n"
             "*** Add File: new.txt\n+new\n*** Delete File: c.txt\n*** End Patch\n")
    result = apply_edit(patch, format="apply_patch", root=str(repo), dry_run=True)
    assert result.ok and not result.written
    assert sorted(c.status for c in result.changes) == ["added", "deleted", "modified"]
    assert snapshot(repo) == before


# --- concurrent writers -------------------------------------------------------------------------

def _racer(worker, root, rounds, barrier, results):
    """Worker 0 edits sub/f{i}.txt under `root`, worker 1 the same files under root/sub."""
    for i in range(rounds):
        line = worker if i % 2 == 0 else 0  # even rounds: different lines; odd: the same line
        path = f"sub/f{i}.txt" if worker == 0 else f"f{i}.txt"
        patch = (f"*** Begin Patch\n*** Update File: {path}\n@@\n-line {line}\n"
                 f"+line {line} by {worker}\n*** End Patch\n")
        barrier.wait()
        result = apply_edit(patch, format="apply_patch",
                            root=str(root if worker == 0 else root / "sub"))
        results.put((i, worker, line, result.ok, [str(e) for e in result.errors]))


def test_concurrent_writers_never_lose_an_update(tmp_path):
    import multiprocessing

    rounds = 100
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    for i in range(rounds):
        (root / "sub" / f"f{i}.txt").write_text("".join(f"line {n}\n" for n in range(6)))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_racer, args=(w, root, rounds, barrier, results)) for w in (0, 1)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in range(2 * rounds)]
    for w in workers:
        w.join(timeout=10)
    refused = 0
    for i, worker, line, ok, errors in outcomes:
        text = (root / "sub" / f"f{i}.txt").read_text()
        if ok:
            assert f"line {line} by {worker}\n" in text, (i, worker, text)
        else:
            refused += 1
            assert any("changed since read" in e or "not found" in e for e in errors), errors
        assert temp_files(root) == []
    assert refused  # the two raced: some edits were computed from bytes that changed under them


# --- signals and kills --------------------------------------------------------------------------

# The child sets SIGINT's Python handler itself: a process started in the background by a non-interactive
# shell (`make test &`, nohup) inherits SIGINT ignored, Python then installs no handler, and the commit
# rightly keeps ignoring it, so the child would never stop.
CHILD = """
import signal
import sys
from editor.files import FileChange, Workspace
signal.signal(signal.SIGINT, signal.default_int_handler)
root, names = sys.argv[1], [f"d{k % 4}/f{k}.txt" for k in range(32)]
print("ready", flush=True)
while True:
    ws = Workspace(root)
    docs = {name: ws.read(name) for name in names}
    tag = "B" if docs[names[0]].text.startswith("A") else "A"
    changes = [FileChange(name, doc, f"{tag} {name}\\n") for name, doc in docs.items()]
    if tag == "B":  # B also deletes extra.txt and creates new/x.txt; A does the reverse
        changes += [FileChange("extra.txt", ws.read("extra.txt"), None), FileChange("new/x.txt", None, "B\\n")]
    else:
        changes += [FileChange("extra.txt", None, "A\\n"), FileChange("new/x.txt", ws.read("new/x.txt"), None)]
    ws.commit(changes)
"""


def _consistent(root):
    """All 32 files from one commit, extra.txt and new/x.txt to match; no temp files, no journal."""
    tags = {(root / f"d{k % 4}/f{k}.txt").read_text()[0] for k in range(32)}
    assert len(tags) == 1, tags
    tag = tags.pop()
    assert (root / "extra.txt").exists() == (tag == "A")
    assert (root / "new" / "x.txt").exists() == (tag == "B")
    leftovers = [p for p in snapshot(root) if p.endswith((".edit-tmp", ".journal", ".journal.new"))]
    assert leftovers == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_commit_cut_short_by_a_signal_is_all_or_nothing(tmp_path, sig):
    import random
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "repo"
    for k in range(32):
        (root / f"d{k % 4}").mkdir(parents=True, exist_ok=True)
        (root / f"d{k % 4}/f{k}.txt").write_text(f"A d{k % 4}/f{k}.txt\n")
    (root / "extra.txt").write_text("A\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(files_module.__file__)))
    rng = random.Random(sig)
    for _ in range(10):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, env=env)
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(getattr(signal, sig))
        assert child.wait(timeout=10) != 0
        if sig == "SIGKILL":
            files_module.recover(root)
        _consistent(root)  # SIGINT and SIGTERM waited for the commit: nothing to recover


def test_a_commit_off_the_main_thread_rolls_back_on_failure(repo, monkeypatch):
    import threading

    before = snapshot(repo)
    ws = Workspace(repo)
    changes = [modify(ws, "a.txt", "1\n"), modify(ws, "c.txt", "3\n")]
    fail_replace_at(monkeypatch, 3, KeyboardInterrupt)  # the journal, a.txt, then c.txt
    raised = []

    def commit():
        try:
            ws.commit(changes)
        except KeyboardInterrupt:
            raised.append(True)

    thread = threading.Thread(target=commit)
    thread.start()
    thread.join()
    assert raised and snapshot(repo) == before


def test_the_next_read_rolls_back_a_killed_commit_and_leaves_later_writes_alone(repo, monkeypatch):
    """A commit killed after its first rename: its journal stays behind."""
    ws = Workspace(repo)
    changes = [modify(ws, "a.txt", "A2\n"), modify(ws, "c.txt", "C2\n"), FileChange("n/new.txt", None, "N\n")]
    class Killed(BaseException):
        pass

    fail_replace_at(monkeypatch, 3, Killed)

    monkeypatch.setattr(files_module, "_restore", lambda entry: None)  # a dead process undoes nothing
    monkeypatch.setattr(files_module, "_remove_journal", lambda journal: journal[0].close())
    monkeypatch.setattr(files_module, "_remove_dirs", lambda folders: None)
    with pytest.raises(Killed):
        ws.commit(changes)
    monkeypatch.undo()
    assert (repo / "a.txt").read_bytes() == b"A2\n"
    assert [p for p in os.listdir(repo) if p.endswith(".journal")]
    (repo / "pkg" / "b.py").write_bytes(b"x = 5\n")  # not in the commit: left alone
    assert Workspace(repo).read("c.txt").text == "gamma\n"
    assert (repo / "a.txt").read_bytes() == b"alpha\n"
    assert (repo / "pkg" / "b.py").read_bytes() == b"x = 5\n"
    assert not (repo / "n").exists() and temp_files(repo) == []
    assert [p for p in os.listdir(repo) if "journal" in p] == []


def test_recovery_leaves_a_file_changed_after_the_crash(repo, monkeypatch):
    ws = Workspace(repo)
    fail_replace_at(monkeypatch, 3, SystemExit)

    monkeypatch.setattr(files_module, "_restore", lambda entry: None)
    monkeypatch.setattr(files_module, "_remove_journal", lambda journal: journal[0].close())
    with pytest.raises(SystemExit):
        ws.commit([modify(ws, "a.txt", "A2\n"), modify(ws, "c.txt", "C2\n")])
    monkeypatch.undo()
    (repo / "a.txt").write_bytes(b"the user's own change\n")
    assert files_module.recover(repo) == []
    assert (repo / "a.txt").read_bytes() == b"the user's own change\n"


# --- what is read: regular files, capped --------------------------------------------------------

def within_a_second(fn):
    """fn's exception, failing the test if fn takes over a second (it would hang forever)."""
    import threading

    caught = []

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(1)
    assert not thread.is_alive(), "hung"
    assert caught, "not refused"
    return caught[0]


def test_a_fifo_is_refused_by_type_not_read(repo):
    os.mkfifo(repo / "pipe")
    ws = Workspace(repo)
    error = within_a_second(lambda: ws.read("pipe"))
    assert isinstance(error, UnreadableFileError) and "is a FIFO" in error.message
    assert error.file == "pipe"
    for patch in ("*** Begin Patch\n*** Add File: pipe\n+x\n*** End Patch\n",
                  "*** Begin Patch\n*** Update File: a.txt\n*** Move to: pipe\n@@\n-alpha\n+beta\n"
                  "*** End Patch\n"):
        def apply():
            result = apply_edit(patch, format="apply_patch", root=str(repo))
            raise result.errors[0]
        assert "is a FIFO" in within_a_second(apply).message
    assert stat.S_ISFIFO(os.lstat(repo / "pipe").st_mode)
    assert (repo / "a.txt").read_bytes() == b"alpha\n"


def test_a_fifo_created_after_the_read_is_refused_at_commit(repo):
    ws = Workspace(repo)
    change = FileChange("late", None, "x\n")
    os.mkfifo(repo / "late")
    error = within_a_second(lambda: ws.commit([change]))
    assert "is a FIFO" in error.message and error.file == "late"


def test_devices_and_folders_are_refused_by_type():
    error = within_a_second(lambda: files_module.read_regular("/dev/zero", "zero"))
    assert isinstance(error, UnreadableFileError) and "is a device" in error.message


def test_a_file_over_the_cap_is_refused_naming_file_and_cap(repo, monkeypatch):
    monkeypatch.setattr(files_module, "MAX_FILE_BYTES", 8)
    (repo / "big.txt").write_bytes(b"123456789\n")
    with pytest.raises(UnreadableFileError) as info:
        Workspace(repo).read("big.txt")
    assert info.value.file == "big.txt" and "over the 8-byte limit" in info.value.message
    ws = Workspace(repo)
    with pytest.raises(EditError, match="over the 8-byte limit"):
        ws.commit([modify(ws, "a.txt", "much too long\n")])
    assert (repo / "a.txt").read_bytes() == b"alpha\n"


# --- what is written ----------------------------------------------------------------------------

def test_a_file_changed_since_read_is_refused_and_kept(repo):
    ws = Workspace(repo)
    change = modify(ws, "a.txt", "mine\n")
    (repo / "a.txt").write_bytes(b"theirs\n")
    with pytest.raises(EditError, match="changed since read") as info:
        ws.commit([modify(ws, "c.txt", "C\n"), change])
    assert info.value.file == "a.txt"
    assert (repo / "a.txt").read_bytes() == b"theirs\n" and (repo / "c.txt").read_bytes() == b"gamma\n"
    (repo / "made.txt").write_bytes(b"someone else's\n")
    with pytest.raises(EditError, match="changed since read"):
        ws.commit([FileChange("made.txt", None, "mine\n")])
    assert (repo / "made.txt").read_bytes() == b"someone else's\n"


@pytest.mark.parametrize("op", ["delete", "move"])
def test_deleting_or_moving_a_symlink_is_refused_and_its_target_kept(repo, op):
    (repo / "alias.txt").symlink_to("a.txt")
    body = "*** Delete File: alias.txt\n" if op == "delete" else \
        "*** Update File: alias.txt\n*** Move to: moved.txt\n@@\n-alpha\n+beta\n"
    before = snapshot(repo)
    result = apply_edit(f"*** Begin Patch\n{body}*** End Patch\n", format="apply_patch", root=str(repo))
    assert not result.ok and "symbolic link" in result.errors[0].message
    assert snapshot(repo) == before


def test_a_name_near_the_length_limit_can_be_edited(repo):
    name = "n" * 250 + ".txt"
    (repo / name).write_bytes(b"old\n")
    ws = Workspace(repo)
    ws.commit([modify(ws, name, "new\n")])
    assert (repo / name).read_bytes() == b"new\n"


@pytest.mark.parametrize("name", ["a\nb.txt", "a\rb.txt", "a\0b.txt"])
def test_control_characters_in_file_names_are_refused(name):
    with pytest.raises(UnsafePathError, match="newlines"):
        normalize(name)


def test_a_nul_in_new_text_is_refused_naming_the_file(repo):
    ws = Workspace(repo)
    with pytest.raises(EditError, match="NUL") as info:
        ws.commit([modify(ws, "a.txt", "al\0pha\n")])
    assert info.value.file == "a.txt"
    result = apply_edit('[insert("\\u0000")]', format="ot", root=str(repo), targets=["c.txt"],
                        dry_run=True)
    assert not result.ok and "NUL" in result.errors[0].message and result.errors[0].file == "c.txt"
    assert (repo / "a.txt").read_bytes() == b"alpha\n"


def test_a_read_only_file_is_refused_unless_forced(repo):
    (repo / "a.txt").chmod(0o444)
    ws = Workspace(repo)
    with pytest.raises(EditError, match="read-only") as info:
        ws.commit([modify(ws, "a.txt", "1\n")])
    assert info.value.file == "a.txt" and (repo / "a.txt").read_bytes() == b"alpha\n"
    ws.commit([modify(ws, "a.txt", "1\n")], force=True)
    assert (repo / "a.txt").read_bytes() == b"1\n"
    assert stat.S_IMODE((repo / "a.txt").stat().st_mode) == 0o444
