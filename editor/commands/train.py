"""`edit model train-mtp`: train MTP heads for a model that ships none (see decoding/train_mtp.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from . import EXIT_REJECTED, model_app


@model_app.command("train-mtp")
def train_mtp(
    model: str = typer.Option("default", "--model", help="Model name, .gguf file or model folder."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder for the heads, card, cache and checkpoint."),
    heads: int = typer.Option(1, "--heads", min=1, help="MTP layers; 1 saves in the Qwen3.5 mtp.* layout "
                                                        "(chained at inference), more in the DeepSeek layout."),
    steps: int = typer.Option(600, "--steps", min=1, help="Most training steps (one sequence each)."),
    data: list[Path] | None = typer.Option(None, "--data", exists=True,
                                           help="Source folders or files (default: the Python stdlib and "
                                                "site-packages, whose vendored packages give real diffs)."),
    resume: bool = typer.Option(False, "--resume", help="Reuse the cache and continue from the checkpoint."),
    minutes: float = typer.Option(40.0, "--minutes", min=0.01, help="Wall-time budget of the whole run."),
    sequences: int = typer.Option(300, "--sequences", min=1, help="Most training sequences to cache."),
    eval_sequences: int = typer.Option(16, "--eval-sequences", min=1, help="Held-out sequences."),
    cache_share: float = typer.Option(0.45, "--cache-share", min=0.05, max=0.9,
                                      help="Share of --minutes for caching the base model's targets."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads (default: $EDIT_THREADS or 2)."),
    origins: int = typer.Option(48, "--origins", min=1, help="Loss origins sampled per sequence and step."),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Peak learning rate."),
    generated: int = typer.Option(0, "--generated", min=0,
                                  help="Also train on this many edit requests answered by the model itself "
                                       "(generated first, kept in OUT/generated; 1/16 as many held out)."),
    generated_repeat: int = typer.Option(3, "--generated-repeat", min=1,
                                         help="Times each generated sequence comes up per epoch."),
    answers: list[Path] | None = typer.Option(None, "--answers", exists=True, file_okay=False,
                                              help="Also train on the model's answers that earlier runs kept "
                                                   "(their OUT/generated folders), held out by file as "
                                                   "--generated's are."),
    init: Path | None = typer.Option(None, "--init", exists=True,
                                     help="Heads to start from (a file or folder saved by train-mtp) instead "
                                          "of the base's last layer."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train MTP heads by self-distillation on code and edit outputs, then measure held-out acceptance."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from decoding import train_mtp as trainer
    from decoding.loading import DRAFT_VOCAB_FILE, HEADS_FILE, load_drafting_heads, load_heads_file, load_model
    from decoding.models import ModelError
    from decoding.mtp import MTPHeads
    from editor.mtp_corpus import build_corpus, generated_corpus, kept_answers

    err = Console(stderr=True)
    started = time.time()
    try:
        base, tokenizer = load_model(model, threads=threads)
    except ModelError as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(EXIT_REJECTED) from None
    out.mkdir(parents=True, exist_ok=True)
    config = trainer.TrainConfig(steps=steps, seed=seed, origins=origins, lr=lr)
    err.print("building the corpus ...")
    train_seqs, eval_seqs = build_corpus(tokenizer, data, train_sequences=sequences,
                                         eval_sequences=eval_sequences, seed=seed)
    mtp = MTPHeads(base, "deepseek", num_layers=heads, hidden_norm="post")
    checkpoint = out / "checkpoint.pt"
    if not (resume and checkpoint.is_file()):
        if init is not None:
            trainer.init_from_heads(mtp, load_heads_file(init, base))
        else:
            trainer.init_from_base(mtp)

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err) as progress:
        tasks = {}

        def on_progress(phase: str, done: int, total: int, info: dict) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total, info="")
            text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
            progress.update(tasks[phase], completed=done, total=total, info=text)

        cache_started = time.time()
        cache_deadline = started + cache_share * 60 * minutes
        common = {"top_k": config.top_k, "hidden_norm": mtp.hidden_norm, "on_progress": on_progress}
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
        try:
            kept_train, kept_eval = kept_answers(tokenizer, answers or [], answered=own_train + own_eval)
        except ValueError as error:
            err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
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
        "command": "edit model train-mtp " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "edit model train-mtp",
    }
    write_card(out, card)
    err.print(f"saved {out / HEADS_FILE} ({(out / HEADS_FILE).stat().st_size / 2**20:.1f} MiB); "
              f"held-out accept at k=1..4: {', '.join(f'{a:.2f}' for a in acceptance['all']['accept'])}")


def base_description(spec: str) -> str:
    from decoding.models import REGISTRY

    return REGISTRY[spec].description if spec in REGISTRY else spec


def base_sha256(spec: str) -> str:
    """The sha256 that names the base weights: the registry's GGUF sha256, a .gguf file's own, or the
    sha256 of a folder's safetensors files in name order."""
    import hashlib

    from decoding.models import REGISTRY, file_sha256

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

Trained with `{card['command']}` on this repository's CPU trainer (`decoding/train_mtp.py`).

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
