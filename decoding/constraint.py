"""Grammar-constrained decoding with llguidance.

A `Constraint` tells the generator which tokens may come next. `GrammarConstraint` follows a Lark
grammar (see `grammars/`) with an `llguidance.LLMatcher`, and layers an optional document check
(`token_check`, e.g. a format's `prefix_ok`) on top of it for what a grammar cannot say cheaply.

EOS is kept out of the matcher: llguidance counts an EOS in its token history in some states and
not in others (it swallows one that ends a grammar which cannot go on), which would make
`rollback(n)` ambiguous. The constraint records it itself, as `_ended`.

An EOS may also stand for a last "\n": where one newline would let the grammar end, EOS is allowed and
consumed as that newline. A chat model ends its turn without its answer's last newline (chat messages carry
answers stripped, the prompts' examples too), while a line format's grammar ends every line with one: the 1.5B,
refused the end of its turn until a newline came, wrote its last diff line on into an endless comment.
(`consume` takes such an EOS alone, as the generator's last token; after other tokens it is refused.)
"""

from __future__ import annotations

import functools
from typing import Callable, NoReturn, Protocol

import llguidance
import numpy as np
import torch

# A grammar narrowed to a document offers one alternative per line of it at the start of a patch's hunk
# (grammars._ordered_hunks: about two Earley items a line). llguidance's default cap of 2,000 items in a row
# then refused apply_patch edits of files past ~650 lines ("Current row has 2405 items; max is 2000");
# 20,000 holds the lines a hunk is narrowed for (grammars.CONTIGUOUS_MAX_LINES) with room, at ~20k items a ms.
PARSER_LIMITS = dict(max_items_in_row=20_000)

# The text generated so far, the candidate token's included -> may the candidate be taken?
TokenCheck = Callable[[str], bool]


class ConstraintError(ValueError):
    """A grammar that does not compile, or a token the grammar does not allow."""


class Constraint(Protocol):
    def mask(self) -> torch.Tensor | None: ...  # bool [vocab]; None: anything goes
    def token_ok(self, token: int) -> bool: ...
    def forced_tokens(self) -> list[int]: ...
    def consume(self, tokens: list[int]) -> None: ...
    def rollback(self, n: int) -> None: ...
    def valid_prefix_len(self, tokens: list[int]) -> int: ...
    def is_finished(self) -> bool: ...


def apply_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """logits [..., V], mask bool [V'] -> logits with the disallowed tokens at -inf. A mask shorter
    than the logits (a tokenizer vocabulary shorter than the padded logits) allows none of the rest."""
    if mask is None:
        return logits
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    n = min(logits.shape[-1], mask.shape[-1])
    keep[:n] = mask[:n].to(logits.device)
    return logits.masked_fill(~keep, float("-inf"))


# (name or id, vocab size, EOS ids) -> (the HF tokenizer, kept so its id is not reused; wrapper)
_TOKENIZERS: dict[tuple, tuple[object, llguidance.LLTokenizer]] = {}


def tokenizer_for(hf_tokenizer, eos_token_ids: list[int] | None = None) -> llguidance.LLTokenizer:
    """llguidance's wrapper of a fast HF tokenizer, built once per tokenizer (it costs ~0.1-1 s).

    `eos_token_ids` overrides the tokenizer's EOS, e.g. chat models that end a turn with
    `<|im_end|>` as well as `<|endoftext|>`.
    """
    import llguidance.hf

    eos = tuple(eos_token_ids) if eos_token_ids else (hf_tokenizer.eos_token_id,)
    if eos == (None,):
        raise ConstraintError("the tokenizer has no EOS token; pass eos_token_ids")
    key = (hf_tokenizer.name_or_path or id(hf_tokenizer), len(hf_tokenizer), eos)
    if key not in _TOKENIZERS:
        wrapper = llguidance.hf.from_tokenizer(hf_tokenizer, eos_token=list(eos))
        _TOKENIZERS[key] = (hf_tokenizer, wrapper)
    return _TOKENIZERS[key][1]


class GrammarConstraint:
    """The `Constraint` of a Lark grammar, for one generation.

    `vocab_size` is the width of the model's logits, which may exceed the tokenizer's vocabulary
    (Qwen pads to 151936); the extra ids are never allowed.
    """

    def __init__(self, llg_tokenizer: llguidance.LLTokenizer, grammar_text: str,
                 token_check: TokenCheck | None = None, vocab_size: int | None = None):
        self.tokenizer = llg_tokenizer
        self.vocab_size = vocab_size or llg_tokenizer.vocab_size
        if self.vocab_size < llg_tokenizer.vocab_size:
            raise ConstraintError(f"vocab_size {self.vocab_size} is smaller than the tokenizer's "
                                  f"vocabulary ({llg_tokenizer.vocab_size} tokens)")
        self.matcher = compiled(llg_tokenizer, grammar_text)
        self.token_check = token_check
        self.eos_tokens = frozenset(llg_tokenizer.eos_tokens)
        self._eos_ids = sorted(self.eos_tokens)  # for indexing a mask, built once: mask() runs every token
        self._bitmask = np.zeros((llg_tokenizer.vocab_size + 31) // 32, dtype=np.int32)
        self._text = bytearray()  # the bytes generated so far
        self._text_ends: list[int] = []  # len(self._text) after each consumed token, for rollback
        self._ended = False  # an EOS token was consumed
        self._ended_as_newline = False  # ... and stood for a last "\n", which is in the matcher
        newline = llg_tokenizer.tokenize_str("\n")
        self._newline = newline[0] if len(newline) == 1 else None

    def mask(self) -> torch.Tensor:
        """bool [vocab_size]: the tokens the grammar allows next (only EOS once it has ended)."""
        if self._ended:
            allowed = np.zeros(self.vocab_size, dtype=bool)
            allowed[self._eos_ids] = True
            return torch.from_numpy(allowed)
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        if self.matcher.is_error():
            self._fail("mask")
        # Bit i of the little-endian int32 words is token i; count= pads with False (or trims the
        # last word's spare bits). unpackbits allocates, so callers may keep the returned mask.
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=self.vocab_size, bitorder="little")
        allowed = bits.view(bool)
        if not allowed[self._eos_ids].any() and self._newline is not None and allowed[self._newline] \
                and self._newline_ends():
            allowed[self._eos_ids] = True
        return torch.from_numpy(allowed)

    def token_ok(self, token: int) -> bool:
        """The document check on `token` appended to the text so far; True without a check."""
        if self.token_check is None or token in self.eos_tokens:
            return True
        return self.token_check(_text(self._text + self.tokenizer.decode_bytes([token])))

    def forced_tokens(self) -> list[int]:
        """The tokens the grammar forces next (canonically tokenized), cut at a token_ok failure."""
        if self._ended or self.matcher.is_stopped():
            return []
        forced = self.matcher.compute_ff_tokens()
        return forced[: self._checked_len(forced, len(forced))]

    def consume(self, tokens: list[int]) -> None:
        """Advance by `tokens`, all or none: raises ConstraintError naming the first refused one."""
        accepted = self._grammar_prefix_len(tokens)
        if accepted < len(tokens):
            refused = tokens[accepted]
            raise ConstraintError(
                f"token {refused} ({self.tokenizer.dbg_tokens([refused])}) is not allowed after "
                f"{_text(self._text + self.tokenizer.decode_bytes(tokens[:accepted]))!r}")
        body = [t for t in tokens if t not in self.eos_tokens]  # EOS, if any, is the last token
        if body and not self.matcher.consume_tokens(body):
            self._fail("consume")
        for token in body:
            self._text += self.tokenizer.decode_bytes([token])
            self._text_ends.append(len(self._text))
        if len(body) < len(tokens):
            if not self.matcher.is_accepting() and not self.matcher.is_stopped():  # EOS stands for a last "\n"
                if not self.matcher.consume_tokens([self._newline]):
                    self._fail("consume")
                self._ended_as_newline = True
            self._text_ends.append(len(self._text))
            self._ended = True

    def rollback(self, n: int) -> None:
        """Undo the last `n` consumed tokens."""
        if not 0 <= n <= len(self._text_ends):
            raise ConstraintError(f"cannot roll back {n} tokens: {len(self._text_ends)} consumed")
        if n == 0:
            return
        in_matcher = n - 1 if self._ended and not self._ended_as_newline else n  # an EOS alone is not in it
        if in_matcher and not self.matcher.rollback(in_matcher):
            self._fail(f"rollback({in_matcher})")  # e.g. a grammar with max_tokens disables it
        self._ended = self._ended_as_newline = False
        del self._text_ends[-n:]
        del self._text[self._text_ends[-1] if self._text_ends else 0:]

    def valid_prefix_len(self, tokens: list[int]) -> int:
        """How many leading `tokens` (a draft) the grammar and the document check accept."""
        return self._checked_len(tokens, self._grammar_prefix_len(tokens))

    def is_finished(self) -> bool:
        """EOS was consumed, or the grammar cannot go on (then only EOS is allowed)."""
        return self._ended or (self.matcher.is_stopped() and not self.matcher.is_error())

    def _grammar_prefix_len(self, tokens: list[int]) -> int:
        if self._ended or not tokens:
            return 0
        if self.matcher.is_stopped():  # only EOS can follow; llguidance validates nothing here
            if self.matcher.is_error():
                self._fail("validate")
            return 1 if tokens[0] in self.eos_tokens else 0
        if tokens[0] in self.eos_tokens and self._newline_ends():
            return 1
        return self.matcher.validate_tokens(tokens)  # stops after an EOS that may end the grammar

    def _newline_ends(self) -> bool:
        """Whether one "\n" here would let the grammar end (and it cannot end without it)."""
        if self._newline is None or self.matcher.is_accepting():
            return False
        return self.matcher.validate_tokens([self._newline, self._eos_ids[0]]) == 2

    def _checked_len(self, tokens: list[int], limit: int) -> int:
        """How many of tokens[:limit] pass token_check, each with the ones before it."""
        if self.token_check is None:
            return limit
        text = bytearray(self._text)
        for i, token in enumerate(tokens[:limit]):
            if token in self.eos_tokens:
                return i + 1
            text += self.tokenizer.decode_bytes([token])
            if not self.token_check(_text(text)):
                return i
        return limit

    def _fail(self, action: str) -> NoReturn:
        # The error's first line only: llguidance appends its state and the whole grammar.
        reason = self.matcher.get_error().split("\n", 1)[0] or "no reason given"
        raise ConstraintError(f"grammar {action} failed after {len(self._text_ends)} tokens, "
                              f"{_text(self._text)[-80:]!r}: {reason}")


def _text(generated: bytes | bytearray) -> str:
    # The grammar only admits valid UTF-8, so the only undecodable bytes are a character that a later
    # token will complete. It is checked as U+FFFD, which a document check matches against nothing:
    # dropping it instead would let a check pass a character it would refuse once complete, and leave
    # the grammar with no acceptable next token.
    return bytes(generated).decode("utf-8", errors="replace")


BYTE_EOS = 256  # the byte tokenizer's end of text, after the 256 byte values


class _ByteVocabulary:
    """One token per byte value and an EOS, in the shape `llguidance.TokenizerWrapper` reads."""

    eos_token_id = BYTE_EOS
    bos_token_id = None
    tokens = [bytes([value]) for value in range(256)] + [b"<eos>"]
    special_token_ids = [BYTE_EOS]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)


@functools.cache
def byte_tokenizer() -> llguidance.LLTokenizer:
    """An llguidance tokenizer whose tokens are single bytes: a grammar checks a text without a model's vocabulary."""
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteVocabulary()), slices=[])


def compiled(llg_tokenizer: llguidance.LLTokenizer, grammar_text: str) -> llguidance.LLMatcher:
    """A matcher of `grammar_text` (Lark) over `llg_tokenizer`'s tokens, at its start."""
    matcher = llguidance.LLMatcher(llg_tokenizer, grammar_text, log_level=0,
                                   limits=llguidance.LLParserLimits(**PARSER_LIMITS))
    if matcher.is_error():
        raise ConstraintError(f"grammar does not compile: {matcher.get_error()}")
    return matcher


def grammar_admits(grammar_text: str, text: str) -> bool:
    """Whether `GrammarConstraint` over `grammar_text` (Lark) lets `text` be a whole output: the grammar admits it,
    or admits it with the last newline an EOS stands for. It compiles the grammar (a few ms; ~0.1 s for an
    apply_patch grammar narrowed to a 300-line file) and feeds the bytes."""
    constraint = GrammarConstraint(byte_tokenizer(), grammar_text)
    data = list(text.encode("utf-8"))
    if constraint.valid_prefix_len(data) < len(data):
        return False
    constraint.consume(data)
    return bool(constraint.mask()[BYTE_EOS])
