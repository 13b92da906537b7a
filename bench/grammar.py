"""Microbenchmark of grammar-constrained decoding: compile and mask times per format grammar.

    python bench/grammar.py [--vocab 32000] [--lines 300] [--steps 300]

For each grammars/<format>.lark: narrow it to a document of `--lines` lines of Python (and a path
and a language where the grammar has those markers), then time the matcher's construction
("compile"), its first mask (which builds the lexer lazily), and the masks along random walks
through the grammar (uniform random logits under the mask, EOS held back so the walk goes on).
Prints a markdown table.

No model hub is reachable here, so the tokenizer is a byte-level BPE (Qwen2.5's kind) trained on
the Python standard library; mask time grows with the vocabulary, Qwen2.5's has 151,665 tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

import grammars
from decoding.constraint import GrammarConstraint, apply_mask, tokenizer_for

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_tokenizer(vocab_size: int = 16384):
    """A byte-level BPE tokenizer trained on the standard library's top-level modules (~1 s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    sources = (path.read_text(encoding="utf-8", errors="replace")
               for path in sorted(STDLIB.glob("*.py")))
    tokenizer.train_from_iterator(sources, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def sample_document(lines: int) -> str:
    """The first `lines` lines of the standard library's longest top-level modules, in turn."""
    text: list[str] = []
    for path in sorted(STDLIB.glob("*.py"), key=lambda p: -p.stat().st_size):
        text += path.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(text) >= lines:
            break
    return "".join(text[:lines])


def narrowed_grammar(format: str, document: str) -> str:
    present = grammars.markers(format)
    return grammars.document_grammar(
        format,
        document=document if "DOC_LINE" in present else None,
        paths=["src/module.py", "tests/test_module.py"] if "PATH" in present else None,
        language="python" if "LANGUAGE" in present else None)


def random_walk_mask_times(llg_tokenizer, grammar: str, steps: int, seed: int) -> list[float]:
    """Seconds per mask() along one walk of up to `steps` tokens."""
    constraint = GrammarConstraint(llg_tokenizer, grammar)
    generator = torch.Generator().manual_seed(seed)
    eos = list(constraint.eos_tokens)
    times = []
    for _ in range(steps):
        if constraint.is_finished():
            break
        start = time.perf_counter()
        mask = constraint.mask()
        times.append(time.perf_counter() - start)
        logits = torch.rand(constraint.vocab_size, generator=generator)
        logits[eos] = -1.0  # below every other allowed token: end only when nothing else fits
        constraint.consume([int(apply_mask(logits, mask).argmax())])
    return times


def bench_format(llg_tokenizer, format: str, document: str, steps: int, walks: int) -> dict:
    grammar = narrowed_grammar(format, document)
    compile_s, first_mask_s = [], []
    for _ in range(5):
        start = time.perf_counter()
        constraint = GrammarConstraint(llg_tokenizer, grammar)
        compiled = time.perf_counter()
        constraint.mask()
        compile_s.append(compiled - start)
        first_mask_s.append(time.perf_counter() - compiled)
    mask_s = [t for seed in range(walks)
              for t in random_walk_mask_times(llg_tokenizer, grammar, steps, seed)[1:]]
    return {"format": format, "grammar_kb": len(grammar) / 1024,
            "compile_ms": 1e3 * statistics.median(compile_s),
            "first_mask_ms": 1e3 * statistics.median(first_mask_s),
            "mask_us_median": 1e6 * statistics.median(mask_s),
            "mask_us_p95": 1e6 * float(np.percentile(mask_s, 95)), "masks": len(mask_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300, help="tokens per random walk")
    parser.add_argument("--walks", type=int, default=5)
    args = parser.parse_args()

    llg_tokenizer = tokenizer_for(stdlib_tokenizer(args.vocab))
    document = sample_document(args.lines)
    formats = sorted(path.stem for path in Path(grammars.__file__).parent.glob("*.lark"))
    rows = [bench_format(llg_tokenizer, format, document, args.steps, args.walks)
            for format in formats]

    print(f"Grammar-constrained decoding, byte-level BPE tokenizer with {llg_tokenizer.vocab_size} "
          f"tokens, {len(grammars.document_lines(document))} distinct lines of a "
          f"{args.lines}-line document, {args.walks} random walks of up to {args.steps} tokens.\n")
    print("| format | grammar (KiB) | compile (ms) | first mask (ms) | mask median (us) "
          "| mask p95 (us) | masks timed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['format']} | {row['grammar_kb']:.1f} | {row['compile_ms']:.2f} "
              f"| {row['first_mask_ms']:.2f} | {row['mask_us_median']:.0f} "
              f"| {row['mask_us_p95']:.0f} | {row['masks']} |")


if __name__ == "__main__":
    main()
