"""Applier speed: apply + validate one hunk on a large file, and parse throughput per edit format.

    python bench/apply.py [--runs 50] [--json OUT]      (or: edit bench apply [--runs 50] [--json OUT])

1. A generated 5,000-line Python file gets a one-hunk apply_patch patch in its middle. Timed:
   parse + apply + tree-sitter validation in memory (`apply_edit` over MemoryFiles) for the first
   edit of a file (a full parse; target <= 20 ms) and for the next edit of the same file (the
   previous check's tree is reused: an incremental reparse), the same plus the atomic commit to a
   temp folder (temp file, fsync, rename), and validation alone.
2. Each format's `parse` on a large edit of its kind (1,000 hunks or ops; a rule is parsed 1,000
   times), in MB/s.

Medians over `--runs` runs (parse throughput: over min(runs, 10) runs, its inputs are larger).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from editor import formats, validation
from editor.applying import apply_edit
from editor.diffing import unified_diff
from editor.files import MemoryFiles, Workspace

FILE_LINES = 5000
TARGET_MS = 20.0
PATH = "big_module.py"


def generated_module(functions: int = FILE_LINES // 5) -> str:
    """A Python module of 5 lines per function: def, docstring, body, return, blank."""
    return "".join(f"def func_{i}(a, b):\n    \"\"\"Combine a and b ({i}).\"\"\"\n"
                   f"    total = a + b * {i}\n    return total\n\n" for i in range(functions))


def one_hunk_patch(middle: int = FILE_LINES // 10) -> str:
    return (f"*** Begin Patch\n*** Update File: {PATH}\n@@ def func_{middle}(a, b):\n"
            f"     \"\"\"Combine a and b ({middle}).\"\"\"\n"
            f"-    total = a + b * {middle}\n+    total = (a - b) * {middle}\n"
            f"     return total\n*** End Patch\n")


def changed_module(text: str, every: int = 25) -> str:
    """`text` with the body line of every `every`-th function changed: one hunk each."""
    return "".join(line.replace("a + b", "b - a") if n % (5 * every) == 2 else line
                   for n, line in enumerate(text.splitlines(keepends=True)))


def large_edits(text: str) -> dict[str, str]:
    """One large edit text per format, each changing every function of `text` (rules: one rule)."""
    new = changed_module(text, every=1)
    body = unified_diff(text, new, "a", "b").split("\n", 2)[2]  # hunks without the --- +++ header
    apply_patch = f"*** Begin Patch\n*** Update File: {PATH}\n" + "".join(
        "@@\n" + "".join(line + "\n" for line in hunk.splitlines()[1:])
        for hunk in body.split("@@ -")[1:]) + "*** End Patch\n"
    ot = formats.get("ot")
    ops, cursor = [], 0  # built directly: ot.diff's word matching is slow on 1,000 changes
    for line in text.splitlines(keepends=True):
        if "a + b" in line:
            ops += [ot.Retain(cursor + line.index("a + b")), ot.Delete("a + b"), ot.Insert("b - a")]
            cursor = len(line) - line.index("a + b") - len("a + b")
        else:
            cursor += len(line)
    rule = ("id: swap-operands\nlanguage: python\nrule:\n  pattern: $A + $B * $C\n"
            "fix: $B * $C + $A\n")
    return {
        "apply_patch": apply_patch,
        "udiff": unified_diff(text, new, f"a/{PATH}", f"b/{PATH}"),
        "ot": ot.render(ot.Edit(ops)),
        "rule": rule,
    }


def median_ms(function, runs: int, setup=None) -> float:
    """Median wall time of `function` in ms; `setup` runs untimed before each call."""
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run(runs: int = 50) -> dict:
    text = generated_module()
    patch, follow_up = one_hunk_patch(), one_hunk_patch(FILE_LINES // 10 + 100)
    validation.parser_for("python")  # grammar loading is a one-time cost, not an edit's
    patched = apply_edit(patch, format="apply_patch", files=MemoryFiles({PATH: text}),
                         dry_run=True).changes[0].new_text

    def applies(edit: str, files):
        """A timed call: apply `edit` to a fresh `files()` (MemoryFiles, or a Workspace on disk)."""
        def timed():
            result = apply_edit(edit, format="apply_patch", files=files())
            assert result.ok and len(result.changes) == 1, result.errors
        return timed

    def previous_edit_checked():
        # an agent's next edit: the last check parsed this file's current text, so its tree is cached
        validation.forget_trees()
        validation.check(PATH, text, patched)

    timings = {
        # a file never parsed before: one full tree-sitter parse
        "apply_validate_ms": median_ms(applies(patch, lambda: MemoryFiles({PATH: text})), runs, validation.forget_trees),
        "next_edit_ms": median_ms(applies(follow_up, lambda: MemoryFiles({PATH: patched})), runs, previous_edit_checked),
        "validate_ms": median_ms(lambda: validation.check(PATH, text, patched), runs,
                                 validation.forget_trees),
    }
    with tempfile.TemporaryDirectory() as root:
        target = Path(root) / PATH

        def fresh_file():
            target.write_text(text)
            validation.forget_trees()

        timings["apply_validate_commit_ms"] = median_ms(applies(patch, lambda: Workspace(root)), runs,
                                                          fresh_file)

    parse = {}
    for name, edit_text in large_edits(text).items():
        module = formats.get(name)
        repeat = 1 if len(edit_text) > 10_000 else 1000  # a rule is small: parse it many times
        ms = median_ms(lambda: [module.parse(edit_text) for _ in range(repeat)], min(runs, 10))
        size = len(edit_text.encode("utf-8"))
        parse[name] = {"bytes": size, "repeat": repeat, "ms": ms,
                       "mb_per_s": size * repeat / 1e6 / (ms / 1000)}

    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "runs": runs,
        "file_lines": len(text.splitlines()),
        "file_bytes": len(text.encode("utf-8")),
        **timings,
        "target_ms": TARGET_MS,
        "parse": parse,
    }


def to_markdown(results: dict) -> str:
    ok = "meets" if results["apply_validate_ms"] <= results["target_ms"] else "MISSES"
    lines = [
        f"One-hunk apply_patch patch on a generated {results['file_lines']:,}-line Python file "
        f"({results['file_bytes'] / 1000:.0f} kB), median of {results['runs']} runs "
        f"(Python {results['python']}, {results['machine']}):",
        "",
        "| step | median ms |",
        "|---|---:|",
        f"| parse + apply + validate, in memory, first edit of the file "
        f"({ok} the {results['target_ms']:.0f} ms target) | {results['apply_validate_ms']:.2f} |",
        f"| the same, next edit of the file (incremental reparse from the cached tree) "
        f"| {results['next_edit_ms']:.2f} |",
        f"| parse + apply + validate + atomic commit to disk (fsync) | {results['apply_validate_commit_ms']:.2f} |",
        f"| validate alone (full tree-sitter parse of the new text) | {results['validate_ms']:.2f} |",
        "",
        "Parse throughput (`formats.<name>.parse` on a large edit of each kind):",
        "",
        "| format | edit size | median ms | MB/s |",
        "|---|---:|---:|---:|",
    ]
    for name, row in results["parse"].items():
        size = f"{row['bytes'] / 1000:.1f} kB" + (f" x {row['repeat']}" if row["repeat"] > 1 else "")
        lines.append(f"| {name} | {size} | {row['ms']:.2f} | {row['mb_per_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    results = run(args.runs)
    print(to_markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
