"""One `edit model train-mtp` run: build the corpus (and the model's own answers), cache the base's targets,
train the heads, measure held-out acceptance, save heads, draft vocabulary and card (card.json + README.md).

The CLI (editor/commands/train.py) only parses options and shows progress; everything else is here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from decoding.model_loading import DRAFT_VOCAB_FILE, HEADS_FILE, load_drafting_heads, load_heads_file, load_model
from decoding.model_registry import REGISTRY, file_sha256
from decoding.mtp import MTPHeads

from . import mtp_trainer as trainer
from .mtp_corpus import build_corpus, generated_corpus, kept_answers

# on_progress(phase, done, total, info)
Progress = Callable[[str, int, int, dict], None]


def run(model: str, out: Path, *, heads: int = 1, steps: int = 600, data: list[Path] | None = None,
        resume: bool = False, minutes: float = 40.0, sequences: int = 300, eval_sequences: int = 16,
        cache_share: float = 0.45, threads: int | None = None, origins: int = 48, lr: float = 5e-4,
        generated: int = 0, generated_repeat: int = 3, answers: list[Path] | None = None, init: Path | None = None,
        seed: int = 0, command: str = "edit model train-mtp", on_progress: Progress = lambda *a: None,
        say: Callable[[str], None] = lambda text: None) -> dict:
    """Train MTP heads for `model` into `out`; the card. ModelError: the model cannot be loaded;
    ValueError: an --answers folder holds a file that is not a kept answer."""
    started = time.time()
    base, tokenizer = load_model(model, threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    config = trainer.TrainConfig(steps=steps, seed=seed, origins=origins, lr=lr)
    say("building the corpus ...")
    train_seqs, eval_seqs = build_corpus(tokenizer, data, train_sequences=sequences,
                                         eval_sequences=eval_sequences, seed=seed)
    mtp = MTPHeads(base, "deepseek", num_layers=heads, hidden_norm="post")
    checkpoint = out / "checkpoint.pt"
    if not (resume and checkpoint.is_file()):
        if init is not None:
            trainer.init_from_heads(mtp, load_heads_file(init, base))
        else:
            trainer.init_from_base(mtp)

    common = {"top_k": config.top_k, "hidden_norm": mtp.hidden_norm, "on_progress": on_progress}
    cache_started = time.time()
    cache_deadline = started + cache_share * 60 * minutes
    held_out = trainer.cache_targets(base, eval_seqs, out / "cache", **common)
    own_train, own_eval = [], []
    if generated:
        # The model's own answers come first: they are the data closest to what the heads draft. They
        # are decoded as `edit` decodes: with the heads it would load (or those this run starts from),
        # drafting in int8, which changes the speed, never the answers. Generating stops early enough
        # to cache what it made: caching costs about a third of generating.
        drafting_heads = load_drafting_heads(model, base, init)
        own_train, own_eval = generated_corpus(base, tokenizer, data, out / "generated",
                                               train_sequences=generated, eval_sequences=max(1, generated // 16),
                                               seed=seed, deadline=started + 0.75 * (cache_deadline - started),
                                               heads=drafting_heads, on_progress=on_progress)
    kept_train, kept_eval = kept_answers(tokenizer, answers or [], answered=own_train + own_eval)
    generate_seconds = time.time() - cache_started
    own_held_out = trainer.cache_targets(base, own_eval + kept_eval, out / "cache", **common)
    own_records = trainer.cache_targets(base, own_train + kept_train, out / "cache", **common)
    corpus_records = trainer.cache_targets(base, train_seqs, out / "cache", minimum=8,
                                           deadline=cache_deadline, **common)
    records = corpus_records + own_records * generated_repeat
    cache_seconds = time.time() - cache_started
    eval_reserve = 0.1 * minutes
    config.minutes = max(0.01, minutes - (time.time() - started) / 60 - eval_reserve)
    result = trainer.train(mtp, records, config, checkpoint, resume=resume, on_progress=on_progress)
    acceptance = trainer.evaluate(mtp, held_out, steps=4, origins_per_sequence=config.eval_origins,
                                  on_progress=on_progress)
    own_acceptance = (trainer.evaluate(mtp, own_held_out, steps=4, origins_per_sequence=config.eval_origins,
                                       on_progress=on_progress) if own_held_out else None)

    layout = "qwen3_5" if heads == 1 else "deepseek"
    trainer.save_heads(mtp, out / HEADS_FILE, layout=layout)
    draft_vocab = trainer.draft_vocabulary(records, mtp.vocab_size)
    trainer.save_draft_vocab(draft_vocab, out / DRAFT_VOCAB_FILE)
    card = {
        "base_model": model,
        "base_description": base_description(model),
        "base_sha256": base_sha256(model),
        "layout": layout,
        "hidden_norm": mtp.hidden_norm,
        "mtp_layers": heads,
        "dtype": "float16",
        "training": "self-distillation: soft cross-entropy to the base's top-k next-token distribution at "
                    "t+1+j for draft step j, steps chained as at inference",
        "init": str(init) if init else "the base's last decoder layer",
        "init_card": earlier_card(init),
        "data": {"train_sequences": len(corpus_records), "eval_sequences": len(held_out),
                 "train_tokens": sum(len(r.tokens) - r.start for r in corpus_records),
                 "generated_sequences": len(own_records), "generated_eval_sequences": len(own_held_out),
                 "generated_tokens": sum(len(r.tokens) - r.start for r in own_records),
                 "generated_repeat": generated_repeat,
                 "kept_answers": {"folders": [str(f) for f in answers or []], "train_sequences": len(kept_train)},
                 "sources": [str(p) for p in data] if data else "Python stdlib + site-packages (vendored "
                                                                "packages for real diffs)",
                 "formats": "apply_patch 3 : ot 1"},
        "config": {k: v for k, v in vars(config).items()},
        "draft_vocab": len(draft_vocab),
        "steps": result.steps,
        "final_loss": sum(result.losses[-20:]) / max(1, len(result.losses[-20:])),
        "generate_seconds": round(generate_seconds),
        "cache_seconds": round(cache_seconds - generate_seconds),
        "train_seconds": round(result.seconds),
        "wall_seconds": round(time.time() - started),
        "acceptance": acceptance,
        "acceptance_generated": own_acceptance,
        "command": command,
    }
    write_card(out, card)
    return card




def base_description(spec: str) -> str:
    return REGISTRY[spec].description if spec in REGISTRY else spec


def base_sha256(spec: str) -> str:
    """The sha256 that names the base weights: the registry's GGUF sha256, a .gguf file's own, or the
    sha256 of a folder's safetensors files in name order."""
    if spec in REGISTRY:
        return REGISTRY[spec].sha256
    path = Path(spec)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        digest.update(bytes.fromhex(file_sha256(file)))
    return digest.hexdigest()


def earlier_card(init: Path | None) -> dict | None:
    """What made the heads a run starts from (their command and times), so the card tells the whole chain."""
    card = (init if init.is_dir() else init.parent) / "card.json" if init else None
    if card is None or not card.is_file():
        return None
    earlier = json.loads(card.read_text(encoding="utf-8"))
    return {key: earlier.get(key) for key in ("command", "wall_seconds", "steps", "init", "init_card")}


def write_card(folder: Path, card: dict) -> None:
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    scopes = [("acceptance", "all"), ("acceptance", "focus")]
    header = "| k | all positions | answer positions |"
    if card.get("acceptance_generated"):
        scopes.append(("acceptance_generated", "focus"))
        header += " the model's own answers |"
    rows = "\n".join(f"| {k} | " + " | ".join(f"{card[key][scope]['accept'][k - 1]:.3f}" for key, scope in scopes)
                     + " |" for k in range(1, 5))
    chain, earlier = [], card.get("init_card")
    while earlier:
        chain.append(f"`{earlier['command']}` ({earlier['wall_seconds']} s, {earlier['steps']} steps)")
        earlier = earlier.get("init_card")
    started = ("- started from heads trained by " + ", after ".join(chain) + "\n") if chain else ""
    data = card["data"]
    own = (f"; {data['generated_sequences']} edit requests answered by the model itself "
           f"({data['generated_tokens']} tokens, each seen {data['generated_repeat']}x as often), "
           f"{data['generated_eval_sequences']} held out") if data.get("generated_sequences") else ""
    kept = data.get("kept_answers") or {}
    if kept.get("folders"):
        own += f" ({kept['train_sequences']} of the training ones kept by earlier runs in {', '.join(kept['folders'])})"
    (folder / "README.md").write_text(f"""# MTP heads for {card['base_description']}

Trained with `{card['command']}` on this repository's CPU trainer (`training/mtp_trainer.py`).

- base weights sha256: `{card['base_sha256']}`
- layout: `{card['layout']}` ({card['mtp_layers']} layer; more draft steps chain it), fed the {card['hidden_norm']}-norm hidden state, stored {card['dtype']}
- training: {card['training']}
{started}- data: {data['train_sequences']} sequences ({data['train_tokens']} tokens) of edit requests and answers; {data['eval_sequences']} held-out sequences from other files{own}
- draft vocabulary: {card.get('draft_vocab', 'all')} tokens (`draft_vocab.safetensors`: the base's greedy choices in the data and the lowest BPE ids; drafting skips the rest of the lm_head)
- steps: {card['steps']}, final loss {card['final_loss']:.3f}; wall time {card['wall_seconds']} s (generating {card.get('generate_seconds', 0)} s, caching {card['cache_seconds']} s, training {card['train_seconds']} s)

Held-out acceptance of draft step k (greedy, chained, given steps < k accepted; see `evaluate`):

{header}
|---|---|---|{"---|" * (len(scopes) - 2)}
{rows}

Full numbers in card.json.
""", encoding="utf-8")
