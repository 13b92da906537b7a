"""One request to the model, built the way `edit` builds it: the format's prompt through the chat template,
the format's grammar narrowed to this file, the drafters, and the output budget.

The Editor, `edit bench decode` and the MTP trainer's own-answer generation all build their requests here,
so "decode the way `edit` does" is written once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import grammars

from . import formats, prompting

# MTP drafts end where the heads' confidence in the whole draft falls below this (`MTPHeads.draft`):
# chosen with `edit bench decode` (docs/BENCHMARKS.md, Decoding).
MTP_MIN_CONFIDENCE = 0.4
# Line formats quote a file's lines behind a one-character marker: " " for context, "-" for removal.
QUOTE_MARKERS = {"apply_patch": " -", "udiff": " -"}
# A structured edit quotes what it changes (context and removed lines, whole units) and writes the new text: twice
# the file covers changing all of it. Past STRUCTURED_MAX_QUOTE tokens of file (about 100 lines) an edit that
# large is a rewrite, so the budget stops growing with the file and a rambling try on a long file ends in seconds.
STRUCTURED_MAX_QUOTE = 1024
STRUCTURED_MARGIN = 128  # headers, markers, a few added lines
# Languages whose text may hold Markdown fences and lines starting "***" (a block edit's code lines may not).
PROSE_LANGUAGES = (None, "markdown", "text", "json", "yaml", "toml", "html")
# Answers that are the new text itself (of the file, of an excerpt of it), decoded without a grammar.
REWRITES = ("excerpt", "whole")


@dataclass
class Request:
    prompt_ids: list[int]
    grammar: str | None  # the format's Lark grammar narrowed to the file; None: `whole`, or built without it
    constraint: object | None  # a GrammarConstraint over `grammar` (None without it, or for a server)
    drafters: list  # what `Generator.generate` drafts with
    max_new_tokens: int  # the output budget (`output_budget`)


def build_request(tokenizer, fmt: str, *, name: str, text: str, instruction: str, language: str | None,
                  feedback=(), eos_token_ids=(), vocab_size: int | None = None, grammar: bool = True,
                  max_new_tokens: int | None = None, spec: bool = True, mtp=None, local: bool = True) -> Request:
    """The request for an edit of `text` (called `name`) in `fmt`. `spec`: draft from the file (copy), with
    `mtp` (an MTPDrafter, see `mtp_drafter`) beside it when given; `grammar=False` leaves the grammar out;
    `max_new_tokens` caps the output budget. `local=False`: for a server, which enforces `grammar` itself and
    drafts on its own, so neither the local constraint nor drafters are built."""
    chat = prompting.messages(fmt, path=name, text=text, instruction=instruction, language=language,
                              feedback=feedback)
    prompt_ids = chat_prompt_ids(tokenizer, chat)
    narrowed = format_grammar(fmt, name, text, language) if grammar else None
    constraint = local_constraint(tokenizer, narrowed, eos_token_ids, vocab_size, local,
                                  document_check(fmt, text, instruction, language))
    drafters = edit_drafters(tokenizer, fmt, text, mtp) if spec and local else []
    return Request(prompt_ids, narrowed, constraint, drafters, output_budget(tokenizer, fmt, text, max_new_tokens))


def document_check(fmt: str, text: str, instruction: str, language: str | None):
    """What a format's grammar cannot say cheaply, checked on each token the model writes: OT's quotes must be
    in the file (`ot.prefix_ok`), a block edit of Python must keep the names of the definitions it rewrites
    (`block.name_check`). None: no check. These have no Lark form: a server goes without them, and the applier
    refuses what OT's check would have stopped (a rename it takes: a person's edit is not wrong)."""
    if fmt == "ot":
        return functools.partial(formats.get("ot").prefix_ok, text)
    if fmt == "block" and language == "python":
        return formats.get("block").name_check(instruction)
    return None


def locate_request(tokenizer, *, name: str, outline: list[tuple[str, str]], instruction: str, eos_token_ids=(),
                   vocab_size: int | None = None, grammar: bool = True, local: bool = True) -> Request:
    """The request that asks which unit of the long file `name` the instruction is about: the model reads
    `outline` ((unit name, first line) pairs, `focus.outline`) and answers one of the names, which the grammar
    (grammars/locate.lark) allows and nothing else. No drafts: the answer is a few tokens."""
    names = [unit for unit, _ in outline]
    chat = locate_messages(name, outline, instruction)
    narrowed = grammars.document_grammar("locate", units=names) if grammar else None
    constraint = local_constraint(tokenizer, narrowed, eos_token_ids, vocab_size, local)
    # A token holds a character at least, however the model splits a name; the grammar ends the answer.
    return Request(chat_prompt_ids(tokenizer, chat), narrowed, constraint, [], max(map(len, names)) + 1)


def local_constraint(tokenizer, narrowed: str | None, eos_token_ids, vocab_size: int | None, local: bool,
                     check=None):
    """The GrammarConstraint a local model decodes `narrowed` under (with the document check `check`, if any);
    None without a grammar, or for a server, which enforces the grammar itself."""
    if narrowed is None or not local:
        return None
    from decoding.constraint import GrammarConstraint, tokenizer_for

    return GrammarConstraint(tokenizer_for(tokenizer, sorted(eos_token_ids)), narrowed, token_check=check,
                             vocab_size=vocab_size)


def locate_messages(name: str, outline: list[tuple[str, str]], instruction: str) -> list[dict[str, str]]:
    """The chat of `locate_request`: the outline's first lines shown as the file."""
    return prompting.messages("locate", path=name, text="\n".join(line for _, line in outline),
                              instruction=instruction, language=None)


def chat_prompt_ids(tokenizer, chat: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids: the chat through the model's template, opening the assistant's turn."""
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(prompt, add_special_tokens=False)


def format_grammar(fmt: str, name: str, text: str, language: str | None) -> str | None:
    """The grammar of an answer in `fmt` about `text` (called `name`), narrowed to that file as `edit` decodes
    it; None for a rewrite (`whole`, `excerpt`), which is decoded free."""
    if fmt in REWRITES:
        return None
    return grammars.document_grammar(fmt, **_narrowing(fmt, name, text, language))


def edit_drafters(tokenizer, fmt: str, text: str, mtp=None) -> list:
    """Copy drafts from `text`, and MTP drafts beside them when `mtp` is given (the longer draft wins)."""
    from decoding.drafters import CombinedDrafter

    copy = copy_drafter(tokenizer, fmt, text)
    return [CombinedDrafter(mtp, copy) if mtp is not None else copy]


def copy_sources(fmt: str, text: str) -> list[str]:
    """The texts a copy drafter matches the output against: the file, and the file as `fmt` quotes it.

    A patch's context lines are the file's lines behind a space, and BPE splits " " + line + " " + line
    unlike line + line (the marker merges with the indentation, a blank line is "\\n \\n"): against the
    plain file a copy draft breaks at every line start, against the quoted file it runs on through a
    whole stretch of context or removed lines."""
    lines = text.splitlines(keepends=True)
    return [text] + ["".join(marker + line for line in lines) for marker in QUOTE_MARKERS.get(fmt, "")]


def copy_drafter(tokenizer, fmt: str, text: str):
    """The copy drafter for an answer in `fmt` about `text` (over `copy_sources`)."""
    from decoding.drafters import CopyDrafter

    return CopyDrafter([tokenizer.encode(source, add_special_tokens=False) for source in copy_sources(fmt, text)])


def mtp_drafter(heads):
    """The MTP drafter as `edit` drafts with it (drafts cut at MTP_MIN_CONFIDENCE). It holds the target's
    hidden states for the prompt prefix the generator's KV cache keeps between calls: keep one per Generator."""
    from decoding.drafters import MTPDrafter

    return MTPDrafter(heads, min_confidence=MTP_MIN_CONFIDENCE)


def output_budget(tokenizer, fmt: str, text: str, max_new_tokens: int | None = None) -> int:
    """Most tokens an answer in `fmt` about `text` may take (at most `max_new_tokens`): `whole`, the file with a
    quarter more and a few lines; a structured edit, what it can sensibly quote and add (see STRUCTURED_MAX_QUOTE).
    A budget past what the answer needs only lets a rambling model ramble."""
    size = len(tokenizer.encode(text, add_special_tokens=False))
    need = size + size // 4 + 128 if fmt in REWRITES else 2 * min(size, STRUCTURED_MAX_QUOTE) + STRUCTURED_MARGIN
    return need if max_new_tokens is None else min(need, max_new_tokens)


def is_code(language: str | None) -> bool:
    """Whether a file in `language` is code (its block edits' and patches' new lines take grammars.CODE_TEXT_LINE)."""
    return language not in PROSE_LANGUAGES


def _narrowing(fmt: str, name: str, text: str, language: str | None) -> dict:
    marked = grammars.markers(fmt)
    narrowing = {}
    if "DOC_LINE" in marked and text:  # an empty file has no line to quote
        narrowing["document"] = text
    if "PATH" in marked:
        narrowing["paths"] = [name]
    if "LANGUAGE" in marked and language:
        narrowing["language"] = language
    if "UNIT" in marked:  # named exactly as `block.apply` looks units up: from the file's name, not `language`
        narrowing["units"], narrowing["unit_after"] = formats.get("block").unit_order(text, name)
    narrowing["code"] = is_code(language)  # new lines of code: see grammars.CODE_TEXT_LINE
    return narrowing
