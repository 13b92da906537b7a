"""Edit quality (`edit bench quality`): pass@1 of each item's tests after the edit, per format, with
`whole` (the file rewritten) beside the structured formats, and why each failed item failed. Results are
dicts ready for JSON; `markdown_quality` and `plot_quality` make the table and chart of docs/BENCHMARKS.md.

A run of every format over a benchmark takes hours on a CPU: with a `ResultCache` each item's result is
kept as it is made, and a rerun with the same settings skips what is done."""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from editor import prompting
from editor.errors import EditError
from editor.focus import PICKED_GROUPS
from editor.files import replace_text
from editor.propose import FORMATS, Editor, choose_format, to_locate, view_for
from editor.request import format_grammar, locate_messages

from .items import Item, passes

PATH = "item.py"  # the name each item's file is edited under
# Why an item failed: the Editor's last rejected try (by its EditError class), or the item's tests.
FAILURES = ("no_parse", "no_match", "validation", "no_change", "dropped_code", "tests_failed", "runaway", "error")
ERROR_FAILURES = {"ParseError": "no_parse", "ApplyError": "no_match", "ValidationError": "validation",
                  "NoChangeError": "no_change", "StoppedError": "runaway"}
FAILURE_HEADERS = {"no_parse": "no parse", "no_match": "no match", "validation": "rejected by validation",
                   "no_change": "changes nothing", "dropped_code": "dropped code", "tests_failed": "tests failed",
                   "runaway": "budget or runaway", "error": "error"}
# Well-formed: the output parsed, applied and validated. An edit that changes nothing did all three (the
# Editor refuses it as a wrong edit, as the tests refuse another wrong one); every other failure but the
# tests' is the format's or the budget's.
WELL_FORMED_FAILURES = {None, "tests_failed", "dropped_code", "no_change"}
NO_CHANGE = "the edit changes nothing"
SEVERAL_SYNTAX_ERRORS = re.compile(r"[^:]+:\d+: new syntax error .*; [^:]+:\d+: new syntax error ")


MTP_WORDS = {True: "on", False: "off", None: "as cached"}  # a report made from the cache alone cannot tell


class ResultCache:
    """One small JSON file per (settings, format, item, prompt hash) under `folder`: a rerun with the same
    settings skips the items done, and a changed prompt (template or item) or grammar is run again."""

    def __init__(self, folder: Path, settings: dict):
        self.folder = Path(folder).joinpath(*(_slug(f"{key}-{settings[key]}") for key in sorted(settings)))

    def path(self, fmt: str, item: Item) -> Path:
        return self.folder / fmt / f"{_slug(item.task_id)}-{prompt_hash(fmt, item)[:16]}.json"

    def get(self, fmt: str, item: Item) -> dict | None:
        path = self.path(fmt, item)
        if not path.is_file():
            return None
        row = json.loads(path.read_text(encoding="utf-8"))
        if row["failure"] == "error" and row["message"] == NO_CHANGE:  # cached before NoChangeError had a kind
            row["failure"] = "no_change"
        if row["failure"] == "error" and SEVERAL_SYNTAX_ERRORS.match(row["message"] or ""):
            row["failure"] = "validation"  # cached before several validation errors kept their kind
        return row

    def put(self, fmt: str, item: Item, row: dict) -> None:
        path = self.path(fmt, item)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_text(path, json.dumps(row))  # a stopped run leaves no half-written result


def cache_settings(model: str, quantize: str, max_retries: int, *, server: str | None = None,
                   adapter: bool | str | Path = True) -> dict:
    """The settings a `ResultCache` is keyed by. A local model's LoRA adapter is one of them (by its weights'
    hash) when one is merged, so tuned and untuned results never mix; without one they are the keys of the runs
    made before adapters existed, whose results stay valid. A server's run is kept apart by its URL."""
    from decoding.adapter import adapter_key
    from decoding.model_loading import adapter_folder, resolve_quantize
    from decoding.model_registry import REGISTRY

    # "auto" is keyed by what it loads on this CPU, and "default" by the registry model it names, so rows of the
    # same weights meet whichever way they were asked for
    name = REGISTRY[model].name if model in REGISTRY else model
    settings = {"model": name, "quantize": resolve_quantize(quantize), "max_retries": max_retries}
    if server is not None:
        settings["server"] = server
        return settings
    folder = adapter_folder(model, adapter)
    if folder is not None:
        settings["adapter"] = adapter_key(folder)
    return settings


def prompt_hash(fmt: str, item: Item) -> str:
    """The first try's prompt as the Editor builds it (template, file or excerpt, instruction) and the grammar it is
    decoded under, hashed: a change to either runs the item again. A rewrite has no grammar and keys by its prompt."""
    view = view_for(fmt, PATH, item.code, item.instruction, "python")
    text = view.excerpt if view else item.code
    chat = prompting.messages(fmt, path=PATH, text=text, instruction=item.instruction, language="python")
    grammar = format_grammar(fmt, PATH, text, "python")
    key = chat if grammar is None else {"chat": chat, "grammar": grammar}
    # The model's pick of the unit (a greedy answer to this chat) decides the excerpt the answer is about.
    units = to_locate(fmt, PATH, item.code, item.instruction)
    if units:
        key = {"locate": locate_messages(PATH, units, item.instruction), "shown_with_the_pick": PICKED_GROUPS,
               "edit": key}
    return hashlib.sha256(json.dumps(key).encode("utf-8")).hexdigest()


def quality(editor: Editor | None, items: list[Item], formats: list[str], *, cache: ResultCache | None = None,
            on_item=None, cached_only: bool = False, rescored: bool = False) -> list[dict]:
    """pass@1 (greedy), well-formed rate, failure breakdown and cost per format, all formats on the same items.

    `auto` is the format `edit` picks for each item (`choose_format`); its result is that format's, run once
    and cached under that format, and each of its rows says which format it chose.
    `cached_only`: run nothing (no editor needed); report the items that every format has in `cache`.
    `rescored` (with `cached_only`): score each cached row's answer again with the applier as it is now
    (`rescore`), and keep the new row in `cache`."""
    if cached_only:
        items = [item for item in items if all(cache.get(_chosen(fmt, item), item) for fmt in formats)]
    results = []
    for fmt in formats:
        rows = []
        for item in items:
            chosen = _chosen(fmt, item)
            row = cache.get(chosen, item) if cache else None
            if row is not None and rescored:
                row, before = rescore(item, chosen, row), row
                if row != before:
                    cache.put(chosen, item, row)
            if row is None:
                row = run_item(editor, item, chosen)
                if cache:
                    cache.put(chosen, item, row)
            if fmt == "auto":
                row = {**row, "chosen": chosen}
            rows.append(row)
            if on_item:
                on_item(fmt, item, row)
        results.append(summarize(fmt, rows))
    return results


def _chosen(fmt: str, item: Item) -> str:
    return choose_format(item.instruction, "python", item.code) if fmt == "auto" else fmt


def run_item(editor: Editor, item: Item, fmt: str) -> dict:
    started = time.perf_counter()
    try:
        result = editor.edit(item.code, item.instruction, format=fmt, path=PATH, language="python")
    except Exception as exc:  # one item that breaks the pipeline is a finding, not the end of a run of hours
        return {"task_id": item.task_id, "ok": False, "passed": False, "failure": "error",
                "message": f"{type(exc).__name__}: {exc}", "attempts": 0, "output_tokens": 0, "prompt_tokens": 0,
                "seconds": time.perf_counter() - started}
    outcome = scored(item, result.new_text) if result.ok else rejected(result.diagnostics[-1])
    return {"task_id": item.task_id, **outcome,
            "attempts": result.stats["attempts"], "branches": result.stats.get("branches", 0),
            "cut_to_complete_hunks": result.stats.get("cut_to_complete_hunks", False),
            "output_tokens": result.stats["output_tokens"],
            "prompt_tokens": result.stats["prompt_tokens"], "seconds": time.perf_counter() - started,
            "answer": result.answer,  # kept so that a change of the applier can be scored without the model
            "about": result.stats.get("about")}  # the unit the model picked: which excerpt the answer is about


def scored(item: Item, new_text: str) -> dict:
    """The outcome of an accepted edit: its tests, and whether a long file's other functions survived (a
    rewrite that keeps only the item's function would pass its tests and still destroy the file)."""
    dropped = not all(text in new_text for text in item.kept)
    passed = not dropped and passes(new_text, item.test)
    return {"ok": True, "passed": passed, "failure": None if passed else "dropped_code" if dropped else "tests_failed",
            "message": None}


def rejected(diagnostic: dict) -> dict:
    """The outcome of an edit whose last try was rejected (`diagnostic`: that try's error, as EditResult keeps it)."""
    return {"ok": False, "passed": False, "failure": ERROR_FAILURES.get(diagnostic.get("error"), "error"),
            "message": diagnostic["message"]}


def rescore(item: Item, fmt: str, row: dict) -> dict:
    """`row` (a cached result of `fmt` on `item`) scored again from the answer it kept, through the applier as
    it is now (`Editor._apply`, as `edit` applies an answer), without the model: a fix of the applier, the
    excerpt's splicing or validation is measured in seconds. A row without an answer (cached before rows kept
    one, or whose run broke), or whose try was stopped before it was applied (runaway), is kept as it is."""
    if "answer" not in row or row["failure"] == "runaway":
        return row
    view = view_for(fmt, PATH, item.code, item.instruction, "python", row.get("about"))
    try:
        _, new_text = Editor._apply(fmt, PATH, item.code, row["answer"], "python", view, item.instruction)
    except EditError as exc:
        return {**row, **rejected({"error": type(exc).__name__, **exc.to_json()})}
    return {**row, **scored(item, new_text)}


def summarize(fmt: str, rows: list[dict]) -> dict:
    tokens, seconds = [r["output_tokens"] for r in rows], [r["seconds"] for r in rows]
    return {"format": fmt, "items": len(rows),
            "pass_at_1": _mean(r["passed"] for r in rows),
            "well_formed": _mean(r["failure"] in WELL_FORMED_FAILURES for r in rows),
            "failures": {kind: sum(r["failure"] == kind for r in rows) for kind in FAILURES},
            "mean_output_tokens": _mean(tokens),
            "median_output_tokens": statistics.median(tokens) if tokens else 0,
            "mean_prompt_tokens": _mean(r["prompt_tokens"] for r in rows),
            "mean_seconds": _mean(seconds),
            "p50_seconds": _percentile(seconds, 0.5),
            "p90_seconds": _percentile(seconds, 0.9),
            **({"chosen": dict(Counter(r["chosen"] for r in rows))} if fmt == "auto" else {}),
            "rows": rows}


def markdown_quality(report: dict) -> str:
    lines = [f"{report['benchmark']} ({report['set']}), {report['model']}, {report['quantize']}, "
             f"max retries {report['max_retries']}, MTP {MTP_WORDS[report['mtp']]}, {report['items']} items",
             "", "| format | pass@1 | well-formed | " + " | ".join(FAILURE_HEADERS[k] for k in FAILURES)
             + " | output tokens mean / median | prompt tokens | seconds p50 / p90 |",
             "|---|---:|---:|" + "---:|" * len(FAILURES) + "---:|---:|---:|"]
    for r in report["results"]:
        failures = " | ".join(str(r["failures"][k]) for k in FAILURES)
        name = r["format"] + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(r["chosen"].items())) + ")"
                              if "chosen" in r else "")
        lines.append(f"| {name} | {r['pass_at_1']:.2f} | {r['well_formed']:.2f} | {failures} | "
                     f"{r['mean_output_tokens']:.0f} / {r['median_output_tokens']:.0f} | "
                     f"{r['mean_prompt_tokens']:.0f} | {r['p50_seconds']:.1f} / {r['p90_seconds']:.1f} |")
    return "\n".join(lines)


def plot_quality(reports: list[dict], path: Path) -> None:
    """One chart per report: per format, a bar of the items that passed and, stacked on it, why the others failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 3.5), squeeze=False)
    for ax, report in zip(axes[0], reports):
        names = [r["format"] for r in report["results"]]
        bottom = [0.0] * len(names)
        for kind in ("passed", *FAILURES):
            shares = [r["pass_at_1"] if kind == "passed" else r["failures"][kind] / max(r["items"], 1)
                      for r in report["results"]]
            ax.bar(names, shares, bottom=bottom, label=FAILURE_HEADERS.get(kind, kind))
            bottom = [b + s for b, s in zip(bottom, shares)]
        ax.set_ylim(0, 1)
        ax.set_title(f"{report['benchmark']} ({report['items']} items)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)  # beside the bars, not on them
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _mean(values) -> float:
    values = [float(v) for v in values]
    return statistics.fmean(values) if values else 0.0


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a fraction q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def check_formats(names: list[str]) -> list[str]:
    formats = list(FORMATS) if names == ["all"] else names
    unknown = [f for f in formats if f not in (*FORMATS, "auto")]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose all, auto or {', '.join(FORMATS)}")
    return formats
