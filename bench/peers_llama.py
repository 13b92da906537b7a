"""The llama.cpp side of `edit bench peers`, run by the peers virtualenv's Python (`make peers`), not the project's:
it imports llama_cpp and the standard library only.

    .venv-peers/bin/python bench/peers_llama.py < jobs.json > results.json

jobs.json: {"gguf": path, "threads": n, "n_ctx": n, "modes": ["plain", "lookup"], "eos": [ids],
            "jobs": [{"id": str, "prompt_ids": [ids], "max_tokens": n}]}
Each mode loads the model once (timed), then for each job runs the same request twice, greedy and without
a grammar: first with an empty KV cache (end to end: the prompt, then decoding to EOS or max_tokens), then
again with the prompt cached (all but its last token, as our Generator keeps it): decoding only. Prints
{"llama_cpp": version, "system_info": ggml's CPU features, "modes": {mode: {"load_s": s, "jobs": [{"id", "tokens", "end_to_end_s", "decode_s"}]}}}.
"""

from __future__ import annotations

import json
import sys
import time

import llama_cpp
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

LOOKUP_TOKENS = 10  # llama-cpp-python's default draft length for prompt lookup


def run_request(llm, prompt_ids: list[int], max_tokens: int, eos: set[int]) -> tuple[list[int], float]:
    """(greedy tokens up to EOS or max_tokens, seconds): top_k=1 is greedy; no repetition penalty."""
    started = time.perf_counter()
    tokens = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        if token in eos:
            break
        tokens.append(token)
        if len(tokens) >= max_tokens:
            break
    return tokens, time.perf_counter() - started


def run_mode(spec: dict, mode: str) -> dict:
    started = time.perf_counter()
    lookup = mode == "lookup"
    # A draft model makes llama-cpp-python keep every position's logits, but it sizes that array from the
    # logits_all argument (n_batch rows unless True): without logits_all=True a prompt past n_batch tokens
    # overflows it ("could not broadcast input array").
    llm = llama_cpp.Llama(spec["gguf"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
                          n_threads_batch=spec["threads"], verbose=False, logits_all=lookup,
                          draft_model=LlamaPromptLookupDecoding(num_pred_tokens=LOOKUP_TOKENS) if lookup else None)
    load_s = time.perf_counter() - started
    eos = set(spec["eos"])
    rows = []
    for job in spec["jobs"]:
        llm.reset()  # an empty cache: nothing of the previous job's prompt is reused
        tokens, end_to_end_s = run_request(llm, job["prompt_ids"], job["max_tokens"], eos)
        again, decode_s = run_request(llm, job["prompt_ids"], job["max_tokens"], eos)
        rows.append({"id": job["id"], "tokens": tokens, "end_to_end_s": end_to_end_s, "decode_s": decode_s,
                     "repeatable": again == tokens})
    return {"load_s": load_s, "jobs": rows}


def main() -> None:
    spec = json.load(sys.stdin)
    modes = {mode: run_mode(spec, mode) for mode in spec["modes"]}
    json.dump({"llama_cpp": llama_cpp.__version__, "system_info": llama_cpp.llama_print_system_info().decode(),
               "modes": modes}, sys.stdout)


if __name__ == "__main__":
    main()
