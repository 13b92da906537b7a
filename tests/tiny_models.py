"""Tiny models for tests, built from configs with fixed seeds: random Qwen2 and Qwen3.5 language models, a
byte-level BPE tokenizer, and a chat model (Qwen's chat template and special tokens, a 2-layer Qwen2,
optionally trained to answer one prompt with one reply)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import prompts

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 128
EOS = 1


def randomize(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def tiny_qwen2(vocab: int = VOCAB, seed: int = 0, peak: float = 6.0, **config_overrides) -> Qwen2ForCausalLM:
    """Random Qwen2; lm_head scaled by `peak` so greedy decoding falls into repetitive, draftable loops.
    `config_overrides` replace Qwen2Config settings (e.g. num_key_value_heads, use_sliding_window)."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=128, eos_token_id=EOS)
    config = Qwen2Config(**{**settings, **config_overrides})
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(peak)
    return model


def tiny_qwen3_5(vocab: int = VOCAB, seed: int = 0):
    """Random Qwen3.5 text model: three Gated DeltaNet layers (recurrent, uncroppable) and one attention layer."""
    from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    torch.manual_seed(seed)
    config = Qwen3_5TextConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=128, head_dim=16, linear_num_value_heads=4,
                               linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
                               eos_token_id=EOS)
    model = Qwen3_5ForCausalLM(config).eval()
    randomize(model, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return model


def byte_bpe(texts, vocab_size: int, special_tokens=("<eos>",)) -> Tokenizer:
    """A byte-level BPE trained on `texts`: any text tokenizes, so in grammar tests the grammar alone
    decides what is accepted."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def chat_tokenizer(extra_text: str = "", vocab_size: int = 1200) -> PreTrainedTokenizerFast:
    corpus = [prompts.load(name) for name in ("apply_patch", "udiff", "ot", "rule", "whole")] + [extra_text]
    tokenizer = byte_bpe(corpus, vocab_size, SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def chat_model(tokenizer, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=8192,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=False)
    return Qwen2ForCausalLM(config).eval()


def teach(model, tokenizer, messages: list[dict], reply: str, steps: int = 150) -> None:
    """Overfit `model` so that, greedy, it answers `messages` with `reply` then <|im_end|>."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    reply_ids = tokenizer.encode(reply, add_special_tokens=False) + [model.config.eos_token_id]
    ids = torch.tensor([prompt_ids + reply_ids])
    labels = ids.clone()
    labels[0, :len(prompt_ids)] = -100  # learn the reply only
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def save_instant_model(folder, text: str = ""):
    """Save (model and tokenizer) a chat model that ends its turn at once: every logit is 0, so greedy
    decoding picks token 0, which is made its end-of-turn token. Its whole-file answer is empty."""
    tokenizer = chat_tokenizer(text)
    model = chat_model(tokenizer)
    model.model.norm.weight.data.zero_()
    model.config.eos_token_id = 0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
