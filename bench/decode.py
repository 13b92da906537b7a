"""Decoding speed (`edit bench decode`): each drafter config against plain decoding, same weights, one run."""

from __future__ import annotations

from editor.request import build_request, edit_drafters, mtp_drafter

from .items import Item

# "mtp k=N": MTP drafts of exactly N tokens (no adaptive length, no confidence cut); "mtp" and "mtp+copy":
# as the editor drafts (adaptive length up to 8, `editor.request.mtp_drafter`).
DECODE_CONFIGS = ("plain", "copy", "mtp", "mtp k=1", "mtp k=2", "mtp k=3", "mtp k=4", "mtp+copy")


def check_decode_configs(configs) -> None:
    """ValueError unless `configs` are known decode configs with plain, the reference of the others, first."""
    if not configs or configs[0] != "plain" or any(c not in DECODE_CONFIGS for c in configs):
        raise ValueError(f"choose among {', '.join(DECODE_CONFIGS)}, plain first: decode configs must start with "
                         f"plain, the reference of the others; got {', '.join(configs) or 'none'}")


def decode(model, tokenizer, items: list[Item], *, heads=None, max_new_tokens: int = 96, fmt: str = "apply_patch",
           configs=DECODE_CONFIGS, grammar_modes=(True, False), on_row=None) -> list[dict]:
    """Decoding speed of `fmt` outputs for the items: each config against plain, same weights, one run.

    The prompt is prefilled once per item before timing (its KV cache is reused), so tokens/s is decoding
    speed; the MTP heads' own pass over the prompt pairs happens at their first draft and is timed.
    `mean_accepted`: tokens per verification, the target's own token included; `draft_acceptance`:
    accepted / drafted tokens; `identical_to_plain`: the config produced exactly plain greedy's tokens on
    every item. `on_row(rows so far)` after each config (a long run keeps what it measured)."""
    from decoding.drafters import MTPDrafter
    from decoding.generate import Generator, Stats

    check_decode_configs(configs)
    vocab = model.get_output_embeddings().out_features
    eos = Generator(model, tokenizer).eos_token_ids
    wanted = [c for c in configs if heads is not None or "mtp" not in c]
    rows = []
    for use_grammar in grammar_modes:
        reference: dict[str, list[int]] = {}
        for config in wanted:
            total = Stats()
            identical = True
            for item in items:
                fixed_k = int(config.split("k=")[1]) if "k=" in config else None
                mtp = None if heads is None else MTPDrafter(heads) if fixed_k else mtp_drafter(heads)
                request = build_request(tokenizer, fmt, name="item.py", text=item.code, instruction=item.instruction,
                                        language="python", eos_token_ids=eos, vocab_size=vocab, grammar=use_grammar,
                                        mtp=mtp if config == "mtp+copy" else None)
                drafters = {"plain": [], "copy": request.drafters, "mtp+copy": request.drafters}.get(config, [mtp])
                generator = Generator(model, tokenizer, max_draft=fixed_k or 8, adaptive=fixed_k is None)
                # Prefill outside the timing, with the drafters: an MTP drafter keeps the prompt's hidden states.
                generator.generate(request.prompt_ids, None, max_new_tokens=1, drafters=drafters)
                result = generator.generate(request.prompt_ids, request.constraint, max_new_tokens=max_new_tokens,
                                            drafters=drafters)
                total.merge(result.stats)
                if config == "plain":
                    reference[item.task_id] = result.tokens
                identical &= result.tokens == reference.get(item.task_id)
            proposed, accepted = sum(total.proposed_per_drafter.values()), sum(total.accepted_per_drafter.values())
            rows.append({"config": config + (" +grammar" if use_grammar else ""),
                         "tokens_per_s": total.tokens_per_s,
                         "mean_accepted": total.mean_accepted,
                         "draft_acceptance": accepted / proposed if proposed else None,
                         "model_calls_per_token": total.model_calls / max(1, total.new_tokens),
                         "grammar_us_per_token": 1e6 * total.grammar_seconds / max(1, total.new_tokens),
                         "identical_to_plain": identical})
            plain = next(r for r in rows if r["config"] == "plain" + (" +grammar" if use_grammar else ""))
            rows[-1]["speedup_vs_plain"] = rows[-1]["tokens_per_s"] / plain["tokens_per_s"]
            if on_row:
                on_row(rows)
    return rows


def decode_server(client, tokenizer, items: list[Item], *, max_new_tokens: int = 96, fmt: str = "apply_patch",
                  grammar_modes=(True, False), on_row=None) -> list[dict]:
    """Decoding speed on a server (`client`, a ServerClient): the same requests as `decode` builds, one at a time,
    greedy; whatever the server drafts with is its own (vLLM: --speculative-config). Times are the requests'
    wall-clock, so they include the prompt's prefill (the server may cache it between items: vLLM does)."""
    from decoding.generate import Stats

    rows = []
    for use_grammar in grammar_modes:
        total = Stats()
        for item in items:
            request = build_request(tokenizer, fmt, name="item.py", text=item.code, instruction=item.instruction,
                                    language="python", grammar=use_grammar, local=False)
            done = client.complete(request.prompt_ids, grammar=request.grammar, max_tokens=max_new_tokens)
            total.merge(Stats(new_tokens=done.completion_tokens, model_calls=1, seconds=done.seconds))
        rows.append({"config": "server" + (" +grammar" if use_grammar else ""), "tokens_per_s": total.tokens_per_s,
                     "output_tokens": total.new_tokens, "seconds": total.seconds})
        if on_row:
            on_row(rows)
    return rows


def markdown_decode_server(report: dict) -> str:
    lines = [f"server {report['server']} ({report['model']} tokenizer), {report['items']} EditEval items, "
             f"{report['format']} outputs, greedy, one request at a time", "",
             "| config | tokens/s | output tokens | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {r['config']} | {r['tokens_per_s']:.2f} | {r['output_tokens']} | {r['seconds']:.1f} |"
              for r in report["configs"]]
    return "\n".join(lines)


def markdown_decode(report: dict) -> str:
    heads = f", MTP heads: {report['heads']} ({report['heads_dtype']})" if report.get("heads") else ""
    lines = [f"{report['model']}, {report['items']} EditEval items, {report.get('format', 'apply_patch')} outputs{heads}",
             "", "| config | tokens/s | speed-up vs plain | tokens per verification | draft acceptance "
                 "| model calls per token | grammar µs/token | identical to plain |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["configs"]:
        acceptance = "-" if r.get("draft_acceptance") is None else f"{r['draft_acceptance']:.2f}"
        lines.append(f"| {r['config']} | {r['tokens_per_s']:.2f} | {r['speedup_vs_plain']:.2f}x | "
                     f"{r['mean_accepted']:.2f} | {acceptance} | {r['model_calls_per_token']:.2f} | "
                     f"{r['grammar_us_per_token']:.0f} | {'yes' if r['identical_to_plain'] else 'NO'} |")
    return "\n".join(lines)
