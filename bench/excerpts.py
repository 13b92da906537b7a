"""What `auto` shows the model of a long file, without the model: for each item of a long steering set, the
excerpt `editor.focus.focus` picks (its lines: what a rewrite of it types and the prompt reads) and whether it
holds the item's own functions and classes (without them no answer can pass), for each cap on the excerpt's
size (`EXCERPT_MAX_LINES`) asked for.

    python -m bench.excerpts --benchmark editeval-long --max-lines 200,120
"""

from __future__ import annotations

import argparse
import ast
import statistics
from unittest import mock

from bench.items import load_items, steering_set
from editor import focus as focusing


def own_names(code: str) -> list[str]:
    """The top-level functions and classes an item's code defines (none when it does not parse)."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return []
    return [node.name for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def shows(excerpt: str, names: list[str]) -> bool:
    """Whether `excerpt` holds the definition of one of `names`."""
    return any(line.lstrip().startswith((f"def {name}(", f"async def {name}(", f"class {name}"))
               for line in excerpt.split("\n") for name in names)


def survey(benchmark: str, caps: list[int], folder=None) -> dict[int, list[tuple[str, int, bool]]]:
    """For each cap, each steering item's (task id, excerpt lines, item's own unit shown)."""
    items = steering_set(load_items(benchmark, folder=folder), benchmark)
    short = {item.task_id: item for item in load_items(benchmark.removesuffix("-long"), folder=folder)}
    rows: dict[int, list[tuple[str, int, bool]]] = {}
    for cap in caps:
        with mock.patch.object(focusing, "EXCERPT_MAX_LINES", cap):
            rows[cap] = []
            for item in items:
                view = focusing.focus(item.code, "item.py", item.instruction, "python")
                names = own_names(short[item.task_id].code)
                rows[cap].append((item.task_id, view.excerpt.count("\n"), shows(view.excerpt, names)))
    return rows


def table(rows: dict[int, list[tuple[str, int, bool]]]) -> str:
    lines = ["| cap (lines) | items | own unit shown | excerpt lines median / p90 / max |", "|---:|---:|---:|---:|"]
    for cap, found in rows.items():
        sizes = sorted(size for _, size, _ in found)
        p90 = sizes[min(len(sizes) - 1, int(0.9 * len(sizes)))]
        lines.append(f"| {cap} | {len(found)} | {sum(shown for *_, shown in found)} | "
                     f"{statistics.median(sizes):g} / {p90} / {sizes[-1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="editeval-long", choices=["editeval-long", "humanevalfix-long"])
    parser.add_argument("--max-lines", default=str(focusing.EXCERPT_MAX_LINES),
                        help="comma-separated caps on an excerpt's lines to compare")
    parser.add_argument("--data", default=None, help="the benchmarks' folder (default: ../shared/benchmarks)")
    args = parser.parse_args(argv)
    print(table(survey(args.benchmark, [int(cap) for cap in args.max_lines.split(",")], args.data)))


if __name__ == "__main__":
    main()
