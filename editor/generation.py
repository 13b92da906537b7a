"""Where the Editor's tries are generated: the local model, or an OpenAI-compatible server (vLLM). Both take the
same `Request` (prompt ids, narrowed grammar, budget) and answer (output text, `Generation`), so the Editor's
parse -> apply -> validate -> retry loop is one loop for both.

    LocalModel   decoding/generate.py: constrained speculative decoding on this machine
    ServerModel  decoding/server_client.py: the grammar goes to the server as `structured_outputs.grammar`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from decoding.generate import Generation

    from .request import Request


class Backend(Protocol):
    tokenizer: object  # builds the prompt ids (chat template) and counts the output budget
    local: bool  # build_request(local=...): a local backend needs the constraint and drafters built
    eos_token_ids: set[int]
    vocab_size: int | None

    def generate(self, request: Request, *, temperature: float, seed: int, on_progress,
                 prefix: list[int] = ()) -> tuple[str, Generation]:
        """The answer to `request`; with `prefix`, the answer that starts with those tokens (a fresh request:
        its constraint reads them first). Only a backend whose Generations carry `runner_ups` takes a prefix."""


class LocalModel:
    """The model in this process; one generation at a time (the generator keeps the prompt's KV cache)."""

    local = True

    def __init__(self, model, tokenizer):
        from decoding.generate import Generator

        self.model, self.tokenizer = model, tokenizer
        self.generator = Generator(model, tokenizer)
        self.eos_token_ids = self.generator.eos_token_ids
        self.vocab_size = model.get_output_embeddings().out_features  # int8 layers have no .weight tensor

    def generate(self, request, *, temperature, seed, on_progress, prefix=()):
        from decoding.generate import Generation

        prefix = list(prefix)
        if prefix and request.constraint is not None:
            request.constraint.consume(prefix)
        # The prefix extends the last call's prompt and output, which the generator's KV cache holds.
        generation = self.generator.generate(request.prompt_ids + prefix, request.constraint,
                                             max_new_tokens=request.max_new_tokens - len(prefix),
                                             temperature=temperature, seed=seed, on_progress=on_progress,
                                             drafters=request.drafters)
        if prefix:
            generation = Generation(prefix + generation.tokens, generation.stats, generation.finish_reason,
                                    [(float("inf"), None)] * len(prefix) + generation.runner_ups)
        return self.tokenizer.decode(generation.tokens, skip_special_tokens=True), generation


class ServerModel:
    """A served model: the request's prompt ids and grammar sent to the server (`client`, a ServerClient).
    Thread-safe, so many edits can be in flight at once (`edit batch`). No repetition guard, no OT document
    check and no end of turn taken for a last newline (`GrammarConstraint`) on the server: the output budget and
    the applier stop what they would have."""

    local = False
    eos_token_ids: set[int] = set()  # the server stops at the model's own end of turn
    vocab_size = None

    def __init__(self, client, tokenizer):
        self.client, self.tokenizer = client, tokenizer

    def generate(self, request, *, temperature, seed, on_progress, prefix=()):
        from decoding.generate import Generation, Stats

        if prefix:
            raise ValueError("a served model answers from the prompt only; its Generations have no runner_ups")

        done = self.client.complete(request.prompt_ids, grammar=request.grammar, max_tokens=request.max_new_tokens,
                                    temperature=temperature, seed=seed)
        tokens = done.token_ids or []
        if tokens and tokens[-1] in self.tokenizer.all_special_ids:  # the end of turn: local Generations leave it out
            tokens = tokens[:-1]
        count = len(tokens) if done.token_ids is not None else done.completion_tokens
        stats = Stats(new_tokens=count, model_calls=1, seconds=done.seconds,
                      tokens_per_s=count / done.seconds if done.seconds > 0 else 0.0)
        if on_progress is not None:
            on_progress(stats)
        # vLLM: "stop" for an end of turn or a grammar that ended, "length" for the budget spent
        finish = "length" if done.finish_reason == "length" else "eos"
        return done.text, Generation(tokens, stats, finish)
