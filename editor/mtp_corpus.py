"""Training sequences for MTP heads: edit requests and their answers, in the prompts the editor sends.

Each sequence is a chat prompt (`editor.prompting.messages` for a window of a real source file and an
instruction) followed by the answer in our formats (apply_patch or OT) and the end-of-turn token, so the
heads learn on the very token stream they draft in: code shown in the prompt, then an edit of it.

The (old, new) pairs come from two sources:
  real diffs      files that exist twice on this machine in different versions: a package vendored
                  inside another (`pip/_vendor/rich/...`) and its own install (`rich/...`); a window
                  around each changed region makes one edit ("Update ... to the newer upstream version").
  synthetic edits windows of source files (the Python stdlib by default) with one mechanical change and
                  its instruction: rename a name, change a literal, delete a line.

The trainer (`decoding.train_mtp`) takes the sequences as token lists and never sees this module, since
`decoding` must not import `editor`.
"""

from __future__ import annotations

import difflib
import hashlib
import random
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from decoding.train_mtp import TrainSequence
from editor import prompting
from editor.formats import apply_patch, ot

FORMAT_WEIGHTS = {"apply_patch": 3, "ot": 1}  # apply_patch is the editor's default format
MAX_WINDOW_CHARS = 1400  # ~350 tokens of file in the prompt: keeps a sequence near 500 tokens
MAX_ANSWER_CHARS = 900


@dataclass(frozen=True)
class EditPair:
    path: str  # the name shown in the prompt
    source: str  # the file it came from (the held-out split is drawn by file)
    old: str
    new: str
    instruction: str


def default_sources() -> list[Path]:
    """The Python stdlib and this environment's site-packages."""
    paths = sysconfig.get_paths()
    return [Path(paths["stdlib"]), Path(paths["purelib"])]


def python_files(roots: list[Path]) -> list[Path]:
    files = []
    for root in roots:
        if root.is_file() and root.suffix == ".py":
            files.append(root)
        elif root.is_dir():
            files.extend(p for p in root.rglob("*.py")
                         if "__pycache__" not in p.parts and "test" not in p.parts and "tests" not in p.parts)
    return sorted(set(files))


def vendored_pairs(roots: list[Path]) -> list[tuple[Path, Path]]:
    """(vendored copy, installed copy) of every file that differs between `X/_vendor/pkg/...` and `pkg/...`."""
    pairs = []
    for root in roots:
        if not root.is_dir():
            continue
        for vendor in sorted(root.glob("*/_vendor")):
            for package in sorted(p for p in vendor.iterdir() if p.is_dir() and (root / p.name).is_dir()):
                for vendored in sorted(package.rglob("*.py")):
                    installed = root / package.name / vendored.relative_to(package)
                    if installed.is_file() and _read(installed) != _read(vendored):
                        pairs.append((vendored, installed))
    return pairs


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def diff_windows(old: str, new: str, rng: random.Random, max_changed: int = 12) -> Iterator[tuple[str, str]]:
    """(old window, new window) around each small changed region of two versions of a file."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(0):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        if not 0 < max(i2 - i1, j2 - j1) <= max_changed:
            continue
        before, after = rng.randint(4, 20), rng.randint(4, 20)
        # Each window is cut from its own version; one that reaches a neighbouring change carries it along,
        # which is still a real edit between real texts.
        old_window = "".join(a[max(0, i1 - before):i2 + after])
        new_window = "".join(b[max(0, j1 - before):j2 + after])
        if old_window != new_window and len(old_window) <= MAX_WINDOW_CHARS:
            yield old_window, new_window


def real_diff_pairs(roots: list[Path], rng: random.Random, limit: int) -> list[EditPair]:
    pairs = []
    for vendored, installed in vendored_pairs(roots):
        old, new = _read(vendored), _read(installed)
        if rng.random() < 0.5:  # which copy is newer varies by package; both directions are real edits
            old, new = new, old
        windows = list(diff_windows(old, new, rng))
        rng.shuffle(windows)
        for old_window, new_window in windows[:2]:
            pairs.append(EditPair(installed.name, str(installed), old_window, new_window,
                                  f"Update this part of {installed.name} to the newer upstream version."))
    rng.shuffle(pairs)
    return pairs[:limit]


IDENTIFIER = re.compile(r"\b([a-z_][a-z0-9_]{2,})\s*=(?!=)")
NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
RENAMES = ("value", "result", "count", "item", "data")


def window(text: str, rng: random.Random) -> str | None:
    """A run of 12-40 whole lines, starting at a line without indentation when one is near."""
    lines = text.splitlines(keepends=True)
    if len(lines) < 12:
        return None
    start = rng.randrange(0, max(1, len(lines) - 12))
    while start > 0 and lines[start][:1].isspace() and rng.random() < 0.9:
        start -= 1
    chosen = "".join(lines[start:start + rng.randint(12, 40)])
    while len(chosen) > MAX_WINDOW_CHARS and chosen.count("\n") > 8:
        chosen = "".join(chosen.splitlines(keepends=True)[:-4])
    return chosen if len(chosen) <= MAX_WINDOW_CHARS and chosen.strip() else None


def mutate(text: str, rng: random.Random) -> tuple[str, str] | None:
    """(new text, instruction) for one mechanical change of `text`, or None if none applies."""
    kinds = ["rename", "number", "delete"]
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "rename":
            names = sorted({m.group(1) for m in IDENTIFIER.finditer(text)} - {"self", "cls"})
            if names:
                name = rng.choice(names)
                replacement = f"{name}_{rng.choice(RENAMES)}"
                return re.sub(rf"\b{name}\b", replacement, text), f"Rename `{name}` to `{replacement}`."
        elif kind == "number":
            numbers = list(NUMBER.finditer(text))
            if numbers:
                match = rng.choice(numbers)
                value = str(int(match.group(1)) + rng.randint(1, 9))
                new = text[:match.start()] + value + text[match.end():]
                line = text[:match.start()].count("\n") + 1
                return new, f"Change {match.group(1)} to {value} on line {line}."
        else:
            lines = text.splitlines(keepends=True)
            candidates = [i for i, line in enumerate(lines)
                          if line.strip() and not line.rstrip().endswith(":") and i + 1 < len(lines)]
            if candidates:
                i = rng.choice(candidates)
                return "".join(lines[:i] + lines[i + 1:]), f"Remove the line `{lines[i].strip()}`."
    return None


def synthetic_pairs(files: list[Path], rng: random.Random, limit: int) -> list[EditPair]:
    pairs, order = [], list(files)
    rng.shuffle(order)
    for path in order:
        if len(pairs) >= limit:
            break
        text = window(_read(path), rng)
        change = mutate(text, rng) if text else None
        if change:
            pairs.append(EditPair(path.name, str(path), text, change[0], change[1]))
    return pairs


def answer(fmt: str, pair: EditPair) -> str:
    if fmt == "apply_patch":
        return apply_patch.render(apply_patch.diff(pair.old, pair.new, pair.path))
    return ot.render(ot.diff(pair.old, pair.new))


def encode_pair(tokenizer, pair: EditPair, fmt: str) -> TrainSequence | None:
    """Prompt + answer + end of turn as one sequence; None when the answer is too long to be typical."""
    output = answer(fmt, pair)
    if len(output) > MAX_ANSWER_CHARS:
        return None
    chat = prompting.messages(fmt, path=pair.path, text=pair.old, instruction=pair.instruction, language="python")
    prompt_ids = _encode(tokenizer, tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    tokens = prompt_ids + _encode(tokenizer, output) + [tokenizer.eos_token_id]
    return TrainSequence(tokens, prefix_len=shared_prefix_len(tokenizer, fmt), focus_start=len(prompt_ids))


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def shared_prefix_len(tokenizer, fmt: str, _memo: dict = {}) -> int:
    """Tokens every prompt of `fmt` starts with (system text, example, up to the file name): the common
    prefix of two prompts that differ from the file name on."""
    key = (id(tokenizer), fmt)
    if key not in _memo:
        prompts = [_encode(tokenizer, tokenizer.apply_chat_template(
            prompting.messages(fmt, path=path, text="x\n", instruction="y", language="python"),
            tokenize=False, add_generation_prompt=True)) for path in ("a.py", "zq.txt")]
        _memo[key] = next(i for i, (x, y) in enumerate(zip(*prompts)) if x != y)
    return _memo[key]


def held_out(source: str, fraction: float) -> bool:
    """Deterministic split by source file, so no file lends windows to both sides."""
    return int(hashlib.sha256(source.encode()).hexdigest()[:8], 16) < fraction * 16 ** 8


def build_corpus(tokenizer, roots: list[Path] | None = None, *, train_sequences: int = 200,
                 eval_sequences: int = 24, real_fraction: float = 0.4, eval_fraction: float = 0.1,
                 seed: int = 0) -> tuple[list[TrainSequence], list[TrainSequence]]:
    """(train, held-out) sequences, in a fixed order for a given seed (caching resumes by index)."""
    rng = random.Random(seed)
    roots = roots or default_sources()
    wanted = int((train_sequences + eval_sequences) * 1.3)  # some answers are dropped as too long
    pairs = real_diff_pairs(roots, rng, int(wanted * real_fraction))
    pairs += synthetic_pairs(python_files(roots), rng, wanted - len(pairs))
    rng.shuffle(pairs)
    formats = [fmt for fmt, weight in FORMAT_WEIGHTS.items() for _ in range(weight)]
    train, evaluation = [], []
    for pair in pairs:
        side = evaluation if held_out(pair.source, eval_fraction) else train
        if len(side) >= (eval_sequences if side is evaluation else train_sequences):
            continue
        sequence = encode_pair(tokenizer, pair, rng.choice(formats))
        if sequence is not None:
            side.append(sequence)
    return train, evaluation
