"""Train MTP heads for a model that ships none, on a CPU, by self-distillation.

The heads are DeepSeek-V3-style MTP modules (`MTPHeads(base, "deepseek", num_layers=K)`: enorm, hnorm,
eh_proj and one decoder block each; the embedding and lm_head are the base model's, shared and frozen).
They learn to predict what the base model itself would write, not what the corpus says:

    target of draft step j at pair t  =  the base's next-token distribution at position t + j
                                         (the distribution over x_{t+j+1} given x_{<=t+j})

as soft targets: cross-entropy against the base's top-k probabilities (renormalised), which is the KL to
the base up to a constant. Soft rather than argmax targets because a position then teaches the ranking of
every plausible token, not one bit, which matters with the few thousand positions a CPU can afford; the
argmax stays the mode of the target, which is what greedy acceptance checks.

The heads read the base's post-norm last hidden state (`hidden_norm="post"`), the state the Qwen3.5 `mtp.*`
layout is fed at inference, so one trained layer converts exactly to that layout.

Draft steps are trained chained, as they run at inference ("training-time test"): step 1 runs the block
over every pair (h_t, x_{t+1}) of a sequence, causally; step j > 1 runs only at sampled origins t, on the
recycled head state and x_{t+j}, and attends to the step-1 pairs <= t plus its own earlier steps, which
is exactly the KV cache `MTPHeads.draft` sees. The fed tokens are the corpus's; where the corpus follows
the base's greedy path they are the drafts that inference would feed (see `evaluate`).

What makes it fit a CPU:
  - the base runs once per sequence (`cache_targets`): its hidden states and top-k next-token
    distributions go to one torch.save file per sequence; a prompt prefix shared by many sequences is
    run once and its KV cache reused;
  - the loss is computed at a sample of origins per sequence, and over the draft vocabulary only
    (`draft_vocabulary`: the tokens the heads will be allowed to draft), not the full lm_head;
  - training checkpoints (heads, optimizer, step, elapsed time) and resumes; the learning-rate schedule
    follows max(step / steps, elapsed / time budget), so a time-boxed run still anneals.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from decoding.generate import capture_hidden
from decoding.mtp import MTPHeads, checkpoint_names, convert_state

# on_progress(phase, done, total, info)
Progress = Callable[[str, int, int, dict], None]


@dataclass(frozen=True)
class TrainSequence:
    """One training sequence. tokens[:prefix_len] is a prompt prefix many sequences share: the base reads
    it once (KV cache reused), the heads neither read nor predict it. tokens[focus_start:] is the part
    decoding writes (the answer); half the loss origins are drawn from there."""

    tokens: list[int]
    prefix_len: int = 0
    focus_start: int = 0

    def key(self) -> str:
        digest = hashlib.sha256(f"{self.prefix_len},{self.focus_start}:".encode())
        digest.update(torch.tensor(self.tokens, dtype=torch.int64).numpy().tobytes())
        return digest.hexdigest()[:20]


@dataclass
class CachedSequence:
    """The base model's view of a TrainSequence; index i of every tensor is position start + i."""

    tokens: torch.Tensor  # [T] int64, the whole sequence
    start: int  # the sequence's prefix_len
    focus: int  # the sequence's focus_start
    hidden: torch.Tensor  # [T - start, H] float16, the base's last hidden state (pre or post final norm)
    top_ids: torch.Tensor  # [T - start, k] int32, the base's top-k next tokens
    top_probs: torch.Tensor  # [T - start, k] float16, their probabilities

    @property
    def pairs(self) -> int:
        """Pairs (h_i, x_{start+i+1}) the sequence holds."""
        return self.hidden.shape[0] - 1


@dataclass
class TrainConfig:
    chain_steps: int = 4  # draft steps unrolled per origin
    top_k: int = 16  # base probabilities kept per position (soft targets)
    origins: int = 48  # loss origins per sequence and step
    eval_origins: int = 64
    lr: float = 5e-4
    warmup: int = 10
    steps: int = 400
    minutes: float | None = None  # wall-time budget of the training loop (None: steps only)
    step_decay: float = 0.8  # loss weight of step j is step_decay ** (j - 1): later steps matter less
    clip: float = 1.0
    checkpoint_every: int = 20
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss of each step


# --- caching the base model's targets -----------------------------------------------------------------------


@torch.no_grad()
def base_targets(base, sequence: TrainSequence, top_k: int, hidden_norm: str,
                 prefix_caches: dict[tuple[int, ...], DynamicCache]) -> CachedSequence:
    """Run the base over the sequence (after its shared prefix, whose KV cache is computed once)."""
    tokens, start = sequence.tokens, sequence.prefix_len
    if not 0 <= start < len(tokens) - 1:
        raise ValueError(f"prefix_len {start} leaves no pairs in a sequence of {len(tokens)} tokens")
    decoder = base.get_decoder()
    cache = None
    if start:
        prefix = tuple(tokens[:start])
        if prefix not in prefix_caches:
            prefix_caches[prefix] = DynamicCache(config=base.config)
            decoder(input_ids=torch.tensor([prefix]), cache=prefix_caches[prefix], use_cache=True)
        cache = prefix_caches[prefix]
    with capture_hidden(base, True) as box:
        positions = torch.arange(start, len(tokens))[None]
        decoder(input_ids=torch.tensor([tokens[start:]]), position_ids=positions, cache=cache, use_cache=cache is not None)
    if cache is not None:
        cache.crop(-(len(tokens) - start))  # back to the shared prefix
    states = box["hidden"]
    ids, probs = [], []
    for chunk in states.post_norm.split(128):  # [<=128, H] -> logits [<=128, V]: bounded memory
        top = torch.softmax(base.get_output_embeddings()(chunk).float(), dim=-1).topk(top_k, dim=-1)
        ids.append(top.indices.to(torch.int32))
        probs.append(top.values.to(torch.float16))
    hidden = states.post_norm if hidden_norm == "post" else states.pre_norm
    return CachedSequence(torch.tensor(tokens), start, sequence.focus_start, hidden.to(torch.float16),
                          torch.cat(ids), torch.cat(probs))


def cache_targets(base, sequences: list[TrainSequence], folder: Path, *, top_k: int, hidden_norm: str,
                  deadline: float | None = None, minimum: int = 1,
                  on_progress: Progress | None = None) -> list[CachedSequence]:
    """Cached targets of `sequences`, in order, computing the missing ones (one file per sequence, named by
    its content, so a rerun or a resumed run reuses them). Stops computing at `deadline` (time.time())
    once `minimum` sequences are cached."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix_caches: dict[tuple[int, ...], DynamicCache] = {}
    cached: list[CachedSequence] = []
    report = on_progress or (lambda *args: None)
    for index, sequence in enumerate(sequences):
        path = folder / f"{sequence.key()}-{hidden_norm}-top{top_k}.pt"
        if path.is_file():
            cached.append(CachedSequence(**torch.load(path)))
        elif deadline is not None and time.time() > deadline and len(cached) >= minimum:
            break
        else:
            record = base_targets(base, sequence, top_k, hidden_norm, prefix_caches)
            partial = path.with_suffix(".partial")
            torch.save(asdict(record), partial)
            partial.replace(path)
            cached.append(record)
        report("cache", index + 1, len(sequences), {"tokens": sum(len(c.tokens) - c.start for c in cached)})
    return cached


# --- the chained forward ------------------------------------------------------------------------------------


class GrowingKV:
    """Stands in for the HF cache of one MTP block during training: holds the keys and values of the
    context pairs and of earlier draft steps, with their autograd history, and appends each new step's."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        # keys, values: [1, heads, T, D]
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=-2), torch.cat([self.values, values], dim=-2)
        self.keys, self.values = keys, values
        return keys, values


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # allowed: bool [Q, K] -> float [1, 1, Q, K], 0 where attended and -inf elsewhere (sdpa and eager both add it)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, float("-inf"))[None, None]


def _block(heads: MTPHeads, index: int, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
           kv: GrowingKV) -> torch.Tensor:
    # x: [1, Q, H], positions: [Q] -> block output [Q, H]
    rotary = heads.base.get_decoder().rotary_emb(x, positions[None])
    out = heads.layers[index].block(x, attention_mask=mask, position_embeddings=rotary, position_ids=positions[None],
                                    cache=kv, use_cache=True)
    return (out[0] if isinstance(out, tuple) else out)[0]


def chained_outputs(heads: MTPHeads, record: CachedSequence, origins: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Block outputs of draft steps 1..steps at `origins` (pair indices), each [S, H]; step j predicts the
    token at start + origin + j + 1 and is fed the corpus token at start + origin + j."""
    embed = heads.base.get_decoder().embed_tokens
    dtype = heads.layers[0].proj.weight.dtype
    pairs, start = record.pairs, record.start
    hidden = record.hidden[:pairs].to(dtype)  # [P, H]
    next_tokens = record.tokens[start + 1:start + 1 + pairs]  # [P]
    positions = torch.arange(start, start + pairs)
    causal = torch.ones(pairs, pairs, dtype=torch.bool).tril()
    # Every layer holds the target pairs as context (MTPHeads.extend runs each layer over them).
    kvs = [GrowingKV() for _ in heads.layers]
    context = [_block(heads, i, layer.project(hidden[None], embed(next_tokens)[None]), positions,
                      _additive(causal, dtype), kvs[i])
               for i, layer in enumerate(heads.layers)]
    outs = [context[0][origins]]
    chained = [0] * len(heads.layers)  # draft steps already appended to each layer's keys
    sees_context = torch.arange(pairs)[None] <= origins[:, None]  # [S, P]
    own = torch.eye(len(origins), dtype=torch.bool)  # [S, S]: a step sees its own origin's earlier steps
    for step in range(2, steps + 1):
        previous, index = (step - 2) % len(heads.layers), (step - 1) % len(heads.layers)
        recycled = heads._recycled(previous, outs[-1])  # [S, H]
        fed = record.tokens[start + origins + step]  # [S]
        x = heads.layers[index].project(recycled[None], embed(fed)[None])
        allowed = torch.cat([sees_context] + [own] * (chained[index] + 1), dim=1)
        outs.append(_block(heads, index, x, start + origins + step - 1, _additive(allowed, dtype), kvs[index]))
        chained[index] += 1
    return outs


def restricted_logits(heads: MTPHeads, index: int, block_out: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    # block_out: [S, H], vocab: [V'] token ids -> logits [S, V'] over those tokens only
    head = heads.layers[index].head or heads.base.get_output_embeddings()
    bias = head.bias[vocab] if head.bias is not None else None
    return F.linear(heads.layers[index].final_norm(block_out), head.weight[vocab], bias)


def distill_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    # logits: [S, V'], target_ids: [S, k] indices into V', target_probs: [S, k] -> soft cross-entropy
    weights = target_probs.float() / target_probs.float().sum(-1, keepdim=True)
    return -(weights * torch.log_softmax(logits.float(), dim=-1).gather(-1, target_ids)).sum(-1).mean()


# --- training -----------------------------------------------------------------------------------------------


def draft_vocabulary(records: list[CachedSequence], vocab_size: int, first_ids: int = 8192) -> torch.Tensor:
    """The tokens the heads may draft (`MTPHeads.restrict_draft_vocab`), [V'] sorted: every token that is the
    base's greedy choice somewhere in the training data (so the end-of-turn token too), and the `first_ids`
    lowest ids, which byte-level BPE vocabularies give to their earliest, most frequent merges. A greedy
    draft can only be accepted if it is the base's greedy choice, so tokens that never are buy nothing:
    on the default model's data this is 20k rows instead of 65k for every token seen, with the same
    acceptance on EditEval (docs/BENCHMARKS.md)."""
    greedy = torch.zeros(vocab_size, dtype=torch.bool)
    for record in records:
        greedy[record.top_ids[:, 0].long()] = True
    return torch.unique(torch.cat([greedy.nonzero().flatten(), torch.arange(min(first_ids, vocab_size))]))


def training_vocab(records: list[CachedSequence], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the draft vocabulary, [V']; full id -> index in it, or -1, [V]). The loss's softmax runs over the
    tokens the heads will draft among, as drafting does: steps 1.7x faster than over every token the data
    uses (14k rows instead of 43k on the default model's data), and no probability goes to tokens the
    heads may never draft."""
    vocab = draft_vocabulary(records, vocab_size)
    index = torch.full((vocab_size,), -1, dtype=torch.long)
    index[vocab] = torch.arange(len(vocab))
    return vocab, index


def sample_origins(record: CachedSequence, count: int, steps: int, rng: random.Random) -> torch.Tensor:
    """Up to `count` pair indices with `steps` draft steps inside the sequence, half from the focus part."""
    last = record.pairs - steps  # origin o needs the token at start + o + steps
    if last < 0:
        return torch.empty(0, dtype=torch.long)
    focus_first = min(max(0, record.focus - record.start - 2), last + 1)  # first origin drafting the answer
    focus, rest = list(range(focus_first, last + 1)), list(range(0, focus_first))
    take_focus = min(len(focus), max(count // 2, count - len(rest)))
    chosen = rng.sample(focus, take_focus) + rng.sample(rest, min(len(rest), count - take_focus))
    return torch.tensor(sorted(chosen), dtype=torch.long)


def step_loss(heads: MTPHeads, record: CachedSequence, origins: torch.Tensor, config: TrainConfig,
              vocab: torch.Tensor, vocab_index: torch.Tensor) -> torch.Tensor:
    outs = chained_outputs(heads, record, origins, config.chain_steps)
    total, norm = 0.0, 0.0
    for step, out in enumerate(outs, 1):
        index = (step - 1) % len(heads.layers)
        target = origins + step  # the base's distribution at pair index o + j
        ids = vocab_index[record.top_ids[target].long()]  # [S, k], -1 for targets outside the vocabulary
        # Those targets drop out (weight 0): the heads can never draft them. The top-1 target is always
        # inside, since the draft vocabulary holds every greedy choice of the data.
        probs = record.top_probs[target].masked_fill(ids < 0, 0)
        weight = config.step_decay ** (step - 1)
        total = total + weight * distill_loss(restricted_logits(heads, index, out, vocab), ids.clamp(min=0), probs)
        norm += weight
    return total / norm


def init_from_base(heads: MTPHeads) -> None:
    """Start each MTP block as a copy of the base's last decoder layer and its final norm as the base's;
    the projection starts as the sum of the two normalised inputs."""
    decoder = heads.base.get_decoder()
    hidden = heads.block_config.hidden_size
    offset = 1.0 if heads.layout.unit_offset_norms else 0.0
    with torch.no_grad():
        for layer in heads.layers:
            layer.block.load_state_dict(decoder.layers[-1].state_dict())
            layer.final_norm.weight.copy_(decoder.norm.weight - offset)
            layer.proj.weight.copy_(torch.cat([torch.eye(hidden), torch.eye(hidden)], dim=1))


def init_from_heads(heads: MTPHeads, trained: MTPHeads) -> None:
    """Start from heads trained before (any layout; `load_mtp_heads` reads them): a further run
    fine-tunes them, e.g. on new data."""
    if len(trained.layers) != len(heads.layers) or trained.hidden_norm != heads.hidden_norm:
        raise ValueError(f"the initial heads have {len(trained.layers)} layer(s) fed the {trained.hidden_norm}-norm "
                         f"state; this run trains {len(heads.layers)} fed the {heads.hidden_norm}-norm state")
    converted = convert_state(trained, heads.layout.name)
    heads.load_state_dict({internal: converted[name] for internal, name in checkpoint_names(heads).items()})


def learning_rate(config: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warmup, then cosine from lr to lr / 10 over the run's progress."""
    warm = min(1.0, (step + 1) / config.warmup)
    progress = min(1.0, learning_progress(config, step, elapsed))
    return config.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(heads: MTPHeads, records: list[CachedSequence], config: TrainConfig, checkpoint: Path | None = None,
          resume: bool = False, on_progress: Progress | None = None) -> TrainResult:
    """Train `heads` on cached records until config.steps or config.minutes, whichever comes first."""
    if not records:
        raise ValueError("no cached sequences to train on")
    heads.base.requires_grad_(False)
    heads.train()
    vocab, vocab_index = training_vocab(records, heads.vocab_size)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=0.0)
    rng = random.Random(config.seed)
    step, elapsed, losses = 0, 0.0, []
    order: list[int] = []  # the rest of this epoch's shuffled record indices
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses, order = state["step"], state["elapsed"], state["losses"], state["order"]
        rng.setstate(state["rng"])
    report = on_progress or (lambda *args: None)
    started = time.perf_counter() - elapsed

    def save() -> None:
        if checkpoint is not None:
            partial = checkpoint.with_suffix(".partial")
            torch.save({"heads": heads.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "elapsed": time.perf_counter() - started, "losses": losses, "order": order,
                        "rng": rng.getstate()}, partial)
            partial.replace(checkpoint)

    while learning_progress(config, step, time.perf_counter() - started) < 1.0:
        if not order:
            order = list(range(len(records)))
            rng.shuffle(order)
        record = records[order.pop()]
        origins = sample_origins(record, config.origins, config.chain_steps, rng)
        if len(origins) == 0:
            continue
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step, time.perf_counter() - started)
        loss = step_loss(heads, record, origins, config, vocab, vocab_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(heads.parameters(), config.clip)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        seconds = time.perf_counter() - started
        report("train", step, config.steps, {"loss": losses[-1], "seconds": seconds,
                                             "progress": learning_progress(config, step, seconds)})
        if step % config.checkpoint_every == 0:
            save()
    save()
    heads.eval()
    return TrainResult(step, time.perf_counter() - started, losses)


def learning_progress(config: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the run done: by steps, or by time when a time budget is set and runs out first."""
    progress = step / config.steps
    if config.minutes:
        progress = max(progress, elapsed / (60 * config.minutes))
    return progress


# --- held-out acceptance ------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(heads: MTPHeads, records: list[CachedSequence], steps: int = 4, origins_per_sequence: int = 64,
             seed: int = 0, on_progress: Progress | None = None) -> dict[str, dict[str, list[float]]]:
    """Agreement of chained greedy drafts with the base's greedy tokens, over the full vocabulary.

    For origin t, draft step j predicts the token at t + j + 1; the base's greedy choice there is
    g[t + j] (the argmax of its distribution at pair index t + j). Reported per step j = 1..steps:
      top1    fraction of origins with draft j == g[t + j] (corpus tokens fed between steps);
      accept  the same, among origins where inference would reach step j: x_{t+1} == g[t] (the base wrote
              the last token itself), and for every earlier step i the draft matched and the corpus
              continued with that token, x_{t+i+1} == g[t+i]. There, feeding the corpus token is feeding
              the accepted draft, so the chain is the one inference runs. Drafting k tokens then accepts
              sum_{m<=k} prod_{j<=m} accept_j tokens on average (`expected_accepted`).
    Both for all origins ("all") and for origins that draft the answer ("focus")."""
    heads.eval()
    rng = random.Random(seed)
    report = on_progress or (lambda *args: None)
    counts = {scope: torch.zeros(3, steps) for scope in ("all", "focus")}  # rows: agree, reached, reached & agree
    totals = {scope: 0 for scope in counts}
    for done, record in enumerate(records, 1):
        origins = sample_origins(record, origins_per_sequence, steps, rng)
        if len(origins):
            outs = chained_outputs(heads, record, origins, steps)
            greedy = record.top_ids[:, 0].long()  # [N]
            corpus = record.tokens[record.start:]  # [N]: corpus[i] is the token at start + i
            reached = corpus[origins + 1] == greedy[origins]
            agree_rows, reach_rows, both_rows = [], [], []
            for step, out in enumerate(outs, 1):
                index = (step - 1) % len(heads.layers)
                draft = heads.logits(index, out).argmax(-1)
                agree = draft == greedy[origins + step]
                agree_rows.append(agree)
                reach_rows.append(reached)
                both_rows.append(reached & agree)
                if step < steps:
                    reached = reached & agree & (corpus[origins + step + 1] == greedy[origins + step])
            rows = [torch.stack(r).float() for r in (agree_rows, reach_rows, both_rows)]  # [steps, S] each
            focus = origins >= record.focus - record.start - 2
            for scope, keep in (("all", torch.ones_like(focus)), ("focus", focus)):
                counts[scope] += torch.stack([r[:, keep].sum(-1) for r in rows])
                totals[scope] += int(keep.sum())
        report("eval", done, len(records), {})
    results = {}
    for scope, (agree, reached, both) in counts.items():
        accept = (both / reached.clamp(min=1)).tolist()
        results[scope] = {
            "origins": totals[scope],
            "top1": (agree / max(1, totals[scope])).tolist(),
            "accept": accept,
            "reached": reached.tolist(),
            "expected_accepted": [sum(math.prod(accept[:m]) for m in range(1, k + 1)) for k in range(1, steps + 1)],
        }
    return results


# --- saving -------------------------------------------------------------------------------------------------


def save_draft_vocab(token_ids: torch.Tensor, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"token_ids": token_ids.to(torch.int64).contiguous()}, str(path))


def save_heads(heads: MTPHeads, path: Path, layout: str = "qwen3_5", dtype: torch.dtype = torch.float16) -> None:
    """`save_mtp_heads`, stored in `dtype` (loading casts to the model's dtype)."""
    from safetensors.torch import save_file

    state = {name: tensor.to(dtype) for name, tensor in convert_state(heads, layout).items()}
    save_file(state, str(path), metadata={"layout": layout, "hidden_norm": heads.hidden_norm})
