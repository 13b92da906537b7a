"""`edit serve`, driven over stdio by the MCP SDK's own client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client


APP_PY = "def greet(name):\n    return 'hello ' + name\n"

V4A_PATCH = """*** Begin Patch
*** Update File: src/app.py
@@ def greet(name):
-    return 'hello ' + name
+    return f'hello {name}'
*** Add File: src/extra.py
+VALUE = 42
*** End Patch
"""


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "app.py").write_text(APP_PY)
    (tmp_path / "outside.py").write_text("SECRET = 1\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def session_run(root: Path, steps, *, args=(), env=None):
    """Start `edit serve --root ROOT` and run `await steps(session)` in an initialized session."""
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "editor.cli", "serve", "--root", str(root), *args],
                                   env=env)

    async def main():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await steps(session)

    return asyncio.run(main())


async def call(session: ClientSession, tool: str, **arguments) -> dict:
    """The tool's structured answer; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def call_error(session: ClientSession, tool: str, **arguments) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


def test_lists_the_three_tools_with_their_arguments(root):
    async def steps(session):
        return {tool.name: tool for tool in (await session.list_tools()).tools}

    tools = session_run(root, steps)
    assert set(tools) == {"propose_edit", "apply_edit", "validate"}
    assert set(tools["apply_edit"].input_schema["properties"]) == {"edit", "format", "root", "dry_run",
                                                                  "files"}
    assert tools["apply_edit"].input_schema["required"] == ["edit"]
    assert set(tools["propose_edit"].input_schema["required"]) == {"path", "instruction"}
    assert tools["validate"].annotations.read_only_hint is True
    assert tools["apply_edit"].annotations.destructive_hint is True
    assert "apply_patch_call" in tools["apply_edit"].description


def test_applies_a_v4a_patch_and_dry_run_writes_nothing(root):
    async def steps(session):
        dry = await call(session, "apply_edit", edit=V4A_PATCH, dry_run=True)
        unchanged = snapshot(root)
        done = await call(session, "apply_edit", edit=V4A_PATCH)
        return dry, unchanged, done

    before = snapshot(root)
    dry, unchanged, done = session_run(root, steps)
    assert dry["ok"] and not dry["written"]
    assert [(f["path"], f["status"]) for f in dry["files"]] == [("src/app.py", "modified"),
                                                                  ("src/extra.py", "added")]
    assert "+    return f'hello {name}'" in dry["files"][0]["diff"]
    assert unchanged == before
    assert done["ok"] and done["written"] and done["format"] == "apply_patch"
    assert done["validated"] == ["python"]
    assert (root / "src" / "app.py").read_text() == "def greet(name):\n    return f'hello {name}'\n"
    assert (root / "src" / "extra.py").read_text() == "VALUE = 42\n"


def test_a_rejected_edit_names_the_hunk_and_writes_nothing(root):
    bad = V4A_PATCH.replace("-    return 'hello ' + name", "-    return 'bye ' + name")

    async def steps(session):
        return await call(session, "apply_edit", edit=bad)

    before = snapshot(root)
    answer = session_run(root, steps)
    assert not answer["ok"] and not answer["written"] and answer["files"] == []
    [error] = answer["errors"]
    assert (error["file"], error["hunk"]) == ("src/app.py", 1)
    assert "not found" in error["message"]
    assert snapshot(root) == before


def test_openai_create_update_delete_answer_as_apply_patch_call_output(root):
    create = {"type": "create_file", "path": "src/new.py", "diff": "+def one():\n+    return 1\n"}
    update = {"type": "apply_patch_call", "call_id": "call_42", "status": "completed",
              "operation": {"type": "update_file", "path": "src/new.py",
                            "diff": "@@ def one():\n-    return 1\n+    return 2\n"}}
    broken = {"type": "update_file", "path": "src/new.py", "diff": "@@\n-    return 2\n+    return (\n"}
    delete = {"type": "delete_file", "path": "src/new.py"}

    async def steps(session):
        answers = [await call(session, "apply_edit", edit=create, format="openai")]
        created = (root / "src" / "new.py").read_text()
        answers.append(await call(session, "apply_edit", edit=json.dumps(update), format="openai"))
        updated = (root / "src" / "new.py").read_text()
        answers.append(await call(session, "apply_edit", edit=broken, format="openai"))
        answers.append(await call(session, "apply_edit", edit=delete, format="openai"))
        return answers, created, updated

    (created_answer, updated_answer, broken_answer, deleted_answer), created, updated = \
        session_run(root, steps)
    assert created_answer == {"type": "apply_patch_call_output", "status": "completed",
                              "output": "Created src/new.py (validated: python)"}
    assert created == "def one():\n    return 1\n"
    assert updated_answer["call_id"] == "call_42" and updated_answer["status"] == "completed"
    assert updated == "def one():\n    return 2\n"
    assert broken_answer["status"] == "failed"
    assert broken_answer["output"].startswith("src/new.py:1: new syntax error")
    assert deleted_answer["status"] == "completed" and deleted_answer["output"] == "Deleted src/new.py"
    assert not (root / "src" / "new.py").exists()


FAILING_OPERATIONS = [
    ({"type": "delete_file", "path": "../outside.py"}, "paths with '..' are refused"),
    ({"type": "create_file", "path": "/etc/evil.py", "diff": "+x\n"}, "absolute paths are refused"),
    ({"type": "create_file", "path": "a.py", "diff": "+x = 1\nno plus\n"}, "a.py:2: every line"),
    ({"type": "update_file", "path": "src/app.py", "diff": "@@\n-nothing like this\n+x\n"},
     "src/app.py:1, hunk 1: the hunk's context"),
    ({"type": "update_file", "path": "src/app.py"}, "needs a string `diff`"),
    ({"type": "rename_file", "path": "src/app.py"}, "unknown operation type 'rename_file'"),
    ({"type": "create_file", "path": "x.py\n*** Delete File: src/app.py", "diff": "+x\n"},
     "x.py: a path cannot hold a line break"),
    ("{not json", "not a JSON object"),
    ({"type": ["create_file"], "path": "a.py"}, "unknown operation type ['create_file']"),
    ("[1, 2]", "expected a JSON object, got list"),
]


def test_openai_operations_that_fail_say_why_and_write_nothing(root):
    async def steps(session):
        return [await call(session, "apply_edit", edit=operation, format="openai")
                for operation, _ in FAILING_OPERATIONS]

    before = snapshot(root.parent)
    answers = session_run(root, steps)
    for answer, (_, message) in zip(answers, FAILING_OPERATIONS):
        assert answer["status"] == "failed"
        assert message in answer["output"]
    assert snapshot(root.parent) == before


def test_paths_cannot_escape_the_root(root):
    escape = V4A_PATCH.replace("src/extra.py", "../outside.py")
    (root / "src" / "link").symlink_to(root.parent)

    async def steps(session):
        return (await call(session, "apply_edit", edit=escape),
                await call(session, "apply_edit", edit=V4A_PATCH.replace("src/extra.py", "src/link/x.py")),
                await call_error(session, "apply_edit", edit=V4A_PATCH, root=".."),
                await call_error(session, "apply_edit", edit=V4A_PATCH, root="src/link"),
                await call_error(session, "validate", path="../outside.py"),
                await call_error(session, "validate", path=str(root.parent / "outside.py")))

    before = snapshot(root.parent)
    dotdot, symlink, root_up, root_link, validate_up, validate_abs = session_run(root, steps)
    assert not dotdot["ok"] and "'..' are refused" in dotdot["errors"][0]["message"]
    assert not symlink["ok"] and "leads out of the root" in symlink["errors"][0]["message"]
    assert "root '..'" in root_up and "leads out of the root" in root_link
    assert "'..' are refused" in validate_up and "absolute paths are refused" in validate_abs
    assert snapshot(root.parent) == before


def test_root_narrows_to_a_folder_under_the_server_root(root):
    patch = V4A_PATCH.replace("src/", "")

    async def steps(session):
        return await call(session, "apply_edit", edit=patch, root="src")

    answer = session_run(root, steps)
    assert answer["ok"], answer
    assert [f["path"] for f in answer["files"]] == ["app.py", "extra.py"]
    assert (root / "src" / "extra.py").exists() and not (root / "extra.py").exists()


def test_rule_edits_take_their_files(root):
    rule = "id: f-string\nlanguage: python\nrule:\n  pattern: \"'hello ' + $X\"\nfix: f'hello {$X}'\n"

    async def steps(session):
        return await call(session, "apply_edit", edit=rule, files=["src/*.py"])

    answer = session_run(root, steps)
    assert answer["ok"] and answer["format"] == "rule"
    assert (root / "src" / "app.py").read_text() == "def greet(name):\n    return f'hello {name}'\n"


def test_json_rules_and_ops_reach_the_parser_as_text(root):
    # The SDK parses a JSON string argument into an object or a list on its way in.
    rule = {"id": "f-string", "language": "python", "rule": {"pattern": "'hello ' + $X"},
            "fix": "f'hello {$X}'"}

    async def steps(session):
        return (await call(session, "apply_edit", edit=json.dumps(rule), files=["src/app.py"], dry_run=True),
                await call(session, "apply_edit", edit=json.dumps([rule]), files=["src/app.py"], dry_run=True))

    for answer in session_run(root, steps):
        assert answer["ok"] and answer["format"] == "rule", answer
        assert "+    return f'hello {name}'" in answer["files"][0]["diff"]


def test_tool_errors_say_what_went_wrong(root):
    async def steps(session):
        return (await call_error(session, "apply_edit", edit=V4A_PATCH, root="src\x00"),
                await call_error(session, "validate", path="src/app.py", language="cobol"))

    null_root, language = session_run(root, steps)
    assert "root 'src\\x00'" in null_root and "NUL are refused" in null_root
    assert "unknown language 'cobol'" in language


def test_an_unexpected_exception_is_named_in_the_tool_error():
    from mcp.server.mcpserver.exceptions import ToolError

    from editor.server import _tool

    def broken(path: str) -> dict:
        return {}[path]

    with pytest.raises(ToolError, match="internal error: KeyError: 'x'"):
        asyncio.run(_tool(broken)("x"))


def test_the_server_exits_when_its_client_closes_stdin_mid_call(root):
    (root / "src" / "deep.py").write_text("x = " + "[" * 300 + "]" * 300 + "\n")
    slow = {"kind": "identifier", "regex": "^never$"}
    for _ in range(3):  # a minute and more of matching over that file
        slow = {"has": {**slow, "stopBy": "end"}}
    rule = json.dumps({"id": "slow", "language": "python", "rule": slow, "fix": "y"})
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "apply_edit", "arguments": {"edit": rule, "files": ["src/deep.py"]}}}]
    server = subprocess.Popen([sys.executable, "-m", "editor.cli", "serve", "--root", str(root)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for message in messages:
        server.stdin.write((json.dumps(message) + "\n").encode())
        server.stdin.flush()
    assert json.loads(server.stdout.readline())["id"] == 1
    time.sleep(1)  # the call is running
    started = time.monotonic()
    server.stdin.close()
    try:
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()
    assert time.monotonic() - started < 10  # not the 30 s the rules may take, nor the minutes it needs
    assert (root / "src" / "deep.py").read_text().startswith("x = [[[")


def test_validate_lists_syntax_errors(root):
    (root / "src" / "broken.py").write_text("def f(:\n    pass\n")
    (root / "notes.unknown").write_text("whatever\n")

    async def steps(session):
        return (await call(session, "validate", path="src/broken.py"),
                await call(session, "validate", path=str(root / "src" / "app.py")),
                await call(session, "validate", path="notes.unknown"),
                await call_error(session, "validate", path="src/missing.py"))

    broken, good, unknown, missing = session_run(root, steps)
    assert broken["language"] == "python" and not broken["ok"]
    assert broken["issues"][0]["line"] == 1 and broken["issues"][0]["kind"] in ("ERROR", "MISSING")
    assert good == {"path": "src/app.py", "language": "python", "validated": True, "ok": True,
                    "issues": []}
    assert unknown["validated"] is False
    assert "file not found" in missing


def test_propose_edit_without_a_model_says_how_to_install_one(root, tmp_path):
    async def steps(session):
        return (await call_error(session, "propose_edit", path="src/app.py", instruction="Use an f-string"),
                await call_error(session, "propose_edit", path="../outside.py", instruction="x"))

    before = snapshot(root)
    no_model, escape = session_run(root, steps, env={"EDIT_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert "no model to propose edits with" in no_model
    assert "edit model install 1.5b" in no_model  # the default model
    assert "'..' are refused" in escape
    assert snapshot(root) == before


def test_propose_edit_runs_the_model_and_writes_nothing(root, tmp_path):
    """A tiny model that ends its turn at once: its `whole`-file answer, the empty file, is
    proposed, not written."""
    from tests.tiny_models import save_instant_model

    folder = save_instant_model(tmp_path / "tiny-model", APP_PY)

    async def steps(session):
        return (await call(session, "propose_edit", path="src/app.py", instruction="Empty it.", format="whole"),
                await call(session, "propose_edit", path="src/app.py", instruction="Empty it.", format="whole",
                           as_format="ot"))

    before = snapshot(root)
    answer, as_ot = session_run(root, steps, args=["--model", str(folder)])
    assert set(answer) == {"ok", "path", "format", "model_format", "edit", "diff", "errors", "stats"}
    assert (answer["ok"], answer["path"], answer["format"], answer["model_format"], answer["edit"]) == (
        True, "src/app.py", "whole", "whole", "")
    assert "-def greet(name):" in answer["diff"] and answer["errors"] == []
    assert answer["stats"]["attempts"] == 1
    # the same change as OT: the empty answer keeps the file's last newline
    assert (as_ot["format"], as_ot["model_format"], as_ot["edit"]) == (
        "ot", "whole", r"""[delete("def greet(name):"), retain(1), delete("    return 'hello ' + name\n")]""")
    assert snapshot(root) == before
