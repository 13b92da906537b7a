"""The hooks of .pre-commit-hooks.yaml, run by the real `pre-commit` in a temporary git repository.

The fast tests run each hook's manifest entry as a `repo: local` hook of language `unsupported`
(pre-commit's name for `system` since 4.4), on the `edit` of this environment: pre-commit's own
file passing, exit-code and "files were modified" handling, without installing the project
again. The slow test runs `pre-commit try-repo` on this repository, which installs it into a fresh
virtualenv as a user's pre-commit would (minutes: torch and the rest come along).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pre_commit.clientlib import load_manifest

PROJECT = Path(__file__).resolve().parents[1]
MANIFEST = PROJECT / ".pre-commit-hooks.yaml"

APP_PY = 'import logging\n\nlogger = logging.getLogger(__name__)\n\n\ndef greet(name):\n    print("hello", name)\n'
FIXED_APP_PY = APP_PY.replace('print("hello"', 'logger.info("hello"')
PRINT_RULE = "id: no-print\nlanguage: python\nrule:\n  pattern: print($$$A)\nfix: logger.info($$$A)\n"


def hooks() -> dict[str, dict]:
    return {hook["id"]: hook for hook in load_manifest(str(MANIFEST))}


@pytest.fixture
def git_env(tmp_path):
    """An environment where git and pre-commit read and write nothing of the user's (pip's cache
    aside), and `edit` is this environment's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GIT_", "PRE_COMMIT"))}
    env.update(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
               GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               NO_COLOR="1")
    return env


@pytest.fixture
def repo(tmp_path, git_env):
    root = tmp_path / "repo"
    (root / ".edit-rules").mkdir(parents=True)
    (root / ".edit-rules" / "print.yml").write_text(PRINT_RULE)
    (root / "app.py").write_text(APP_PY)
    (root / "clean.py").write_text("def add(a, b):\n    return a + b\n")
    git(root, git_env, "init", "-q")
    return root


def git(root: Path, env: dict, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True,
                          text=True).stdout


def pre_commit(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    git(root, env, "add", "-A")
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def local_config(root: Path, hook_id: str, args: list[str] | None = None) -> None:
    """`.pre-commit-config.yaml` running the manifest's hook as it is, on the `edit` found on PATH."""
    hook = {key: value for key, value in hooks()[hook_id].items()
            if key in ("id", "name", "entry", "types", "pass_filenames", "require_serial")}
    hook["language"] = "unsupported"
    if args is not None:
        hook["args"] = args
    config = {"repos": [{"repo": "local", "hooks": [hook]}]}
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))


def test_manifest_declares_both_hooks_as_python_fixers():
    manifest = hooks()
    assert set(manifest) == {"edit-rules", "edit-instruction"}
    for hook in manifest.values():
        assert hook["language"] == "python" and hook["pass_filenames"] is True
        assert hook["entry"].split()[0] == "edit"
    assert manifest["edit-rules"]["entry"] == "edit hook-rules"
    assert manifest["edit-instruction"]["entry"] == "edit hook-instruction"
    assert manifest["edit-instruction"]["require_serial"] is True  # one model load per commit


def test_rules_hook_fixes_and_fails_then_passes(repo, git_env):
    local_config(repo, "edit-rules")
    first = pre_commit(repo, git_env, "run", "edit-rules", "--files", "app.py", "clean.py")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Failed" in first.stdout and "files were modified by this hook" in first.stdout
    assert 'app.py:7:5: no-print: print("hello", name)' in first.stdout
    assert (repo / "app.py").read_text() == FIXED_APP_PY

    second = pre_commit(repo, git_env, "run", "edit-rules", "--files", "app.py", "clean.py")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Passed" in second.stdout


def test_rules_hook_check_mode_and_another_rules_folder(repo, git_env):
    (repo / ".edit-rules").rename(repo / "lint")
    local_config(repo, "edit-rules", ["--rules", "lint", "--check"])
    result = pre_commit(repo, git_env, "run", "edit-rules", "--files", "app.py")
    assert result.returncode == 1
    assert 'app.py:7:5: no-print: print("hello", name)' in result.stdout
    assert "files were modified" not in result.stdout
    assert (repo / "app.py").read_text() == APP_PY


def test_instruction_hook_does_nothing_unless_configured(repo, git_env):
    local_config(repo, "edit-instruction")
    result = pre_commit(repo, git_env, "run", "edit-instruction", "--files", "app.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout
    assert (repo / "app.py").read_text() == APP_PY


def snapshot_repository(destination: Path, env: dict) -> Path:
    """This project's files as git would commit them now (tracked and untracked, not ignored),
    committed in a fresh repository: try-repo clones a commit, and CI's clone and a working tree
    with new files must both work."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT, check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    git(destination, env, "init", "-q")
    git(destination, env, "add", "-A")
    git(destination, env, "commit", "-q", "-m", "snapshot")
    return destination


@pytest.mark.slow
def test_try_repo_installs_the_hook_and_fixes(repo, git_env, tmp_path):
    """About three minutes: try-repo installs the project into a new virtualenv every time."""
    hook_repo = snapshot_repository(tmp_path / "hook-repo", git_env)
    git_env = {key: value for key, value in git_env.items() if key != "VIRTUAL_ENV"}
    git_env["PATH"] = os.environ.get("PATH", "")
    result = pre_commit(repo, git_env, "try-repo", str(hook_repo), "edit-rules", "--files", "app.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "files were modified by this hook" in result.stdout
    assert 'app.py:7:5: no-print: print("hello", name)' in result.stdout
    assert (repo / "app.py").read_text() == FIXED_APP_PY
