"""Batch throughput (`edit bench batch`): EditEval items as an `edit batch` of files, sent to a server at several
concurrencies and, beside them, through the local engine one at a time; edits per minute, measured in one run.

Every config goes through `editor.batch.run_batch`, the code of `edit batch`, on a fresh copy of the items'
files, and writes its accepted edits (--yes): the written files are then tested (pass@1, outside the timing).
`same_as_first`: the items whose diff equals the first config's (greedy on the same model and prompt)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from editor.batch import Task, run_batch

from .items import Item, passes


def batch_config(name: str, editor, items: list[Item], *, fmt: str, concurrency: int, on_item=None) -> dict:
    """One config: every item as a task, `concurrency` in flight; the rows and the wall-clock."""
    with tempfile.TemporaryDirectory() as folder:
        tasks = []
        for i, item in enumerate(items):
            path = Path(folder) / f"item{i}.py"
            path.write_text(item.code, encoding="utf-8")
            tasks.append(Task(i + 1, str(path), item.instruction, fmt))
        started = time.perf_counter()
        rows = run_batch(editor, tasks, concurrency=concurrency, write=True,
                         on_result=lambda rows, task: on_item and on_item(name, len(rows), len(tasks)))
        seconds = time.perf_counter() - started
        passed = [row["status"] == "written" and passes(Path(row["file"]).read_text(encoding="utf-8"), item.test)
                  for row, item in zip(rows, items)]
    return {"config": name, "concurrency": concurrency, "items": len(items), "seconds": seconds,
            "edits_per_minute": 60 * len(items) / seconds,
            "written": sum(row["status"] == "written" for row in rows),
            "errors": sum(row["status"] == "error" for row in rows),
            "pass_at_1": sum(passed) / len(items) if items else 0.0,
            "output_tokens": sum(row["stats"].get("output_tokens", 0) for row in rows),
            "attempts": sum(row["stats"].get("attempts", 0) for row in rows),
            "diffs": [row["diff"] for row in rows]}


def compare(results: list[dict]) -> list[dict]:
    """Adds speed-up over the first config and how many diffs equal its diffs; drops the diffs."""
    first = results[0]
    for result in results:
        result["speedup_vs_first"] = result["edits_per_minute"] / first["edits_per_minute"]
        result["same_as_first"] = sum(a == b for a, b in zip(result["diffs"], first["diffs"]))
    for result in results:
        del result["diffs"]
    return results


def markdown_batch(report: dict) -> str:
    first = report["results"][0]["config"]
    lines = [f"{report['items']} EditEval items, format {report['format']}, max retries {report['max_retries']}, "
             f"model {report['model']}; speed-up and same diffs against {first}", "",
             "| config | edits/min | speed-up | seconds | written | pass@1 | output tokens | tries | same diffs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['config']} | {r['edits_per_minute']:.2f} | {r['speedup_vs_first']:.2f}x | "
                     f"{r['seconds']:.0f} | {r['written']} | {r['pass_at_1']:.2f} | {r['output_tokens']} | "
                     f"{r['attempts']} | {r['same_as_first']}/{r['items']} |")
    return "\n".join(lines)
