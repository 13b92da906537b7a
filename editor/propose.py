"""`Editor`: instruction -> structured edit by a local model -> parsed, applied in memory, validated.

The pipeline of one request:
    prompt (prompts/<format>.txt, the model's chat template)
 -> constrained speculative generation (decoding/: the format's grammar narrowed to this file,
    copy drafts from the file, MTP drafts when the model has heads)
 -> parse -> apply in memory -> tree-sitter validation
 -> on rejection, the error goes back to the model and it tries again (up to max_retries).
Nothing is written here: `EditResult.changes` is what `edit` writes after the user says yes.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import grammars

from . import formats, prompting, validation
from .errors import EditError, ParseError
from .files import Document, FileChange, MemoryFiles, decode, read_regular, unified_diff

FORMATS = ("apply_patch", "udiff", "ot", "rule", "whole")
# `auto`: an instruction about every use of something is a rule's job when ast-grep knows the language.
# Otherwise a short file is rewritten whole and a longer one patched: on EditEval the default 0.5B model
# rewrote short files correctly far more often than it patched them (docs/BENCHMARKS.md), copy drafting
# makes rewriting a short file cheap, and past a screenful a patch is much the shorter output.
WHOLE_MAX_LINES = 60
# MTP drafts end where the heads' confidence in the whole draft falls below this (`MTPHeads.draft`):
# chosen with `edit bench decode` (docs/BENCHMARKS.md, Decoding).
MTP_MIN_CONFIDENCE = 0.4
EVERY_USE = re.compile(r"\b(every|all|each|any)\b.*\b(call|calls|use|uses|usage|usages|occurrences?|instances?)\b"
                       r"|\breplace all\b", re.I)
RULE_LANGUAGES = {"python", "javascript", "typescript", "tsx", "rust", "go", "java", "c", "cpp", "ruby",
                  "bash", "css", "html", "json", "yaml"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```\s*\Z", re.S | re.M)


@dataclass
class EditResult:
    path: str
    format: str
    edit_text: str  # the model's last output
    edit: object | None  # the parsed edit (None when every try was rejected)
    old_text: str
    new_text: str | None  # None when every try was rejected
    diff: str
    diagnostics: list[dict] = field(default_factory=list)  # errors of rejected tries, validation notes
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.new_text is not None

    @property
    def changes(self) -> list[FileChange]:
        if not self.ok or self.new_text == self.old_text:
            return []
        return [FileChange(self.path, Document(self.old_text), self.new_text)]

    def to_json(self) -> dict:
        return {"ok": self.ok, "path": self.path, "format": self.format, "edit": self.edit_text,
                "diff": self.diff, "errors": self.diagnostics, "stats": self.stats}


def choose_format(instruction: str, language: str | None, text: str = "") -> str:
    if language in RULE_LANGUAGES and EVERY_USE.search(instruction):
        return "rule"
    return "whole" if text.count("\n") <= WHOLE_MAX_LINES else "apply_patch"


# Line formats quote a file's lines behind a one-character marker: " " for context, "-" for removal.
QUOTE_MARKERS = {"apply_patch": " -", "udiff": " -"}


def copy_sources(fmt: str, text: str) -> list[str]:
    """The texts a copy drafter matches the output against: the file, and the file as `fmt` quotes it.

    A patch's context lines are the file's lines behind a space, and BPE splits " " + line + " " + line
    unlike line + line (the marker merges with the indentation, a blank line is "\n \n"): against the
    plain file a copy draft breaks at every line start, against the quoted file it runs on through a
    whole stretch of context or removed lines."""
    lines = text.splitlines(keepends=True)
    return [text] + ["".join(marker + line for line in lines) for marker in QUOTE_MARKERS.get(fmt, "")]


def copy_drafter(tokenizer, fmt: str, text: str):
    """The copy drafter for an answer in `fmt` about `text` (over `copy_sources`)."""
    from decoding.drafters import CopyDrafter

    return CopyDrafter([tokenizer.encode(source, add_special_tokens=False) for source in copy_sources(fmt, text)])


def output_budget(tokenizer, text: str, max_new_tokens: int) -> int:
    """Most tokens an answer about `text` may take: an edit is shorter than a rewrite of the file, and a
    budget past that only lets a looping model loop."""
    return min(max_new_tokens, 2 * len(tokenizer.encode(text, add_special_tokens=False)) + 256)


def editor_mtp_drafter(heads):
    """The MTP drafter as `edit` drafts with it (drafts cut at MTP_MIN_CONFIDENCE)."""
    from decoding.drafters import MTPDrafter

    return MTPDrafter(heads, min_confidence=MTP_MIN_CONFIDENCE)


def strip_fence(text: str) -> str:
    match = FENCE.search(text.strip() + "\n")
    return match.group(1) if match else text


class Editor:
    """Loads a model once; `edit()` many files with it (the prompt prefix cache is reused).

    model: "default", "1.5b", a local HF folder, a hub id or a .gguf path. `spec=False` turns
    speculative decoding off (plain constrained decoding, the same output when greedy). `mtp` (on by
    default) adds the model's MTP heads, where it has some (shipped or native; float32 models only), to
    the copy drafter; they draft in int8 (`MTPHeads.quantize_drafting`), which never changes the output.
    """

    def __init__(self, model: str | None = "default", *, quantize: str = "none", threads: int | None = None,
                 spec: bool = True, max_retries: int = 2, temperature: float = 0.0, seed: int = 0,
                 max_new_tokens: int = 1024, model_obj=None, tokenizer=None, mtp_heads=None, mtp: bool = True):
        from decoding.generate import Generator

        if model_obj is None:
            from decoding.loading import load_drafting_heads, load_model

            model_obj, tokenizer = load_model(model, quantize=quantize, threads=threads)
            # Beside copy drafts, int8 MTP drafting measured 0.97-1.12x copy drafting alone with the
            # grammar and 1.05-1.19x without (docs/BENCHMARKS.md, Decoding); in float32, 0.98x.
            if mtp_heads is None and spec and mtp:
                mtp_heads = load_drafting_heads(model, model_obj)
        self.model, self.tokenizer = model_obj, tokenizer
        self.mtp_heads = mtp_heads
        # One MTP drafter for the Editor's life: it holds the target's hidden states for the prompt prefix
        # that the generator's KV cache keeps between calls; a new drafter per call would lack them.
        self.mtp_drafter = editor_mtp_drafter(mtp_heads) if mtp_heads is not None else None
        self.spec = spec
        self.max_retries = max_retries
        self.temperature = temperature
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.generator = Generator(model_obj, tokenizer)
        self.vocab_size = model_obj.get_output_embeddings().out_features  # int8 layers have no .weight tensor

    def edit(self, path_or_text: str | os.PathLike, instruction: str, *, format: str = "auto",
             path: str | None = None, language: str | None = None, max_retries: int | None = None,
             check=None, on_progress=None) -> EditResult:
        """Propose an edit of a file (a path) or of a text (give `path` to name it for the language).

        `check(new_text) -> str | None`: an extra acceptance test (tests inject failures through it);
        a returned message rejects the try like a validation error would.
        """
        name, text = self._read(path_or_text, path)
        language = validation.detect_language(name, text, language)
        fmt = choose_format(instruction, language, text) if format == "auto" else format
        if fmt not in FORMATS:
            raise ParseError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
        retries = self.max_retries if max_retries is None else max_retries
        feedback: list[tuple[str, str]] = []
        diagnostics: list[dict] = []
        totals = {"attempts": 0, "prompt_tokens": 0, "output_tokens": 0, "seconds": 0.0, "model_calls": 0,
                  "forced_tokens": 0, "verifications": 0, "accepted_per_drafter": {}}
        output = ""
        for attempt in range(retries + 1):
            output, stats, prompt_len = self._generate(fmt, name, text, instruction, language, feedback,
                                                       on_progress)
            _add_stats(totals, stats, prompt_len)
            if fmt == "udiff":  # the grammar cannot count lines: make the hunk headers' counts right
                output = formats.get("udiff").recount(output)
            try:
                edit, new_text = self._apply(fmt, name, text, output, language)
                problem = check(new_text) if check else None
                if problem:
                    raise EditError(problem, file=name)
            except EditError as exc:
                diagnostics.append({"attempt": attempt + 1, **exc.to_json()})
                feedback.append((output, str(exc)))
                continue
            return EditResult(name, fmt, output, edit, text, new_text,
                              unified_diff(text, new_text, "a/" + name, "b/" + name), diagnostics,
                              _finish(totals))
        return EditResult(name, fmt, output, None, text, None, "", diagnostics, _finish(totals))

    # -- steps ------------------------------------------------------------------------------------------

    @staticmethod
    def _read(path_or_text, path: str | None) -> tuple[str, str]:
        if isinstance(path_or_text, os.PathLike) or (path is None and os.path.isfile(str(path_or_text))):
            file = Path(path_or_text)
            doc = decode(read_regular(file, str(path_or_text))[0], str(path_or_text))
            return (path or file.name), doc.text
        return (path or "input.txt"), str(path_or_text)

    def _generate(self, fmt, name, text, instruction, language, feedback, on_progress):
        from decoding.drafters import CombinedDrafter

        prompt_ids, constraint = build_request(self.tokenizer, fmt, name=name, text=text, instruction=instruction,
                                               language=language, feedback=feedback,
                                               eos_token_ids=self.generator.eos_token_ids,
                                               vocab_size=self.vocab_size)
        drafters = []
        if self.spec:
            copy = copy_drafter(self.tokenizer, fmt, text)
            if self.mtp_drafter is not None:
                drafters.append(CombinedDrafter(self.mtp_drafter, copy))
            else:
                drafters.append(copy)
        self.generator.drafters = drafters
        budget = output_budget(self.tokenizer, text, self.max_new_tokens)
        generation = self.generator.generate(prompt_ids, constraint, max_new_tokens=budget,
                                             temperature=self.temperature, seed=self.seed,
                                             on_progress=on_progress)
        output = self.tokenizer.decode(generation.tokens, skip_special_tokens=True)
        return output, generation.stats, len(prompt_ids)

    @staticmethod
    def _apply(fmt, name, text, output, language):
        if fmt == "whole":
            new_text = strip_fence(output)
            if text.endswith("\n") and not new_text.endswith("\n"):
                new_text += "\n"
            edit = new_text
        else:
            module = formats.get(fmt)
            edit = module.parse(output)
            files = MemoryFiles({name: text})
            if fmt == "rule":
                changes = module.apply_to_paths(files, edit, [name])
            else:
                changes = module.apply(files, edit, target=name)
            new_text = next((c.new_text for c in changes if c.dest == name), text)
        if new_text == text:
            raise EditError("the edit changes nothing", file=name)
        report = validation.check(name, text, new_text, language)
        if report.new_issues:
            raise EditError("the edit introduces syntax errors: "
                            + "; ".join(issue.describe() for issue in report.new_issues), file=name)
        return edit, new_text


def build_request(tokenizer, fmt: str, *, name: str, text: str, instruction: str, language: str | None,
                  feedback=(), eos_token_ids=(), vocab_size: int | None = None, grammar: bool = True):
    """(prompt token ids, constraint or None) for one request: the format's prompt through the chat
    template, and its grammar narrowed to this file (`whole` has none)."""
    from decoding.constraint import GrammarConstraint, tokenizer_for

    chat = prompting.messages(fmt, path=name, text=text, instruction=instruction, language=language,
                              feedback=feedback)
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    if fmt == "whole" or not grammar:
        return prompt_ids, None
    narrowed = grammars.document_grammar(fmt, **_narrowing(fmt, name, text, language))
    check = functools.partial(formats.get("ot").prefix_ok, text) if fmt == "ot" else None
    constraint = GrammarConstraint(tokenizer_for(tokenizer, sorted(eos_token_ids)), narrowed,
                                   token_check=check, vocab_size=vocab_size)
    return prompt_ids, constraint


def _narrowing(fmt: str, name: str, text: str, language: str | None) -> dict:
    marked = grammars.markers(fmt)
    narrowing = {}
    if "DOC_LINE" in marked and text:  # an empty file has no line to quote
        narrowing["document"] = text
    if "PATH" in marked:
        narrowing["paths"] = [name]
    if "LANGUAGE" in marked and language:
        narrowing["language"] = language
    return narrowing


def _add_stats(totals: dict, stats, prompt_len: int) -> None:
    totals["attempts"] += 1
    totals["prompt_tokens"] += prompt_len
    totals["output_tokens"] += stats.new_tokens
    totals["seconds"] += stats.seconds
    totals["model_calls"] += stats.model_calls
    totals["forced_tokens"] += stats.forced_tokens
    totals["verifications"] += stats.verifications
    totals.setdefault("verified_tokens", 0)
    totals["verified_tokens"] += stats.verified_tokens
    for name, count in stats.accepted_per_drafter.items():
        totals["accepted_per_drafter"][name] = totals["accepted_per_drafter"].get(name, 0) + count


def _finish(totals: dict) -> dict:
    verified = totals.pop("verified_tokens", 0)
    totals["mean_accepted"] = verified / totals["verifications"] if totals["verifications"] else 0.0
    totals["tokens_per_s"] = totals["output_tokens"] / totals["seconds"] if totals["seconds"] else 0.0
    return totals
