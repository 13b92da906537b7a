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

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import formats, validation
from .applying import apply_edit, syntax_errors
from .diffing import unified_diff
from .docstrings import docstrings_kept
from .errors import EditError, NoChangeError, ParseError, StoppedError, ValidationError
from .files import Document, FileChange, MemoryFiles, read_document
from .focus import TOP_LEVEL_START, focus, names_a_unit, outline, units_kept
from .request import REWRITES, build_request, is_code, locate_request, mtp_drafter
from .undefined_names import new_undefined_names

if TYPE_CHECKING:
    from decoding.generate import Stats

FORMATS = ("apply_patch", "udiff", "ot", "rule", "block", "excerpt", "whole")
# `auto`: an instruction about every use of something is a rule's job when ast-grep knows the language.
# Otherwise a short file is rewritten whole and a longer one through an excerpt (editor/focus.py: the units the
# instruction is about, rewritten whole). On the steering items the 0.5B model rewrote short files
# correctly more often than it wrote any structured format, and on long files a whole rewrite mostly dropped
# code while an excerpt rewrite is as short as a short file's (docs/BENCHMARKS.md, Edit quality).
WHOLE_MAX_LINES = 60
# Past this many lines, an edit (but a rule's, which is about every use, or a whole rewrite) shows the model an
# excerpt (`view_for`): on 300-800 line files the 0.5B model read 5,000-token prompts for most of a minute, then
# dropped code or edited the wrong units; it edits a screenful as well as a short file.
FOCUS_MIN_LINES = WHOLE_MAX_LINES
FOCUSED_FORMATS = ("apply_patch", "udiff", "ot", "block", "excerpt")
# A retry of a greedy Editor samples at this temperature (seeded: the same request gives the same edit). The
# retry prompt differs from the first only by the feedback, and greedy decoding of it mostly wrote the
# rejected answer again: on HumanEvalFix, block edits that "changed nothing" changed nothing on all three tries.
RETRY_TEMPERATURE = 0.7
# Tries after a rejected edit, by default none: with the 0.5B model, in three quality runs (97 items whose
# first try was rejected: EditEval and HumanEvalFix, apply_patch, block and whole, greedy and sampled retries),
# no retry was ever accepted, and each cost a full try (docs/BENCHMARKS.md, History). `max_retries` turns them
# on, for a model that uses the feedback.
DEFAULT_RETRIES = 0
# A greedy answer that changes nothing is wrong for sure when the instruction asks for a change, and the 1.5B model
# wrote one for most wrong HumanEvalFix block edits: its copy of the buggy line won by a small margin over the fix.
# So is one that adds a syntax error. Such a try is decoded again from its least sure tokens (`branch_points`),
# with the runner-up there: at most
# BRANCHES of them, each one whose runner-up had at least e^-BRANCH_MAX_GAP of the chosen token's
# probability (docs/BENCHMARKS.md, History: "An edit that changes nothing is decoded again from its least sure token").
BRANCHES = 2
# Why the first answer was decoded again (`EditResult.stats["first_answer"]`, the CLI's summary line).
REJECTED_BECAUSE = {NoChangeError: "changed nothing", ValidationError: "broke the code", StoppedError: "ran on"}
BRANCH_MAX_GAP = 2.0
SPACING = re.compile(r"\s+")
# A structured answer cut off at its output budget may end in a loop the repetition guard (three copies) did not
# prove: a unit written twice and begun a third time, lines that count (`lst[i+1]`, `lst[i+2]`). Read with digits
# as 0, it ends in BUDGET_LOOP_COPIES copies of BUDGET_LOOP_MIN_PERIOD tokens or more: so did 5 of the 1.5B's 15
# answers in bench/quality-cache cut off with no loop the guard proves (4 with a line start to branch at), and none
# of the 274 that ended by themselves.
BUDGET_LOOP_COPIES = 2
BUDGET_LOOP_MIN_PERIOD = 8
DIGIT = re.compile(r"[0-9]")
RECAST_FORMATS = ("apply_patch", "udiff", "ot", "block")  # the formats `EditResult.recast` writes a change in
LINE_FORMATS = ("apply_patch", "udiff")  # edits whose hunk lines are marked: context, removed or added
EVERY_USE = re.compile(r"\b(every|all|each|any)\b.*\b(call|calls|use|uses|usage|usages|occurrences?|instances?)\b"
                       r"|\breplace all\b", re.I)
RULE_LANGUAGES = {"python", "javascript", "typescript", "tsx", "rust", "go", "java", "c", "cpp", "ruby",
                  "bash", "css", "html", "json", "yaml"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```\s*\Z", re.S | re.M)


@dataclass
class EditResult:
    path: str
    format: str
    edit_text: str  # the model's last output (OT: resolved to counts; udiff: hunk counts made right)
    edit: object | None  # the parsed edit (None when every try was rejected)
    old_text: str
    new_text: str | None  # None when every try was rejected
    diff: str
    diagnostics: list[dict] = field(default_factory=list)  # errors of rejected tries, validation notes
    stats: dict = field(default_factory=dict)
    # The model's last output as the applier took it (about the excerpt the model saw, for an excerpt or a
    # focused block edit; before OT's quotes became counts): `Editor._apply` on it gives `new_text` again.
    answer: str = ""
    handed_out_as: str | None = None  # `recast`: the format `edit_text` was rendered in, whatever the model wrote

    @property
    def ok(self) -> bool:
        return self.new_text is not None

    @property
    def changes(self) -> list[FileChange]:
        if not self.ok or self.new_text == self.old_text:
            return []
        return [FileChange(self.path, Document(self.old_text), self.new_text)]

    @property
    def edit_format(self) -> str:
        """The format of `edit_text`, what `edit apply` takes: an excerpt answer is handed out as a block edit."""
        return self.handed_out_as or edit_format(self.format)

    def recast(self, fmt: str) -> EditResult:
        """This change handed out as an edit in `fmt` (apply_patch, udiff, ot or block), whatever format the model
        wrote: OT from a block edit, say, as correct as the block edit and not as the model's own OT. EditError
        where `fmt` cannot say the change (a block edit of a change outside every unit)."""
        if fmt not in RECAST_FORMATS:
            raise ParseError(f"cannot hand an edit out as {fmt!r}; choose one of {', '.join(RECAST_FORMATS)}")
        if not self.ok or fmt == self.edit_format:
            return self
        edit = file_edit(fmt, self.old_text, self.new_text, self.path)
        return replace(self, edit=edit, edit_text=formats.get(fmt).render(edit), handed_out_as=fmt)

    def to_json(self) -> dict:
        """`format`: that of `edit` (apply it with that format); `model_format`: what the model wrote."""
        return {"ok": self.ok, "path": self.path, "format": self.edit_format, "model_format": self.format,
                "edit": self.edit_text,
                "diff": self.diff, "errors": self.diagnostics, "stats": self.stats}


def choose_format(instruction: str, language: str | None, text: str = "") -> str:
    if language in RULE_LANGUAGES and EVERY_USE.search(instruction):
        return "rule"
    return "whole" if text.count("\n") <= WHOLE_MAX_LINES else "excerpt"


def strip_fence(text: str) -> str:
    match = FENCE.search(text.strip() + "\n")
    return match.group(1) if match else text


def whole_text(output: str, text: str) -> str:
    """The new file a `whole` answer gives for `text`: its code block, ending in a newline where `text` did."""
    new_text = strip_fence(output)
    return new_text + "\n" if text.endswith("\n") and not new_text.endswith("\n") else new_text


class Editor:
    """Loads a model once; `edit()` many files with it (the prompt prefix cache is reused).

    model: "default", "1.5b", a local HF folder, a hub id or a .gguf path. quantize: "auto" (bfloat16 on CPUs
    with AMX, float16 weights on other AVX2 CPUs, float32 elsewhere: `decoding.cpu_linear.auto_quantize`), "none",
    "float16", "bfloat16" or "int8" (`decoding.model_loading.load_model`).
    `spec=False` turns speculative decoding off (plain constrained decoding, the same output when greedy). `mtp` (on by
    default) adds the model's MTP heads, where it has some (shipped or native; float32, float16-weight and
    bfloat16 models, not int8), to the copy drafter; they draft in int8 (`MTPHeads.quantize_drafting`), which never changes the output.
    Each try's output budget follows the file and format (`request.output_budget`), capped by `max_new_tokens`.

    server: the URL of an OpenAI-compatible server (vLLM, docs/SERVING.md) that generates instead of a local
    model, or a `decoding.server_client.ServerClient`; only `model`'s tokenizer is loaded here, to build the
    same prompt. `server_model` names the served model (default: the server's only one); the auth token is
    read from $EDIT_SERVER_TOKEN. `grammar=False` sends no grammar: the output is unconstrained and the
    applier alone checks it (for servers that take no grammar).

    adapter: the LoRA adapter merged into a local model's weights at load (`decoding.model_loading.adapter_folder`):
    True, the one shipped for `model` if any; False, none (the untuned model, to compare); or an adapter folder
    (`edit model train-edit`'s output). A server serves its own weights.
    """

    def __init__(self, model: str | None = "default", *, quantize: str = "auto", threads: int | None = None,
                 spec: bool = True, max_retries: int = DEFAULT_RETRIES, temperature: float = 0.0, seed: int = 0,
                 max_new_tokens: int | None = None, model_obj=None, tokenizer=None, mtp_heads=None, mtp: bool = True,
                 server=None, server_model: str | None = None, grammar: bool = True, adapter: bool | str | os.PathLike = True):
        from .generation import LocalModel, ServerModel

        self._heads_of: str | os.PathLike | None = None  # the model whose own heads were loaded, if they were
        if server is not None:
            from decoding.server_client import ServerClient

            client = server if isinstance(server, ServerClient) else ServerClient(server, server_model)
            if tokenizer is None:
                from decoding.model_loading import load_tokenizer

                tokenizer = load_tokenizer(model)
            self.backend = ServerModel(client, tokenizer)
            mtp_heads = None
        else:
            if model_obj is None:
                from decoding.model_loading import load_drafting_heads, load_model

                model_obj, tokenizer = load_model(model, quantize=quantize, threads=threads, adapter=adapter)
                # Beside copy drafts, int8 MTP drafts are faster than copy drafts alone (docs/BENCHMARKS.md).
                if mtp_heads is None and spec and mtp:
                    mtp_heads = load_drafting_heads(model, model_obj)
                    self._heads_of = model  # reloaded by `requantize`, for the new lm_head
            self.backend = LocalModel(model_obj, tokenizer)
        self.tokenizer = tokenizer
        self.mtp_heads = mtp_heads
        # One MTP drafter for the Editor's life: it holds the target's hidden states for the prompt prefix
        # that the generator's KV cache keeps between calls; a new drafter per call would lack them.
        self.mtp_drafter = mtp_drafter(mtp_heads) if mtp_heads is not None else None
        self.spec = spec
        self.grammar = grammar
        self.max_retries = max_retries
        self.temperature = temperature
        self.seed = seed
        self.max_new_tokens = max_new_tokens

    def requantize(self, quantize: str) -> None:
        """Convert the local model's float32 weights to `quantize` (as `load_model` would have loaded them) in
        place, between edits: the daemon answers its first edit in float32, which loads at once, and packs
        float16 weights afterwards. MTP heads the Editor loaded are loaded again for the new lm_head, and the
        KV cache of the last prompt is computed again with the new weights (its float32 values would not give
        what the new weights give), so the next edit of the same file and format reuses it as before."""
        from decoding.model_loading import checked_quantize, load_drafting_heads, quantize_loaded

        from .generation import LocalModel

        if not isinstance(self.backend, LocalModel):
            raise ValueError("requantize needs a local model; a server keeps its own weights")
        prefix = self.backend.generator.cached_tokens
        model = quantize_loaded(self.backend.model, checked_quantize(quantize))
        self.backend = LocalModel(model, self.tokenizer)
        if self._heads_of is not None:
            self.mtp_heads = load_drafting_heads(self._heads_of, model)
            self.mtp_drafter = mtp_drafter(self.mtp_heads) if self.mtp_heads is not None else None
        self.backend.generator.prime(prefix, [self.mtp_drafter] if self.mtp_drafter is not None else [])

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
        from decoding.generate import Stats

        totals = Stats()
        # An excerpt edit shows the model only what the instruction is about (`focus`) and splices its answer back.
        about, prompt_tokens = self._locate(fmt, name, text, instruction, totals)
        view = view_for(fmt, name, text, instruction, language, about)
        shown = view.excerpt if view else text
        retries = self.max_retries if max_retries is None else max_retries
        feedback: list[tuple[str, str]] = []
        diagnostics: list[dict] = []
        attempts, branches, rejected, cut = 0, 0, "", False
        output, edit, new_text = "", None, None
        for attempt in range(retries + 1):
            request = self._request(fmt, name, shown, instruction, language, feedback)
            output, generation = self._generate(fmt, request, language, feedback, on_progress)
            totals.merge(generation.stats)
            prompt_tokens += len(request.prompt_ids)
            attempts += 1
            try:
                edit, new_text = self._accept(fmt, name, text, output, generation, request.max_new_tokens, language,
                                              view, instruction, check)
                if only_spacing(text, new_text):
                    # What a fix that kept the bug looks like ("n %2" for "n%2", a blank line less): decoded again
                    # as an edit that changes nothing is, and kept as it is where no branch changes more (it may
                    # be what was asked: "Format this").
                    markers = " " if fmt in LINE_FORMATS else ""
                    points = branch_points(generation, self.tokenizer, self.backend.eos_token_ids, markers=markers)
                    accepted, tried = self._branch(fmt, name, text, shown, instruction, language, feedback, view,
                                                   check, generation, request.max_new_tokens, points, totals,
                                                   on_progress)
                    branches += tried
                    if accepted is not None:
                        output, edit, new_text = accepted
                        rejected = rejected or "changed only spacing"
                break
            except (NoChangeError, ValidationError, StoppedError) as exc:
                error = exc
                # Changed nothing, or broke the code: the least sure tokens' runners-up (a line edit's markers
                # too: context for removed or added where it changed nothing, any other where it broke the
                # code). A structured edit that ran into a loop: the runner-up where the loop began to repeat
                # itself (an end of turn included). Not a rewrite's loop: cut there, it is a file cut short,
                # which a long file's kept units would pass off as an edit.
                if isinstance(exc, StoppedError):
                    points = loop_points(generation, self.tokenizer) if fmt not in REWRITES else []
                else:
                    markers = "" if fmt not in LINE_FORMATS else " " if isinstance(exc, NoChangeError) else " -+"
                    points = branch_points(generation, self.tokenizer, self.backend.eos_token_ids, markers=markers)
                accepted, tried = self._branch(fmt, name, text, shown, instruction, language, feedback, view, check,
                                               generation, request.max_new_tokens, points, totals, on_progress)
                branches += tried
                rejected = rejected or REJECTED_BECAUSE[type(exc)]
                if accepted is None and isinstance(exc, StoppedError) and fmt in LINE_FORMATS:
                    accepted = self._complete_hunks(fmt, name, text, output, language, view, instruction, check)
                    cut = accepted is not None
                if accepted is not None:
                    output, edit, new_text = accepted
                    break
            except EditError as exc:
                error = exc
            diagnostics.append({"attempt": attempt + 1, "error": type(error).__name__, **error.to_json()})
            feedback.append((output, str(error)))
            edit, new_text = None, None
        answer = output
        if fmt == "ot" and edit is not None and view is None:  # the model quotes; canonical OT has counts
            edit = formats.get("ot").resolve(text, edit)
            output = formats.get("ot").render(edit)
        if edit is not None and (view is not None or fmt in ("excerpt", "block")):  # about the excerpt, or repaired
            output = formats.get(edit_format(fmt)).render(edit)
        diff = unified_diff(text, new_text, "a/" + name, "b/" + name) if new_text is not None else ""
        return EditResult(name, fmt, output, edit, text, new_text, diff, diagnostics,
                          {**stats_json(totals, attempts, prompt_tokens, branches), "about": about,
                           "first_answer": rejected, "cut_to_complete_hunks": cut}, answer)

    # -- steps ------------------------------------------------------------------------------------------

    @staticmethod
    def _read(path_or_text, path: str | None) -> tuple[str, str]:
        if isinstance(path_or_text, os.PathLike) or (path is None and os.path.isfile(str(path_or_text))):
            file = Path(path_or_text)
            doc = read_document(path_or_text)
            return (path or file.name), doc.text
        return (path or "input.txt"), str(path_or_text)

    def _locate(self, fmt, name, text, instruction, totals) -> tuple[str | None, int]:
        """(the unit of a long file the instruction is about as the model picks it from the file's outline, the
        pick's prompt tokens) where an excerpt needs the pick (`to_locate`), else (None, 0). Its tokens and
        seconds count in `totals`."""
        units = to_locate(fmt, name, text, instruction)
        if not units:
            return None, 0
        backend = self.backend
        request = locate_request(self.tokenizer, name=name, outline=units, instruction=instruction,
                                 eos_token_ids=backend.eos_token_ids, vocab_size=backend.vocab_size,
                                 grammar=self.grammar, local=backend.local)
        output, generation = backend.generate(request, temperature=0.0, seed=self.seed, on_progress=None)
        totals.merge(generation.stats)
        picked = output.strip()
        return (picked if picked in dict(units) else None), len(request.prompt_ids)

    def _request(self, fmt, name, text, instruction, language, feedback):
        backend = self.backend
        return build_request(self.tokenizer, fmt, name=name, text=text, instruction=instruction, language=language,
                             feedback=feedback, eos_token_ids=backend.eos_token_ids, vocab_size=backend.vocab_size,
                             grammar=self.grammar, max_new_tokens=self.max_new_tokens, spec=self.spec,
                             mtp=self.mtp_drafter, local=backend.local)

    def _generate(self, fmt, request, language, feedback, on_progress, prefix=()):
        temperature = self.temperature or (RETRY_TEMPERATURE if feedback else 0.0)
        output, generation = self.backend.generate(request, temperature=temperature, seed=self.seed + len(feedback),
                                                   on_progress=on_progress, prefix=prefix)
        return as_taken(fmt, output, language), generation

    def _accept(self, fmt, name, text, output, generation, budget, language, view, instruction, check):
        """(edit, new text) of a try the Editor accepts; EditError (the reason) when it does not."""
        stopped(generation.finish_reason, budget, name)
        edit, new_text = self._apply(fmt, name, text, output, language, view, instruction)
        problem = check(new_text) if check else None
        if problem:
            raise EditError(problem, file=name)
        return edit, new_text

    def _branch(self, fmt, name, text, shown, instruction, language, feedback, view, check, generation,
                generation_budget, points, totals, on_progress):
        """A rejected greedy try (`generation`, with an output budget of `generation_budget` tokens, which its
        branches share) decoded again from each of `points` in turn, (position, token): its tokens up to the
        position, then that token (an end of turn ends the answer there, with nothing to decode). ((output, edit,
        new text) of the first branch accepted that changes more than spacing, else None; branches tried)."""
        from decoding.generate import Generation, Stats

        for tried, (position, token) in enumerate(points, 1):
            if token in self.backend.eos_token_ids:  # the answer ends there: nothing to decode
                branch = Generation(generation.tokens[:position], Stats(), "eos")
                output = as_taken(fmt, self.tokenizer.decode(branch.tokens, skip_special_tokens=True), language)
            else:
                request = self._request(fmt, name, shown, instruction, language, feedback)
                output, branch = self._generate(fmt, request, language, feedback, on_progress,
                                                generation.tokens[:position] + [token])
                totals.merge(branch.stats)
            accepted = self._changed(fmt, name, text, output, branch, generation_budget, language, view, instruction,
                                     check)
            if accepted is not None:
                return (output, *accepted), tried
        return None, len(points)

    def _changed(self, fmt, name, text, output, generation, budget, language, view, instruction, check):
        """(edit, new text) where the Editor accepts `output` (`_accept`) and it changes more than spacing (a
        runner-up that only spaces a line differently, "n %2" for "n%2", is no change either); else None."""
        try:
            edit, new_text = self._accept(fmt, name, text, output, generation, budget, language, view, instruction,
                                          check)
        except EditError:
            return None
        return None if only_spacing(text, new_text) else (edit, new_text)

    def _complete_hunks(self, fmt, name, text, output, language, view, instruction, check):
        """(output, edit, new text) of a line edit cut off at its budget or in a loop, cut to what it completed
        (`complete_hunks`: without its last hunk, else that hunk cut before the unit it ran on in), the first such
        cut accepted that changes more than spacing; else None. The 1.5B model's line edits mostly ran on after the
        change they were asked for: in a hunk of their own past the function's end, or adding a unit again and
        again (docs/BENCHMARKS.md, History)."""
        from decoding.generate import Generation, Stats

        ended = Generation([], Stats(), "eos")  # the answer as cut here ends: nothing of it is cut off any more
        for kept in complete_hunks(fmt, output):
            taken = as_taken(fmt, kept, language)
            accepted = self._changed(fmt, name, text, taken, ended, 0, language, view, instruction, check)
            if accepted is not None:
                return (taken, *accepted)
        return None

    @staticmethod
    def _apply(fmt, name, text, output, language, view=None, instruction=""):
        """(parsed edit, new text): the model's output applied to `text` in memory and validated, through
        the applier `edit apply` uses. EditError when it is rejected, or changes or deletes the file.
        With a `view`, the output edits the excerpt the model saw, spliced back into `text`; the edit handed
        out is then the same format's edit of the whole file (`file_edit`). A rewrite of an excerpt or of a long
        file that left off units keeps them (`focus.units_kept`), unless the instruction asks to remove them by
        name."""
        shown = view.excerpt if view is not None else text
        if fmt in REWRITES:
            new_shown, edit, errors = whole_text(output, shown), None, []
            # A rewrite of an excerpt, or of a file past a screenful, that leaves units out is a model that wrote
            # only what it changed: asked for the whole 300-800 line file, the 1.5B model wrote back the one
            # function it fixed on every long HumanEvalFix item it was asked about, and the rest was deleted.
            if view is not None or past_a_screenful(text):
                new_shown = units_kept(shown, new_shown, name, instruction)
        else:
            result = apply_edit(output, format=fmt, files=MemoryFiles({name: shown}), targets=[name],
                                language=language, dry_run=True)
            edit, errors = result.edit, result.errors
            new_shown = next((c.new_text for c in result.changes if c.path == name), shown)
        repaired = False  # docstrings put back: a block edit handed out is then the one that gives the new text
        if language == "python" and new_shown is not None and (fmt in REWRITES or fmt == "block"):
            kept = docstrings_kept(shown, new_shown, instruction)
            repaired, new_shown = kept != new_shown, kept
        new_text = view.splice(new_shown) if view is not None and new_shown is not None else new_shown
        if not errors and new_text is not None and (fmt in REWRITES or view is not None):
            errors = syntax_errors([FileChange(name, Document(text), new_text)], language)[1]
        if len(errors) > 1:  # the model is told every one of them, under their kind when they share one
            kinds = {type(error) for error in errors}
            kind = kinds.pop() if len(kinds) == 1 else EditError
            raise kind("; ".join(str(error) for error in errors), file=name)
        if errors:
            raise errors[0]
        if new_text is None:
            raise EditError("the edit deletes the file; it should change it", file=name)
        if new_text == text:
            raise NoChangeError("the edit changes nothing", file=name)
        missing = new_undefined_names(text, new_text) if language == "python" else {}
        if missing:  # the import the model forgot: rejected as a syntax error is, so that it branches
            line = next(iter(missing.values()))
            names = ", ".join(f"'{n}'" for n in missing)
            raise ValidationError(f"the edit reads {names}, which the file defines nowhere; import or define "
                                  f"{'it' if len(missing) == 1 else 'them'}", file=name, line=line)
        if fmt == "whole":
            edit = new_text
        elif fmt == "excerpt" or view is not None or repaired:
            edit = file_edit(fmt, text, new_text, name)
            if edit_format(fmt) == "block":  # the text the handed-out edit gives (its own blank lines between units)
                new_text = formats.get("block").apply_text(text, edit, name)
                if new_text == text:  # the answer only spaced units differently
                    raise NoChangeError("the edit changes nothing", file=name)
        return edit, new_text


def only_spacing(text: str, new_text: str) -> bool:
    """Whether `new_text` differs from `text` in whitespace alone."""
    return SPACING.sub("", new_text) == SPACING.sub("", text)


def past_a_screenful(text: str) -> bool:
    """Whether `text` is a long file (past FOCUS_MIN_LINES): edits see an excerpt of it, and a rewrite that leaves
    units out keeps them."""
    return text.count("\n") > FOCUS_MIN_LINES


def view_for(fmt: str, name: str, text: str, instruction: str, language: str | None, about: str | None = None):
    """The excerpt of `text` an edit in `fmt` shows the model (`focus`), or None: the whole file. Past a
    screenful (FOCUS_MIN_LINES) an edit in a FOCUSED_FORMATS sees the file's imports and the units the
    instruction is about (`about`: the one the model picked, `to_locate`); any edit of a shorter file sees it all."""
    if fmt in FOCUSED_FORMATS and past_a_screenful(text):
        return focus(text, name, instruction, language, about)
    return None


def to_locate(fmt: str, name: str, text: str, instruction: str) -> list[tuple[str, str]]:
    """The outline (`focus.outline`) the model picks the unit an edit is about from, or []: no pick needed.
    Only an excerpt needs one (`view_for`), and only when the instruction names none of the file's units
    outright and the outline offers a choice."""
    if fmt not in FOCUSED_FORMATS or not past_a_screenful(text) or names_a_unit(text, name, instruction):
        return []
    units = outline(text, name)
    return units if len(units) > 1 else []


def edit_format(fmt: str) -> str:
    """The format of the edit an answer in `fmt` is handed out as: an excerpt's is a block edit."""
    return "block" if fmt == "excerpt" else fmt


def file_edit(fmt: str, text: str, new_text: str, name: str):
    """The edit in `edit_format(fmt)` that turns the whole file `text` into `new_text` (an answer about an
    excerpt holds the excerpt's lines, offsets and units, not the file's); a block edit may space new units with
    other numbers of blank lines. EditError where the format cannot say the change (a block edit, a change outside
    every unit)."""
    handed_out = edit_format(fmt)
    try:
        if handed_out == "ot":
            return formats.get("ot").diff(text, new_text)
        if handed_out in ("apply_patch", "udiff"):
            return formats.get(handed_out).diff(text, new_text, name)
        block = formats.get("block")
        try:
            return block.edit_between(text, new_text, name)
        except ValueError:  # an excerpt's answer spaced its new units with more or fewer blank lines than a block edit does
            return block.edit_between(text, new_text, name, any_blank_runs=True)
    except ValueError as exc:
        raise EditError(str(exc), file=name) from None


def branch_points(generation, tokenizer, eos_token_ids, markers: str = "") -> list[tuple[int, int]]:
    """(position, token): where a greedy answer that changed nothing or broke the code is decoded again, and with
    which token there, least sure first. A point is a token the model chose inside a line it had begun (the change
    a wrong copy misses is in an expression, not in a new line or a new unit: at the start of a line the runner-up
    is mostly one more unit or the end marker too soon), over a runner-up within BRANCH_MAX_GAP of it that is more
    than other spacing. `markers` (apply_patch, udiff: the grammar fixes a context line's text, so the answer's
    only choices are its lines' markers): also a hunk line's start where the model chose one of these markers
    over a runner-up with another (' ' over '-' or '+': an answer that changed nothing; any: one that broke the
    code, as removing a docstring's closing line it meant to keep)."""
    points, line_has_text, line, in_hunk = [], False, "", False
    for position, (token, (gap, runner_up)) in enumerate(zip(generation.tokens, generation.runner_ups)):
        piece = tokenizer.decode([token])
        if runner_up is not None and runner_up not in eos_token_ids and gap <= BRANCH_MAX_GAP:
            other = tokenizer.decode([runner_up])
            if line_has_text and other.strip() != piece.strip():  # not "%" for " %"
                points.append((gap, position, runner_up))
            elif (in_hunk and not line and piece[:1] and piece[:1] in markers and other[:1] in " -+"
                  and other[:1] != piece[:1]):
                points.append((gap, position, runner_up))
        line += piece
        if "\n" in piece:
            finished, line = line.rsplit("\n", 1)
            last = finished.rsplit("\n", 1)[-1]
            in_hunk = last.startswith("@@") or (in_hunk and last[:1] in " -+" and not last.startswith(("---", "+++")))
            line_has_text = bool(line.strip())
        elif piece.strip():
            line_has_text = True
    return [(position, runner_up) for _, position, runner_up in sorted(points)[:BRANCHES]]


def as_taken(fmt: str, output: str, language: str | None) -> str:
    """The answer as the applier takes it: a unified diff's hunk headers counted right (its grammar cannot count);
    a block edit of code ended as its grammar lets one end (`block.closed`)."""
    if fmt == "udiff":
        return formats.get("udiff").recount(output)
    if fmt == "block" and is_code(language):
        return formats.get("block").closed(output)
    return output


def complete_hunks(fmt: str, output: str) -> list[str]:
    """What a line edit (apply_patch, udiff) cut off before it ended completed, each ended as its format ends: the
    edit without its last hunk (the one it was writing) and the file headers left before it, where a hunk is left;
    then the edit with that hunk cut before the top-level unit it began adding a second time, else before the
    last one it began (`_unit_cut`). A run-on hunk of its own past the change asked for goes first; the hunks
    before it may change nothing (context only), and the change be in the hunk it ran on in."""
    lines = output.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("@@")]
    if not starts:
        return []
    cuts = []
    if len(starts) > 1:
        kept = lines[:starts[-1]]
        while kept and kept[-1].startswith(("*** ", "--- ", "+++ ")) and not kept[-1].startswith("*** End of File"):
            kept.pop()
        cuts.append(kept)
    cut = _unit_cut(lines, starts[-1])
    if cut is not None:
        cuts.append(lines[:cut])
    end = ["*** End Patch"] if fmt == "apply_patch" else []
    return ["\n".join(kept + end) + "\n" for kept in cuts]


def _unit_cut(lines: list[str], hunk: int) -> int | None:
    """Where to cut the hunk starting at line `hunk` short, inside the added lines it ends in: before the first
    one that starts a top-level unit (`focus.TOP_LEVEL_START`) a second time (EditEval/165: the same function
    added four times, to the budget), else before the last one that starts one (cut off there: a `__main__`
    block of prints); None when those added lines begin no unit past their first line (a cut there would keep
    lines removed before them, and none of what replaces them)."""
    end = len(lines) - (lines[-1] == "")  # an answer cut off at a line's end
    run = end
    while run > hunk + 1 and lines[run - 1].startswith("+"):
        run -= 1
    cut, seen = None, set()
    for i in range(run, end):
        if TOP_LEVEL_START.match(lines[i][1:]):
            if lines[i] in seen:  # the first unit begun again
                cut = i
                break
            seen.add(lines[i])
            cut = i  # else the last one begun
    if cut is None or cut == run:
        return None
    while cut > run and not lines[cut - 1][1:].strip():  # the blank lines above the unit go with it
        cut -= 1
    return cut


def loop_points(generation, tokenizer) -> list[tuple[int, int]]:
    """[(position, token)] where a try stopped in a loop (`decoding.generate.loop_start`) is decoded again: the
    first line start in the loop's second copy (its first token may still be the first copy's, where text before
    the loop happened to end as the loop does), and the runner-up there, which may end the answer (the first copy
    may have been all it needed); [] when the output ends in no loop or that token was forced. An output cut off
    at its budget may end in a loop the repetition guard's three copies miss (`BUDGET_LOOP_COPIES`): one of whole
    lines (EditEval/113's apply_patch, one line counting 0 to 39 and on, was decoded again from another number
    and counted on to the budget: 518 s against 175)."""
    from decoding.generate import loop_start

    tokens = generation.tokens
    found = exact = loop_start(tokens)
    if exact is None and generation.finish_reason == "length":
        found = loop_start(digits_as_zero(tokens, tokenizer), copies=BUDGET_LOOP_COPIES,
                           min_period=BUDGET_LOOP_MIN_PERIOD)
    if found is None:
        return []
    second, period = found
    starts = [p for p in range(second, second + period) if tokenizer.decode(tokens[p - 1:p]).endswith("\n")]
    if not starts and exact is None:  # numbers counting on in one line: the runner-up there counts on too
        return []
    position = starts[0] if starts else second
    runner_up = generation.runner_ups[position][1] if position < len(generation.runner_ups) else None
    return [] if runner_up is None else [(position, runner_up)]


def digits_as_zero(tokens: list[int], tokenizer) -> list[int]:
    """`tokens` as ids of their text with every digit made 0: lines that count (`lst[i+1]`, `lst[i+2]`) repeat."""
    ids: dict[str, int] = {}
    return [ids.setdefault(DIGIT.sub("0", tokenizer.decode([token])), len(ids)) for token in tokens]


def stopped(finish_reason: str, budget: int, name: str) -> None:
    """StoppedError when the output was cut off: its error, fed back, tells the model why."""
    if finish_reason == "repetition":
        raise StoppedError("stopped: the output repeats itself; write the edit once, then end", file=name)
    if finish_reason == "length":
        raise StoppedError(f"output budget of {budget} tokens reached before the edit ended; keep the edit to "
                           "what was asked", file=name)


def stats_json(stats: Stats, attempts: int, prompt_tokens: int, branches: int = 0) -> dict:
    """`EditResult.stats`: the tries' generation stats summed (their branches' included)."""
    return {"attempts": attempts, "branches": branches, "prompt_tokens": prompt_tokens,
            "output_tokens": stats.new_tokens,
            "seconds": stats.seconds, "model_calls": stats.model_calls, "forced_tokens": stats.forced_tokens,
            "verifications": stats.verifications, "accepted_per_drafter": stats.accepted_per_drafter,
            "mean_accepted": stats.mean_accepted, "tokens_per_s": stats.tokens_per_s}
