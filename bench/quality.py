"""Edit quality (`edit bench quality`): pass@1 of each item's tests after the edit, per format, with
`whole` (the file rewritten) beside the structured formats. Results are dicts ready for JSON;
`markdown_quality` and `plot_quality` make the table and chart of docs/BENCHMARKS.md."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from editor.propose import FORMATS, Editor

from .items import Item, passes

def quality(editor: Editor, items: list[Item], formats: list[str], on_item=None) -> list[dict]:
    """pass@1 (greedy), well-formed rate and cost per format, all formats on the same items."""
    results = []
    for fmt in formats:
        rows = []
        for item in items:
            started = time.perf_counter()
            result = editor.edit(item.code, item.instruction, format=fmt, path="item.py", language="python")
            rows.append({"ok": result.ok, "passed": result.ok and passes(result.new_text, item.test),
                         "output_tokens": result.stats["output_tokens"],
                         "prompt_tokens": result.stats["prompt_tokens"],
                         "seconds": time.perf_counter() - started})
            if on_item:
                on_item(fmt, item, rows[-1])
        results.append({"format": fmt,
                        "pass_at_1": _mean(r["passed"] for r in rows),
                        "well_formed": _mean(r["ok"] for r in rows),
                        "mean_output_tokens": _mean(r["output_tokens"] for r in rows),
                        "mean_prompt_tokens": _mean(r["prompt_tokens"] for r in rows),
                        "mean_seconds": _mean(r["seconds"] for r in rows)})
    return results



def markdown_quality(report: dict) -> str:
    lines = [f"{report['benchmark']}, {report['model']}, {report['items']} items",
             "", "| format | pass@1 | well-formed | output tokens | prompt tokens | seconds/item |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['format']} | {r['pass_at_1']:.2f} | {r['well_formed']:.2f} | "
                     f"{r['mean_output_tokens']:.0f} | {r['mean_prompt_tokens']:.0f} | {r['mean_seconds']:.1f} |")
    return "\n".join(lines)



def plot_quality(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.5), squeeze=False)
    for ax, report in zip(axes[0], reports):
        names = [r["format"] for r in report["results"]]
        ax.bar(names, [r["pass_at_1"] for r in report["results"]], label="pass@1")
        ax.plot(names, [r["well_formed"] for r in report["results"]], "ko", label="well-formed")
        ax.set_ylim(0, 1)
        ax.set_title(f"{report['benchmark']} ({report['items']} items)")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _mean(values) -> float:
    values = [float(v) for v in values]
    return statistics.fmean(values) if values else 0.0


def check_formats(names: list[str]) -> list[str]:
    formats = list(FORMATS) if names == ["all"] else names
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose all or {', '.join(FORMATS)}")
    return formats
