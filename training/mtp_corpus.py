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

A third source makes the answers the model's own (`generated_sequences`): edit requests in a user's words
("Add a docstring to `parse`.") on windows of source files, answered by the base model itself as `edit`
decodes (greedy, grammar-constrained). Its answers are the very token stream the heads draft at inference,
which teacher-forced answers only approximate: there the model writes its patches, not the diff's.

The trainer (`training.mtp_trainer`) takes the sequences as token lists and never sees this module, since
`decoding` must not import `editor`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.mtp_trainer import TrainSequence
from editor import prompting
from editor.request import build_request, mtp_drafter
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
    return ot.render(ot.quote(pair.old, ot.diff(pair.old, pair.new)))  # quotes, as the model writes OT


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


def weighted(weights: dict[str, int]) -> list[str]:
    """Each key `weight` times: rng.choice over it draws keys in proportion to their weights."""
    return [key for key, weight in weights.items() for _ in range(weight)]


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
    formats = weighted(FORMAT_WEIGHTS)
    train, evaluation = [], []
    for pair in pairs:
        side = evaluation if held_out(pair.source, eval_fraction) else train
        if len(side) >= (eval_sequences if side is evaluation else train_sequences):
            continue
        sequence = encode_pair(tokenizer, pair, rng.choice(formats))
        if sequence is not None:
            side.append(sequence)
    return train, evaluation


# --- the model's own answers ----------------------------------------------------------------------------------

# Requests as users word them; {f} a function of the window, {p} one of its parameters, {n} an assigned name.
FUNCTION_REQUESTS = (
    "Add a docstring to `{f}`.", "Add type hints to `{f}`.", "Fix the bug in `{f}`.", "Simplify `{f}`.",
    "Rename `{f}` to `{f}_impl` and update its uses.", "Add a comment above `{f}` that explains what it does.",
    "Make `{f}` log its arguments with the logging module.", "Remove the function `{f}`.",
    "Add error handling to `{f}`.", "Make `{f}` return None instead of raising.",
)
PARAMETER_REQUESTS = (
    "Make `{f}` raise a ValueError when `{p}` is None.", "Rename the parameter `{p}` of `{f}` to `{p}_value`.",
    "Give `{p}` in `{f}` a default value.", "Validate `{p}` at the start of `{f}`.",
)
NAME_REQUESTS = ("Rename `{n}` to `{n}_value`.", "Add a comment explaining what `{n}` holds.",
                 "Add a type annotation to `{n}`.")
FILE_REQUESTS = ("Add comments to this code.", "Use f-strings for string formatting.",
                 "Remove the unused code.", "Improve the variable names.")
DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(([^)]*)\)", re.M)
GENERATED_FORMATS = {"apply_patch": 3, "whole": 1}  # `edit`'s choice: a patch for long files, whole for short


@dataclass(frozen=True)
class EditRequest:
    path: str
    source: str  # the file it came from (the held-out split is drawn by file)
    text: str
    instruction: str
    format: str


def request_for(text: str, rng: random.Random) -> str:
    """An instruction about `text` in a user's words, naming one of its functions, parameters or names."""
    functions = [(m.group(1), [p.split(":")[0].split("=")[0].strip(" *") for p in m.group(2).split(",")])
                 for m in DEF.finditer(text)]
    names = sorted({m.group(1) for m in IDENTIFIER.finditer(text)} - {"self", "cls"})
    choices = list(FILE_REQUESTS)
    if functions:
        name, params = rng.choice(functions)
        params = [p for p in params if p.isidentifier() and p not in ("self", "cls")]
        choices += [t.format(f=name) for t in FUNCTION_REQUESTS] * 3
        if params:
            choices += [t.format(f=name, p=rng.choice(params)) for t in PARAMETER_REQUESTS] * 2
    if names:
        choices += [t.format(n=rng.choice(names)) for t in NAME_REQUESTS] * 2
    return rng.choice(choices)


def edit_request(path: Path, rng: random.Random, formats: list[str]) -> EditRequest | None:
    text = window(_read(path), rng)
    return EditRequest(path.name, str(path), text, request_for(text, rng), rng.choice(formats)) if text else None


def generated_sequences(model, tokenizer, requests: list[EditRequest], folder: Path, *, max_new_tokens: int = 256,
                        deadline: float | None = None, heads=None, on_progress=None) -> list[TrainSequence]:
    """Prompt + the base's own greedy answer + end of turn for each request, as `edit` decodes it (the
    format's grammar narrowed to the file; copy drafts, and MTP drafts with `heads`, which change the speed,
    not the tokens). Answers are kept in `folder` (one file per prompt), so a rerun reuses them; generating
    stops at `deadline` (time.time()), keeping what was done."""
    from decoding.generate import Generator

    folder.mkdir(parents=True, exist_ok=True)
    generator = Generator(model, tokenizer)
    mtp = mtp_drafter(heads) if heads is not None else None  # one for all: it follows the KV cache
    vocab = model.get_output_embeddings().out_features
    sequences, answer_tokens = [], 0
    for index, request in enumerate(requests):
        built = build_request(tokenizer, request.format, name=request.path, text=request.text,
                              instruction=request.instruction, language="python", eos_token_ids=generator.eos_token_ids,
                              vocab_size=vocab, max_new_tokens=max_new_tokens, mtp=mtp)
        prompt_ids = built.prompt_ids
        key = TrainSequence(prompt_ids).key()
        path = folder / f"{key}.json"
        if path.is_file():
            answer = json.loads(path.read_text())["answer"]
        elif deadline is not None and time.time() > deadline:
            break
        else:
            generation = generator.generate(prompt_ids, built.constraint, max_new_tokens=built.max_new_tokens,
                                            drafters=built.drafters)
            answer = generation.tokens + ([tokenizer.eos_token_id] if generation.finish_reason != "length" else [])
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps({"request": request.__dict__, "answer": answer,
                                           "finish": generation.finish_reason}))
            partial.replace(path)
        sequences.append(answer_sequence(tokenizer, request.format, prompt_ids, answer))
        answer_tokens += len(answer)
        if on_progress is not None:
            on_progress("generate", index + 1, len(requests), {"tokens": answer_tokens})
    return sequences


def edit_requests(roots: list[Path] | None, train_sequences: int, eval_sequences: int, eval_fraction: float = 0.1,
                  seed: int = 0) -> tuple[list[EditRequest], list[EditRequest]]:
    """(train, held-out) edit requests, held out by file as in `build_corpus`. Each file's request is
    drawn from its own seed, so asking for more keeps the requests of a smaller call as its first ones,
    and a later run with a larger --generated reuses the answers an earlier one kept."""
    files = python_files(roots or default_sources())
    random.Random(seed + 1).shuffle(files)
    formats = weighted(GENERATED_FORMATS)
    train, evaluation = [], []
    for path in files:
        side, wanted = ((evaluation, eval_sequences) if held_out(str(path), eval_fraction)
                        else (train, train_sequences))
        if len(side) < wanted and (request := edit_request(path, random.Random(f"{seed}:{path}"), formats)):
            side.append(request)
        if len(train) >= train_sequences and len(evaluation) >= eval_sequences:
            break
    return train, evaluation


def answer_sequence(tokenizer, fmt: str, prompt_ids: list[int], answer: list[int]) -> TrainSequence:
    """A prompt and the model's answer to it (kept answers are named by `TrainSequence(prompt_ids).key()`)."""
    return TrainSequence(prompt_ids + answer, prefix_len=shared_prefix_len(tokenizer, fmt), focus_start=len(prompt_ids))


def kept_answers(tokenizer, folders: list[Path], answered: list[TrainSequence] = (), eval_fraction: float = 0.1
                 ) -> tuple[list[TrainSequence], list[TrainSequence]]:
    """(train, held-out) sequences of the answers that earlier runs kept (their OUT/generated folders),
    held out by file as `edit_requests` holds out. They are the model's own greedy answers to requests
    this module drew, just not ones a smaller or differently seeded --generated asks again. Skipped: the
    prompts of `answered` (sequences this run already has) and answers to a prompt the editor no longer
    sends (the prompt's key no longer names the file), whose tokens are no longer the model's answer."""
    seen = {TrainSequence(sequence.tokens[:sequence.focus_start]).key() for sequence in answered}
    train, evaluation = [], []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            if path.stem in seen:
                continue
            try:
                kept = json.loads(path.read_text(encoding="utf-8"))
                request, answer_ids = EditRequest(**kept["request"]), [int(token) for token in kept["answer"]]
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}: not an answer kept by train-mtp ({type(error).__name__}: {error})") from None
            prompt_ids = build_request(tokenizer, request.format, name=request.path, text=request.text,
                                       instruction=request.instruction, language="python", grammar=False,
                                       spec=False).prompt_ids
            if TrainSequence(prompt_ids).key() != path.stem:
                continue
            seen.add(path.stem)
            side = evaluation if held_out(request.source, eval_fraction) else train
            side.append(answer_sequence(tokenizer, request.format, prompt_ids, answer_ids))
    return train, evaluation


def generated_corpus(model, tokenizer, roots: list[Path] | None, folder: Path, *, train_sequences: int,
                     eval_sequences: int, eval_fraction: float = 0.1, seed: int = 0, deadline: float | None = None,
                     heads=None, on_progress=None) -> tuple[list[TrainSequence], list[TrainSequence]]:
    """(train, held-out) sequences of the model's own answers to `edit_requests`; the held-out ones are
    all generated, the training ones until `deadline`. `heads`: MTP heads to draft with."""
    train, evaluation = edit_requests(roots, train_sequences, eval_sequences, eval_fraction, seed)
    held = generated_sequences(model, tokenizer, evaluation, folder, heads=heads, on_progress=on_progress)
    return generated_sequences(model, tokenizer, train, folder, deadline=deadline, heads=heads,
                               on_progress=on_progress), held
