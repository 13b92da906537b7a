"""The end-to-end benchmarks' items: EditEval and HumanEvalFix-Python from ../shared/benchmarks (or --data DIR),
each an instruction, the code before the edit and a test that tells a right edit from a wrong one."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# ../shared/benchmarks beside a source checkout; an installed package, or a clone without it, names the folder.
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
BENCHMARKS = {"editeval": "editeval.jsonl", "humanevalfix": "humanevalfix_python.jsonl"}


@dataclass(frozen=True)
class Item:
    task_id: str
    instruction: str
    code: str  # the file before the edit
    reference: str | None  # the file after a correct edit, when the benchmark has it
    test: str  # appended to the edited file; exits non-zero on failure


class MissingDataError(FileNotFoundError):
    """The benchmark's file is not where it was looked for; the message says where and what to do."""


def load_items(benchmark: str, limit: int | None = None, folder: Path | None = None) -> list[Item]:
    """The first `limit` items of `benchmark` from `folder` (default: ../shared/benchmarks)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose {', '.join(BENCHMARKS)}")
    path = (DEFAULT_DATA if folder is None else Path(folder)) / BENCHMARKS[benchmark]
    if not path.is_file():
        raise MissingDataError(f"benchmark data not found at {path}: the benchmarks read {BENCHMARKS[benchmark]} "
                               "from ../shared/benchmarks beside the project (see README); name another folder "
                               "with --data DIR")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        row = json.loads(line)
        if benchmark == "editeval":
            items.append(Item(row["task_id"], row["instruction"].strip(), row["input"].rstrip("\n") + "\n",
                              row["output"].rstrip("\n") + "\n", row["test"] + "\ncheck()\n"))
        else:
            code = row["prompt"] + row["buggy_solution"]
            items.append(Item(row["task_id"], row.get("instruction") or f"Fix bugs in {row['entry_point']}.",
                              code.rstrip("\n") + "\n", None, row["test"] + f"\ncheck({row['entry_point']})\n"))
    return items


def passes(code: str, test: str, timeout: float = 10.0) -> bool:
    """Runs code + test in a fresh interpreter; True when it exits 0 within the timeout."""
    with tempfile.TemporaryDirectory() as folder:
        program = Path(folder) / "item.py"
        program.write_text(code + "\n\n" + test, encoding="utf-8")
        try:
            done = subprocess.run([sys.executable, str(program)], cwd=folder, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
