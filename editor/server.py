"""`edit serve`: an MCP server over stdio that lets an agent propose, apply and validate edits.

Tools (their docstrings below are what the agent reads):

    propose_edit(path, instruction, format="auto")   the local model's edit for one file; writes nothing
    apply_edit(edit, format="auto", root=None, dry_run=False, files=None)
        an edit in one of our formats, as `edit apply --json` does it; or, with format "openai",
        one operation of OpenAI's apply_patch tool, answered as an `apply_patch_call_output`
    validate(path, language=None)                    the syntax errors tree-sitter finds in a file

Everything stays inside the server's root: paths are relative to it (an absolute path must lie
inside it), `..` and symlinks leading out are refused, and an edit writes all of its files
atomically or none. The model is loaded on the first `propose_edit` and kept for the next ones.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from . import timelimit, validation
from .applying import FORMATS, ApplyResult, apply_edit
from .errors import EditError, ParseError
from .files import Workspace, normalize
from .formats import apply_patch

OPENAI = "openai"
# apply_patch_call operation type -> (what the output says when done, when it would be done)
OPENAI_OPERATIONS = {"create_file": ("Created", "Would create"),
                     "update_file": ("Updated", "Would update"),
                     "delete_file": ("Deleted", "Would delete")}

INSTRUCTIONS = (
    "Structured edits for the files under one root folder. propose_edit asks a small local model "
    "for an edit (nothing is written); apply_edit applies an edit (V4A apply_patch, unified diff, "
    "OT ops, an ast-grep rule, or an OpenAI apply_patch_call operation with format 'openai'), "
    "checks it with tree-sitter and writes every file or none; validate lists a file's syntax "
    "errors. Paths are relative to the root.")


class EditServer:
    """The tools' logic over one root folder, without the MCP plumbing (`build` adds that)."""

    def __init__(self, root: str | os.PathLike, model: str = "default"):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"{root}: not a folder")
        self.model = model
        self._editor = None
        self._model_lock = threading.Lock()  # tools run on worker threads; one model, one user
        self._write_lock = threading.Lock()  # two edits of one file must not interleave

    def propose_edit(self, path: str, instruction: str, format: str = "auto") -> dict[str, Any]:
        """Ask the local model for an edit of one file; nothing is written.

        `format`: auto (a rule for "every use of ..." requests, else apply_patch), apply_patch,
        udiff, ot, rule or whole. Returns {ok, path, format, edit, diff, errors, stats}: `edit` is
        the model's edit text; pass it with `format` to apply_edit to write it (`diff`, a unified
        diff, applies too, as format udiff). ok false: every try was rejected, `errors` say why.
        The first call loads the model (seconds to a minute); later calls reuse it.
        """
        from decoding.model_registry import ModelError

        relative = self._relative(path, self.root)
        try:
            workspace = Workspace(self.root)
            if not workspace.exists(relative):
                raise ToolError(f"{relative}: no such file under the root {self.root}")
            with self._model_lock:
                result = self._load_editor().edit(workspace.resolve(relative), instruction,
                                                  format=format, path=normalize(relative))
        except ModelError as exc:
            raise ToolError(f"no model to propose edits with: {exc}") from None
        except EditError as exc:
            raise ToolError(str(exc)) from None
        return result.to_json()

    def apply_edit(self, edit: str | dict[str, Any] | list[Any], format: str = "auto", root: str | None = None,
                   dry_run: bool = False, files: list[str] | None = None) -> dict[str, Any]:
        """Apply an edit under the root: validated with tree-sitter, then every file written or none.

        `edit`: the edit text in one of the formats apply_patch (V4A, `*** Begin Patch`), udiff,
        ot or rule (ast-grep YAML), `format` naming it or "auto" to detect it. `files`: the target
        file of an OT edit or a bare hunk body, or the files (globs allowed) a rule runs over.
        Returns {ok, format, written, files: [{path, status, diff}], errors: [{file, line, hunk,
        message}]}; a rejected edit has ok false and wrote nothing.

        With format "openai", `edit` is the `operation` of an OpenAI apply_patch_call (or the whole
        call): {"type": "create_file" | "update_file" | "delete_file", "path": ..., "diff": ...},
        the diff a V4A body without the `*** Begin Patch` envelope ('+' lines for create_file).
        The answer is then an apply_patch_call_output: {type, call_id, status: "completed" |
        "failed", output}.

        `root`: a folder under the server's root to work in (paths are then relative to it).
        `dry_run`: check and show the changes, write nothing.
        """
        if format == OPENAI:
            return self._apply_openai(edit, root, dry_run)
        if format not in FORMATS:
            raise ToolError(f"unknown format {format!r}; choose one of "
                            f"{', '.join(FORMATS + (OPENAI,))}")
        if not isinstance(edit, str):  # JSON text (a rule, OT ops) that the SDK parsed on the way
            edit = json.dumps(edit)
        folder = self._folder(root)
        try:
            with self._write_lock:
                result = apply_edit(edit, format=format, root=str(folder), targets=files or (),
                                    dry_run=dry_run)
        except ValueError as exc:  # a caller's mistake: unknown language, several targets
            raise ToolError(str(exc)) from None
        shown = result.changes if result.written or (dry_run and not result.errors) else []
        return {"ok": result.ok, "format": result.format, "written": result.written,
                "dry_run": dry_run,
                "files": [{"path": c.dest, "status": c.status, "diff": c.diff()} for c in shown],
                "validated": _languages(result),
                "errors": [error.to_json() for error in result.errors]}

    def validate(self, path: str, language: str | None = None) -> dict[str, Any]:
        """The syntax errors (tree-sitter ERROR and MISSING nodes) of a file under the root.

        `language` overrides the one told by the file's extension or shebang. Returns {path,
        language, validated, ok, issues: [{line, column, kind, snippet, message}]}; validated is
        false when the language is unknown.
        """
        relative = self._relative(path, self.root)
        try:
            text = Workspace(self.root).read(relative).text
            found_language, issues = validation.syntax_issues(relative, text, language)
        except (EditError, ValueError) as exc:
            raise ToolError(str(exc)) from None
        return {"path": relative, "language": found_language, "validated": found_language is not None,
                "ok": not issues,
                "issues": [{"line": i.line, "column": i.column, "kind": i.kind, "snippet": i.snippet,
                            "message": i.describe()} for i in issues]}

    # -----------------------------------------------------------------------------------------

    def _apply_openai(self, call: str | dict[str, Any] | list[Any], root: str | None,
                      dry_run: bool) -> dict[str, Any]:
        """One apply_patch_call operation -> an apply_patch_call_output (never a tool error, so
        the caller can always hand the answer back to the model)."""
        output: dict[str, Any] = {"type": "apply_patch_call_output"}
        try:
            if isinstance(call, str):
                call = _json_object(call)
            if not isinstance(call, dict):
                raise ParseError(f"expected a JSON object, got {type(call).__name__}")
            if isinstance(call.get("operation"), dict):  # the whole apply_patch_call item
                if call.get("call_id") is not None:
                    output["call_id"] = call["call_id"]
                call = call["operation"]
            folder = self._folder(root)
            kind = call.get("type")
            path = call.get("path")
            if not isinstance(path, str):
                raise ParseError("the operation has no string `path`")
            patch = openai_operation(kind, self._relative(path, folder), call.get("diff"))
            with self._write_lock:
                result = apply_edit(apply_patch.render(patch), format="apply_patch",
                                    root=str(folder), dry_run=dry_run)
        except (EditError, ToolError) as exc:
            return output | {"status": "failed", "output": str(exc)}
        if not result.ok:
            return output | {"status": "failed", "output": "\n".join(map(str, result.errors))}
        done, would = OPENAI_OPERATIONS[kind]
        languages = _languages(result)
        validated = f" (validated: {', '.join(languages)})" if languages else ""
        return output | {"status": "completed", "output": f"{would if dry_run else done} {path}{validated}"}

    def _load_editor(self):
        """The Editor, created on the first proposal and kept: it holds the loaded model."""
        if self._editor is None:
            from .propose import Editor

            self._editor = Editor(model=self.model)
        return self._editor

    def _folder(self, root: str | None) -> Path:
        """The folder an edit works in: the server root, or a folder under it."""
        if root is None:
            return self.root
        relative = self._relative(root, self.root)
        if relative == ".":
            return self.root
        try:
            folder = Workspace(self.root).resolve(relative)
        except EditError as exc:
            raise ToolError(f"root {root!r}: {exc.message}") from None
        except ValueError as exc:  # a NUL byte in it
            raise ToolError(f"root {root!r}: {exc}") from None
        if not folder.is_dir():
            raise ToolError(f"root {root!r}: not a folder under the server root {self.root}")
        return folder

    @staticmethod
    def _relative(path: str, base: Path) -> str:
        """An absolute path inside `base`, made relative to it; any other path as given, for
        `Workspace` to confine (it refuses absolute paths, `..` and symlinks out)."""
        if not os.path.isabs(path):
            return path
        full = Path(os.path.realpath(path))
        if full == base or base in full.parents:
            return full.relative_to(base).as_posix() or "."
        return path


def openai_operation(kind: Any, path: str, diff: Any) -> apply_patch.Patch:
    """An apply_patch_call operation as a one-operation V4A patch.

    create_file's diff is the body of `*** Add File:`: every line starts with '+', each becomes a
    line of the new file (codex's reading: "+a\\n+b" is "a\\nb\\n"). update_file's is the body of
    `*** Update File:` (its `@@` hunks). delete_file has none.
    """
    if not isinstance(kind, str) or kind not in OPENAI_OPERATIONS:
        raise ParseError(f"unknown operation type {kind!r}; expected "
                         f"{', '.join(OPENAI_OPERATIONS)}", file=path)
    if "\n" in path or "\r" in path:  # it would end the patch line it is rendered into
        raise ParseError("a path cannot hold a line break", file=path.splitlines()[0])
    if kind == "delete_file":
        return apply_patch.Patch((apply_patch.DeleteFile(path),))
    if not isinstance(diff, str):
        raise ParseError(f"a {kind} operation needs a string `diff`", file=path)
    if kind == "update_file":
        try:
            chunks = apply_patch.parse_update_body(diff)
        except ParseError as exc:
            raise ParseError(exc.message, file=path, line=exc.line) from None
        return apply_patch.Patch((apply_patch.UpdateFile(path, None, chunks),))
    lines = diff.split("\n")
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.startswith("+"):
            raise ParseError(f"every line of a create_file diff starts with '+'; got {line!r}",
                             file=path, line=number)
    return apply_patch.Patch((apply_patch.AddFile(path, "".join(line[1:].removesuffix("\r") + "\n"
                                                                for line in lines)),))


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not a JSON object: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _languages(result: ApplyResult) -> list[str]:
    """The languages the changed files were validated as."""
    return sorted({report.language for report in result.reports if report.validated})


def _tool(method):
    """`method` as an async tool. It runs on a worker thread that the server abandons when the
    client goes (a slow call must not keep it alive), and an exception other than ToolError
    becomes one that says what it was: the SDK answers those with the tool's name alone."""

    @functools.wraps(method)
    async def tool(*args, **kwargs):
        try:
            return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs),
                                                  abandon_on_cancel=True)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(f"internal error: {type(exc).__name__}: {exc}") from exc

    return tool


def build(root: str | os.PathLike, model: str = "default") -> tuple[MCPServer, EditServer]:
    """The MCP server with the three tools over `root`, and the object behind the tools."""
    tools = EditServer(root, model)
    server = MCPServer("structured-edit", instructions=INSTRUCTIONS)
    server.add_tool(_tool(tools.propose_edit), name="propose_edit",
                    annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    server.add_tool(_tool(tools.apply_edit), name="apply_edit",
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True,
                                                idempotent_hint=False, open_world_hint=False))
    server.add_tool(_tool(tools.validate), name="validate",
                    annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    return server, tools


def serve(root: str | os.PathLike, model: str = "default") -> None:
    """Run the server on stdin/stdout until the client closes it, then exit at once.

    Calls still running then are abandoned: rule matching is killed (its edit then fails and
    writes nothing), an edit already writing its files finishes (the write lock waits for it),
    and a model still proposing is cut off with the process (proposals write nothing).
    """
    server, tools = build(root, model)
    server.run("stdio")
    timelimit.stop_all()
    with tools._write_lock:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
