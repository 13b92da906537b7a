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
    [(src, dst)] = replaced
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
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
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
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
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
    real_replace, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
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
    with pytest.raises(ApplyError, match="not a regular file"):
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
