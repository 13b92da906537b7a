"""The end-to-end benchmarks' items: EditEval and HumanEvalFix-Python from ../shared/benchmarks (or --data DIR),
each an instruction, the code before the edit and a test that tells a right edit from a wrong one.

`<benchmark>-long` places each item's code inside 300-800 lines of stdlib functions (`lengthen`), so that an
edit is made in a file as long as real ones; `steering_set` is the fixed sample the quality benchmark steers by."""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import json
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

# ../shared/benchmarks beside a source checkout; an installed package, or a clone without it, names the folder.
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
BENCHMARKS = {"editeval": "editeval.jsonl", "humanevalfix": "humanevalfix_python.jsonl"}
LONG = "-long"
NAMES = (*BENCHMARKS, *(name + LONG for name in BENCHMARKS))
# The steering set: this many items of each benchmark, drawn with random.Random("steer/<benchmark>").
STEER_SIZES = {"editeval": 60, "humanevalfix": 40}
# Stdlib modules whose plain top-level functions fill the long files (read as text, never imported).
FILLER_MODULES = ("posixpath", "ntpath", "genericpath", "textwrap", "fnmatch", "shlex", "difflib", "heapq", "bisect",
                  "colorsys", "calendar", "statistics", "base64", "quopri", "glob", "tokenize", "inspect", "gettext",
                  "mimetypes", "urllib/parse", "email/utils", "json/encoder", "pprint", "shutil", "tarfile", "zipfile")
FILLER_LINES = (300, 800)
FILLER_MAX_FUNCTION_LINES = 80
IMPORT_LINE = re.compile(r"(import|from)\s+[\w.]+")


@dataclass(frozen=True)
class Item:
    task_id: str
    instruction: str
    code: str  # the file before the edit
    reference: str | None  # the file after a correct edit, when the benchmark has it
    test: str  # appended to the edited file; exits non-zero on failure
    kept: tuple[str, ...] = ()  # texts a right edit leaves as they are (a long file's other functions)


class MissingDataError(FileNotFoundError):
    """The benchmark's file is not where it was looked for; the message says where and what to do."""


def load_items(benchmark: str, limit: int | None = None, folder: Path | None = None) -> list[Item]:
    """The first `limit` items of `benchmark` (one of NAMES) from `folder` (default: ../shared/benchmarks)."""
    if benchmark not in NAMES:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose {', '.join(NAMES)}")
    base = benchmark.removesuffix(LONG)
    path = (DEFAULT_DATA if folder is None else Path(folder)) / BENCHMARKS[base]
    if not path.is_file():
        raise MissingDataError(f"benchmark data not found at {path}: the benchmarks read {BENCHMARKS[base]} "
                               "from ../shared/benchmarks beside the project (see README); name another folder "
                               "with --data DIR")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        row = json.loads(line)
        if base == "editeval":
            items.append(Item(row["task_id"], row["instruction"].strip(), row["input"].rstrip("\n") + "\n",
                              row["output"].rstrip("\n") + "\n", row["test"] + "\ncheck()\n"))
        else:
            # HumanEvalFix's own instruction (OctoPack). The file's `instruction` field is HumanEvalSynthesize's
            # ("Write a Python function ..."), which never says that the code has a bug.
            items.append(Item(row["task_id"], f"Fix bugs in {row['entry_point']}.",
                              (row["prompt"] + row["buggy_solution"]).rstrip("\n") + "\n",
                              (row["prompt"] + row["canonical_solution"]).rstrip("\n") + "\n",
                              row["test"] + f"\ncheck({row['entry_point']})\n"))
    if benchmark.endswith(LONG):  # a fragment (an indented snippet, half a block) cannot be placed in a file
        return [lengthen(item) for item in items if compiles(item.reference)]
    return items


def compiles(code: str) -> bool:
    try:
        compile(code, "item.py", "exec")
    except SyntaxError:
        return False
    return True


def steering_set(items: list[Item], benchmark: str) -> list[Item]:
    """The fixed sample of `benchmark`'s items (all of them, loaded without a limit) that the quality benchmark
    steers by, in file order: the first STEER_SIZES ones in an order seeded by task id, so that a long set
    holds the same items as its benchmark, less the fragments it leaves out, and more in their place."""
    base = benchmark.removesuffix(LONG)
    order = sorted(items, key=lambda item: hashlib.sha256(f"steer/{base}/{item.task_id}".encode()).digest())
    chosen = {item.task_id for item in order[:STEER_SIZES[base]]}
    return [item for item in items if item.task_id in chosen]


def pick(items: list[Item], span: str) -> list[Item]:
    """items[A:B] for a span "A:B" (either end may be left out, as in Python)."""
    match = re.fullmatch(r"(\d*):(\d*)", span.strip())
    if not match:
        raise ValueError(f"expected A:B (e.g. 0:20 or 40:), not {span!r}")
    start, stop = (int(n) if n else None for n in match.groups())
    return items[start:stop]


# --- long files ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filler:
    name: str
    source: str  # the function's lines, from `def` to its end


@functools.lru_cache(maxsize=1)
def filler_pool() -> tuple[Filler, ...]:
    """Top-level functions of FILLER_MODULES that defining executes nothing else: no decorators, no annotations,
    constant defaults (a body's names are looked up only when it runs). First of each name, builtins' left out."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen = set(dir(builtins))
    pool = []
    for module in FILLER_MODULES:
        path = stdlib / f"{module}.py"
        text = (path if path.is_file() else stdlib / module / "__init__.py").read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.name not in seen and _defines_only(node) \
                    and node.end_lineno - node.lineno < FILLER_MAX_FUNCTION_LINES:
                seen.add(node.name)
                pool.append(Filler(node.name, "\n".join(lines[node.lineno - 1:node.end_lineno])))
    return tuple(pool)


def _defines_only(node: ast.FunctionDef) -> bool:
    args = node.args
    annotated = [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
                 if a is not None and a.annotation is not None]
    defaults = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    return (not node.decorator_list and node.returns is None and not annotated
            and all(isinstance(d, ast.Constant) for d in defaults))


def lengthen(item: Item) -> Item:
    """`item` with its code (and reference) placed at a seeded position among 300-800 lines of stdlib functions,
    the item's own imports kept at the top. Seeded by the task id: the same file on every run."""
    rng = random.Random(item.task_id)
    # Functions named like anything the item's texts mention could shadow or be shadowed by the item's own names.
    mentioned = set(re.findall(r"[A-Za-z_]\w*", item.code + (item.reference or "") + item.test))
    pool = [f for f in filler_pool() if f.name not in mentioned]
    rng.shuffle(pool)
    target, chosen, lines = rng.randint(*FILLER_LINES), [], 0
    for filler in pool:
        size = filler.source.count("\n") + 3  # its lines and the two blank lines before the next
        if lines + size <= FILLER_LINES[1]:
            chosen.append(filler.source)
            lines += size
        if lines >= target:
            break
    cut = rng.randint(0, len(chosen))

    def place(code: str) -> str:
        head, body = split_imports(code)
        return "\n\n\n".join(part for part in (head, *chosen[:cut], body, *chosen[cut:]) if part) + "\n"

    return replace(item, code=place(item.code), reference=place(item.reference) if item.reference else None,
                   kept=tuple(chosen))


def split_imports(code: str) -> tuple[str, str]:
    """(the leading imports, and a docstring before them; the rest), both without blank lines at their ends.
    Code with a syntax error (the bug to fix) keeps its leading one-line imports."""
    lines = code.splitlines()
    try:
        body = ast.parse(code).body
    except SyntaxError:
        end = next((i for i, line in enumerate(lines) if line.strip() and not IMPORT_LINE.match(line)), len(lines))
    else:
        end = 0
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                end = node.end_lineno
            elif end or not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                break
    return "\n".join(lines[:end]).strip("\n"), "\n".join(lines[end:]).strip("\n")


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
