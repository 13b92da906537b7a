"""`edit model train-edit`: LoRA fine-tuning of a model on edit examples in our formats (issue 15).

Data: an examples JSONL (written by training/edit_render.py), one row per example:
    {"repo": str, "path": str, "format": str, "messages": [chat messages, as the Editor sends them], "answer": str}
An example is tokenized as the Editor prompts: the chat template of `messages` with add_generation_prompt=True
(editor/request.py), then the answer and the end-of-turn token the Editor stops on. The loss covers the answer
and the end of turn only.

  packing        examples are packed best-fit into sequences of at most `max_tokens`. Positions restart at
                 each example and no attention mask is passed, from which transformers builds a block-diagonal
                 causal mask (masking_utils.find_packed_sequence_indices): an example attends to itself alone at
                 the positions it would have alone, so packing changes no example's loss, it only spares padding.
                 Longer examples are dropped and counted.
  held-out split whole source repositories, so the held-out loss measures edits of code never seen in training.
  checkpoints    at every evaluation and at the end: the LoRA weights, optimizer, scheduler, RNG state and step;
                 the data order is a function of (seed, step), so `resume` continues exactly.
  budget         `minutes` stops the run cleanly (final evaluation and adapter saved) within the budget.

Stats are returned (the card), never printed; the CLI (editor/commands/train.py) shows progress.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import shutil
import time
from collections import Counter
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from decoding.adapter import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from decoding.generate import default_eos_ids
from decoding.model_loading import load_model
from decoding.model_registry import ModelError, file_sha256
from editor.request import chat_prompt_ids

from .mtp_run import base_description, base_sha256

# on_progress(phase, done, total, info)
Progress = Callable[[str, int, int, dict], None]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHECKPOINT = "checkpoint.pt"
ROW_KEYS = {"repo": str, "path": str, "format": str, "messages": list, "answer": str}
IGNORE = -100  # label of a token outside the loss


@dataclass
class TrainConfig:
    steps: int = 200  # optimizer steps, one packed sequence each
    rank: int = 8
    max_tokens: int = 1024  # tokens per packed sequence; longer examples are dropped
    lr: float = 2e-4
    warmup: int = 10
    eval_every: int = 25  # steps between held-out evaluations (and checkpoints)
    eval_share: float = 0.05  # of the examples, held out as whole repositories
    eval_examples: int = 48  # most held-out examples evaluated (an evaluation costs a few steps' time)
    dropout: float = 0.05
    clip: float = 1.0
    seed: int = 0

    @property
    def alpha(self) -> float:
        return 2.0 * self.rank


# Settings a resumed run must share with the checkpoint's (the rest only change when it stops or reports).
RESUME_KEYS = ("steps", "rank", "max_tokens", "lr", "warmup", "eval_share", "eval_examples", "dropout", "clip", "seed")


@dataclass
class Example:
    repo: str
    format: str
    prompt: list[int]  # chat template of the messages, generation prompt included
    answer: list[int]  # the answer's tokens and the end-of-turn token

    def __len__(self) -> int:
        return len(self.prompt) + len(self.answer)


@dataclass
class Packed:
    input_ids: torch.Tensor  # [T]
    position_ids: torch.Tensor  # [T], restarting at 0 at each example
    labels: torch.Tensor  # [T]: the token where it is in the loss (answer, end of turn), else IGNORE


# --- data ------------------------------------------------------------------------------------------------


def read_examples(path: Path) -> list[dict]:
    """The rows of an examples JSONL; ValueError naming the file and line of the first bad row."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            bad = ([key for key, kind in ROW_KEYS.items() if not isinstance(row.get(key), kind)]
                   if isinstance(row, dict) else list(ROW_KEYS))
            if not bad and not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                   and isinstance(m.get("content"), str) for m in row["messages"]):
                bad = ["messages (each {role: str, content: str})"]
            if bad:
                raise ValueError(f"{path}:{number}: missing or mistyped field(s) {', '.join(bad)}; expected "
                                 f"{{{', '.join(f'{k}: {t.__name__}' for k, t in ROW_KEYS.items())}}}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def end_of_turn_id(model, tokenizer) -> int:
    """The token an answer ends with: the one the chat template closes an assistant turn with (Qwen's
    <|im_end|>) where generation stops on it, else the tokenizer's end of sequence (generation stops on both)."""
    stops = default_eos_ids(model, tokenizer)
    mark = "ANSWER-ENDS-HERE"
    chat = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": mark}]
    closing = tokenizer.apply_chat_template(chat, tokenize=False).split(mark, 1)[-1]
    ids = tokenizer.encode(closing, add_special_tokens=False)
    if ids and ids[0] in stops:
        return ids[0]
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no end-of-sequence token and the chat template closes a turn with no "
                         "token generation stops on: cannot teach the model to end its answers")
    return tokenizer.eos_token_id


def tokenize(tokenizer, row: dict, end_of_turn: int) -> Example:
    """One row as the Editor prompts it."""
    prompt_ids = chat_prompt_ids(tokenizer, row["messages"])
    answer_ids = tokenizer.encode(row["answer"], add_special_tokens=False) + [end_of_turn]
    return Example(row["repo"], row["format"], prompt_ids, answer_ids)


def split_by_repo(examples: list[Example], eval_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): whole repositories, drawn in a seeded order, held out until they hold `eval_share`
    of the examples (at least one repository; never all of them)."""
    repos = sorted({e.repo for e in examples})
    if len(repos) < 2:
        raise ValueError(f"the held-out split is by source repository, and the data names only {repos}: "
                         f"give examples from at least two repositories")
    random.Random(seed).shuffle(repos)
    sizes = Counter(e.repo for e in examples)
    held: set[str] = set()
    for repo in repos[:-1]:
        if held and sum(sizes[r] for r in held) >= eval_share * len(examples):
            break
        held.add(repo)
    return [e for e in examples if e.repo not in held], [e for e in examples if e.repo in held]


def pack(examples: list[Example], max_tokens: int) -> list[Packed]:
    """Best-fit decreasing: each example, longest first, into the sequence with the least room that still holds
    it. Every example must fit (`max_tokens` at least its length)."""
    groups: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # (room left, group index), sorted
    for example in sorted(examples, key=len, reverse=True):
        at = bisect.bisect_left(free, (len(example), -1))
        if at == len(free):
            groups.append([])
            room, index = max_tokens, len(groups) - 1
        else:
            room, index = free.pop(at)
        groups[index].append(example)
        bisect.insort(free, (room - len(example), index))
    return [packed_sequence(group) for group in groups]


def packed_sequence(examples: list[Example]) -> Packed:
    ids, positions, labels = [], [], []
    for example in examples:
        ids += example.prompt + example.answer
        positions += range(len(example))
        labels += [IGNORE] * len(example.prompt) + example.answer
    return Packed(torch.tensor(ids), torch.tensor(positions), torch.tensor(labels))


# --- model -----------------------------------------------------------------------------------------------


def lora_model(model, config: TrainConfig):
    """`model` wrapped by peft with LoRA on the attention and MLP projections, gradient checkpointing on."""
    from peft import LoraConfig, get_peft_model

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def sequence_loss(model, packed: Packed, device: str) -> tuple[torch.Tensor, int]:
    """(sum of the answer tokens' cross-entropy, their count) for one packed sequence. The logits are computed
    only where a loss is taken (the lm_head over all positions would cost as much as the rest on CPU)."""
    targets = (packed.labels != IGNORE).nonzero().squeeze(1)  # [N]: positions of answer tokens
    predict_at = targets - 1  # [N]: each is predicted from the position before it
    with torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext():
        logits = model(input_ids=packed.input_ids[None].to(device), position_ids=packed.position_ids[None].to(device),
                       logits_to_keep=predict_at.to(device), use_cache=False).logits[0]  # [N, vocab]
    loss = torch.nn.functional.cross_entropy(logits.float(), packed.labels[targets].to(device), reduction="sum")
    return loss, len(targets)


def evaluate(model, packs: list[Packed], device: str, on_progress: Progress | None = None) -> float:
    """Mean cross-entropy per answer token over `packs` (dropout off)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for done, packed in enumerate(packs, 1):
            loss, n = sequence_loss(model, packed, device)
            total, count = total + float(loss), count + n
            if on_progress:
                on_progress("held-out loss", done, len(packs), {})
    model.train(was_training)
    return total / max(1, count)


def schedule(config: TrainConfig) -> Callable[[int], float]:
    """Learning-rate factor at a step: linear warmup, then cosine down to a tenth."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, config.warmup))
        progress = min(1.0, step / max(1, config.steps))
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return factor


def data_order(count: int, seed: int, epoch: int) -> list[int]:
    """The order of the packed sequences in an epoch: a function of (seed, epoch), so a resumed run picks up
    the data exactly where the checkpoint left it."""
    order = list(range(count))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


@dataclass
class TrainResult:
    steps: int
    seconds: float  # training time, evaluations included, over every resumed part
    losses: list[float]  # training loss per step (mean per answer token)
    evals: list[dict]  # {"step", "loss"}: held-out loss, first before training
    stopped: str  # "steps" or "minutes"


def train(model, train_packs: list[Packed], eval_packs: list[Packed], config: TrainConfig, folder: Path | None = None,
          *, resume: bool = False, device: str = "cpu", deadline: float | None = None,
          on_progress: Progress | None = None) -> TrainResult:
    """Train the LoRA parameters of a peft `model` until config.steps, or until time.time() passes `deadline`
    (less the last evaluation's time, so the final one fits). Checkpoints into `folder` (when given) at every
    evaluation and at the end; with `resume`, continues from its checkpoint."""
    if not train_packs:
        raise ValueError("no training sequences")
    report = on_progress or (lambda *args: None)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(config))
    step, elapsed, losses, evals = 0, 0.0, [], []
    checkpoint = folder / CHECKPOINT if folder is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False, map_location=device)
        saved = state["config"]
        changed = [f"{key} {saved[key]}" for key in RESUME_KEYS if saved[key] != getattr(config, key)]
        if changed:
            raise ValueError(f"{checkpoint} was made with other settings ({', '.join(changed)}); resume with the "
                             f"same ones, or start afresh without --resume")
        model.load_state_dict(state["lora"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, elapsed, losses, evals = state["step"], state["elapsed"], state["losses"], state["evals"]
        torch.set_rng_state(state["rng"])
        if device == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
    started = time.perf_counter() - elapsed

    def save() -> None:
        if checkpoint is None:
            return
        partial = checkpoint.with_suffix(".partial")
        torch.save({"lora": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                    "elapsed": time.perf_counter() - started, "losses": losses, "evals": evals,
                    "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state() if device == "cuda" else None,
                    "config": asdict(config)}, partial)
        partial.replace(checkpoint)

    def held_out() -> None:
        evaluated = time.perf_counter()
        evals.append({"step": step, "loss": evaluate(model, eval_packs, device, report),
                      "seconds": time.perf_counter() - evaluated})

    model.train()
    if not evals:
        held_out()
    stopped = "steps"
    while step < config.steps:
        if deadline is not None and time.time() + evals[-1]["seconds"] >= deadline:
            stopped = "minutes"
            break
        order = data_order(len(train_packs), config.seed, step // len(train_packs))
        loss, count = sequence_loss(model, train_packs[order[step % len(train_packs)]], device)
        optimizer.zero_grad(set_to_none=True)
        (loss / count).backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.clip)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(loss.item() / count)
        info = {"loss": sum(losses[-10:]) / len(losses[-10:]), "held-out": evals[-1]["loss"]}
        report("train", step, config.steps, info)
        if step % config.eval_every == 0 and step < config.steps:
            held_out()
            save()
    if evals[-1]["step"] != step:
        held_out()
    save()
    model.eval()
    return TrainResult(step, time.perf_counter() - started, losses, evals, stopped)


# --- the run ---------------------------------------------------------------------------------------------


def prepare(tokenizer, rows: list[dict], end_of_turn: int, config: TrainConfig) -> dict:
    """Tokenized, filtered, split and packed data, with the counts the card reports."""
    examples = [tokenize(tokenizer, row, end_of_turn) for row in rows]
    kept = [e for e in examples if len(e) <= config.max_tokens]
    dropped = Counter(e.format for e in examples if len(e) > config.max_tokens)
    if not kept:
        raise ValueError(f"every example is longer than --max-tokens {config.max_tokens} "
                         f"(the shortest has {min(map(len, examples))} tokens)")
    train_examples, held = split_by_repo(kept, config.eval_share, config.seed)
    evaluated = random.Random(config.seed).sample(held, min(len(held), config.eval_examples))
    return {"train": pack(train_examples, config.max_tokens), "eval": pack(evaluated, config.max_tokens),
            "counts": {"examples": len(rows), "dropped_too_long": dict(sorted(dropped.items())),
                       "train_examples": len(train_examples), "held_out_examples": len(held),
                       "evaluated_held_out_examples": len(evaluated),
                       "train_per_format": dict(sorted(Counter(e.format for e in train_examples).items())),
                       "train_repos": len({e.repo for e in train_examples}),
                       "held_out_repos": sorted({e.repo for e in held}),
                       "train_tokens": sum(map(len, train_examples)),
                       "train_answer_tokens": sum(len(e.answer) for e in train_examples)}}


def run(model: str, data: Path, out: Path, config: TrainConfig, *, resume: bool = False, device: str = "cpu",
        minutes: float | None = None, threads: int | None = None, command: str = "edit model train-edit",
        on_progress: Progress = lambda *a: None, say: Callable[[str], None] = lambda text: None) -> dict:
    """Train a LoRA adapter for `model` on the examples in `data`, save it into `out` with its card; the card.
    ModelError: the model cannot be loaded; ValueError: bad data or settings."""
    started = time.time()
    deadline = started + 60 * minutes if minutes else None
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    rows = read_examples(data)
    torch.manual_seed(config.seed)
    base, tokenizer = load_model(model, threads=threads, adapter=False)  # trained on the base weights alone
    say(f"tokenizing and packing {len(rows)} examples ...")
    prepared = prepare(tokenizer, rows, end_of_turn_id(base, tokenizer), config)
    out.mkdir(parents=True, exist_ok=True)
    peft_model = lora_model(base.to(device), config)
    result = train(peft_model, prepared["train"], prepared["eval"], config, out, resume=resume, device=device,
                   deadline=deadline, on_progress=on_progress)
    save_adapter(peft_model, out)
    card = {
        "base_model": model,
        "base_description": base_description(model),
        "base_sha256": base_sha256(model),
        "data": {"file": str(data), "sha256": file_sha256(data), "bytes": data.stat().st_size,
                 **prepared["counts"], "train_sequences": len(prepared["train"]),
                 "eval_sequences": len(prepared["eval"])},
        "lora": {"rank": config.rank, "alpha": config.alpha, "targets": LORA_TARGETS, "dropout": config.dropout},
        "config": asdict(config),
        "device": device,
        "steps": result.steps,
        "stopped_by": result.stopped,
        "train_loss_last_10": sum(result.losses[-10:]) / max(1, len(result.losses[-10:])),
        "held_out_loss_before": result.evals[0]["loss"],
        "held_out_loss_after": result.evals[-1]["loss"],
        "evals": result.evals,
        "train_seconds": round(result.seconds, 1),
        "seconds_per_step": round((result.seconds - sum(e["seconds"] for e in result.evals)) / max(1, result.steps), 2),
        "wall_seconds": round(time.time() - started, 1),
        "command": command,
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def save_adapter(peft_model, out: Path) -> None:
    """peft's adapter_model.safetensors and adapter_config.json into `out`, each replaced whole."""
    partial = out / ".adapter.partial"
    shutil.rmtree(partial, ignore_errors=True)
    peft_model.save_pretrained(partial)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        os.replace(partial / name, out / name)
    shutil.rmtree(partial)
