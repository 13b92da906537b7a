"""`edit batch`: many (file, instruction, format) tasks through one Editor, several in flight at once so that a
server (vLLM) batches them, with the results in input order.

TASKS.jsonl holds one task a line: {"file": "src/app.py", "instruction": "...", "format": "auto"} (format
optional; files relative to the current folder). Each result is a line of RESULTS.jsonl:
    {"line", "file", "instruction", "format", "status", "used_format", "diff", "errors", "stats"}
status: "proposed" (an edit, not written), "written", "rejected" (every try refused, or the write refused)
or "error" (the server or the file failed: tried again on a rerun). A rerun with the same RESULTS.jsonl skips
the tasks done: written or rejected ones, and proposed ones unless the rerun writes (--yes).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .applying import write_proposal
from .errors import EditError
from .files import replace_text

DONE = ("written", "rejected")


@dataclass(frozen=True)
class Task:
    line: int  # 1-based, in the tasks file
    file: str
    instruction: str
    format: str = "auto"

    @property
    def key(self) -> tuple[str, str, str]:
        """What a result is matched to its task by on a rerun."""
        return (self.file, self.instruction, self.format)


def read_tasks(path: str | os.PathLike) -> list[Task]:
    """The tasks of a JSONL file. EditError naming the line for a malformed task, a missing file, or a file
    that two tasks name (their edits would race: give one task both instructions)."""
    tasks, seen = [], {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise EditError(f"not JSON: {error.msg}", file=str(path), line=number) from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                                    for k in ("file", "instruction")):
                raise EditError('a task is {"file": PATH, "instruction": TEXT, "format": FORMAT (optional)}',
                                file=str(path), line=number)
            fmt = row.get("format", "auto")
            if not isinstance(fmt, str):
                raise EditError(f"format must be a string, not {fmt!r}", file=str(path), line=number)
            if not Path(row["file"]).is_file():
                raise EditError(f"{row['file']}: no such file", file=str(path), line=number)
            real = os.path.realpath(row["file"])
            if real in seen:
                raise EditError(f"{row['file']} is also edited by line {seen[real]}: two edits of one file would "
                                "race; give one task both instructions", file=str(path), line=number)
            seen[real] = number
            tasks.append(Task(number, row["file"], row["instruction"], fmt))
    return tasks


def read_results(path: str | os.PathLike) -> dict[tuple[str, str, str], dict]:
    """The results of an earlier run (none when the file does not exist), by task key."""
    if not Path(path).exists():
        return {}
    results = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                results[(row["file"], row["instruction"], row["format"])] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                raise EditError("not a result of `edit batch`; name another --out", file=str(path),
                                line=number) from None
    return results


def is_done(row: dict | None, writing: bool) -> bool:
    return row is not None and (row["status"] in DONE or (row["status"] == "proposed" and not writing))


def run_batch(editor, tasks: list[Task], *, concurrency: int = 1, write: bool = False,
              previous: dict | None = None, on_result=None) -> list[dict]:
    """Every task's result, in input order: the tasks not done in `previous` are sent `concurrency` at a time.
    `write`: each accepted edit is written as it arrives (validated, atomic, refused if the file changed).
    `on_result(results so far, in input order; the task just finished)` after each task, from this thread."""
    previous = previous or {}
    results: dict[int, dict] = {t.line: previous[t.key] for t in tasks if is_done(previous.get(t.key), write)}
    todo = [t for t in tasks if t.line not in results]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        running = {pool.submit(_propose, editor, task): task for task in todo}
        for future in as_completed(running):
            task = running[future]
            row, result = future.result()
            if write and row["status"] == "proposed":
                _write(row, result)
            results[task.line] = row
            if on_result is not None:
                on_result([results[t.line] for t in tasks if t.line in results], task)
    return [results[t.line] for t in tasks]


def write_results(path: str | os.PathLike, rows: list[dict]) -> None:
    """RESULTS.jsonl, replaced whole and atomically (a stopped run leaves the last complete one)."""
    replace_text(Path(path), "".join(json.dumps(row) + "\n" for row in rows))


def _propose(editor, task: Task):
    """(result row, EditResult or None); never raises, so one bad task does not stop the batch."""
    row = {"line": task.line, "file": task.file, "instruction": task.instruction, "format": task.format}
    try:
        result = editor.edit(Path(task.file), task.instruction, format=task.format)  # named as `edit FILE` names it
    except Exception as error:  # the server, the file: recorded, and tried again on a rerun
        where = error if isinstance(error, EditError) else f"{type(error).__name__}: {error}"
        return {**row, "status": "error", "used_format": None, "diff": "", "stats": {},
                "errors": [{"file": task.file, "line": None, "message": str(where)}]}, None
    return {**row, "status": "proposed" if result.ok else "rejected", "used_format": result.format,
            "diff": result.diff, "errors": result.diagnostics, "stats": result.stats}, result


def _write(row: dict, result) -> None:
    errors = write_proposal(row["file"], result.old_text, result.new_text) if result.changes else []
    if errors:
        row["status"] = "rejected"
        row["errors"] = row["errors"] + [error.to_json() for error in errors]
    else:
        row["status"] = "written"
