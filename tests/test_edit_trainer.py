"""The LoRA edit trainer on a tiny random chat model: the loss covers the answer and its end of turn, packing
keeps examples apart, the held-out split is by repository, training lowers the loss, a resumed run ends with the
uninterrupted run's weights, and a saved adapter merges at load to the peft model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from decoding import model_loading
from decoding.adapter import WEIGHTS_FILE, adapter_key, merge_adapter
from decoding.model_registry import REGISTRY, ModelError
from editor import prompting
from editor.cli import app
from editor.request import build_request
from tests import tiny_models
from training import edit_trainer as trainer

pytestmark = pytest.mark.usefixtures("single_thread")

FILES = {"a.py": "def add(a, b):\n    return a + b\n", "b.py": "x = 1\ny = 2\nprint(x + y)\n",
         "c.md": "# Title\n\nSome text.\n"}
ANSWERS = {"apply_patch": "*** Begin Patch\n*** Update File: {path}\n@@\n-{first}\n+{first}  # changed\n*** End Patch",
           "whole": "{text}# changed\n"}


def row(repo: str, path: str, fmt: str) -> dict:
    text = FILES[path]
    messages = prompting.messages(fmt, path=path, text=text, instruction="Mark the first line as changed.",
                                  language=None)
    answer = ANSWERS[fmt].format(path=path, first=text.splitlines()[0], text=text)
    return {"repo": repo, "path": path, "format": fmt, "messages": messages, "answer": answer}


ROWS = [row(f"org/repo{i % 4}", path, fmt) for i, (path, fmt) in
        enumerate((p, f) for p in FILES for f in ANSWERS)] + [row("org/repo3", "a.py", "whole")]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_models.chat_tokenizer("".join(FILES.values()), vocab_size=600)


@pytest.fixture
def base(tokenizer):
    return tiny_models.chat_model(tokenizer, seed=1)


def examples(tokenizer, rows=ROWS):
    return [trainer.tokenize(tokenizer, r, tokenizer.eos_token_id) for r in rows]


def config(**overrides) -> trainer.TrainConfig:
    return trainer.TrainConfig(**{"steps": 6, "rank": 4, "max_tokens": 2048, "lr": 1e-2, "warmup": 2,
                                  "eval_every": 3, "eval_share": 0.2, "dropout": 0.1, **overrides})


def peft_model(base, cfg: trainer.TrainConfig, seed: int = 0):
    torch.manual_seed(seed)  # LoRA's A matrices start random
    return trainer.lora_model(base, cfg)


def randomize_lora(model, seed: int = 3) -> None:
    """LoRA's B starts at zero (the adapter changes nothing): random B makes the merge tests able to fail."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_the_loss_covers_exactly_the_answer_and_the_end_of_turn(tokenizer):
    example = examples(tokenizer)[0]
    packed = trainer.packed_sequence([example])
    in_loss = packed.labels != trainer.IGNORE
    assert not in_loss[:len(example.prompt)].any() and in_loss[len(example.prompt):].all()
    answer = packed.labels[in_loss].tolist()
    assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(answer[:-1]) == ROWS[0]["answer"]
    # the prompt is the Editor's, token for token
    request = build_request(tokenizer, "apply_patch", name="a.py", text=FILES["a.py"],
                            instruction="Mark the first line as changed.", language=None, grammar=False, spec=False)
    assert example.prompt == request.prompt_ids


def test_answers_end_with_the_token_that_closes_a_turn_where_generation_stops_on_it(base):
    tokenizer = tiny_models.chat_tokenizer(vocab_size=600)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    tokenizer.eos_token = "<|endoftext|>"  # a base model's tokenizer; the model still stops on <|im_end|>
    assert trainer.end_of_turn_id(base, tokenizer) == im_end
    base.config.eos_token_id = base.generation_config.eos_token_id = endoftext  # it stops on <|endoftext|> alone
    assert trainer.end_of_turn_id(base, tokenizer) == endoftext


def test_packing_keeps_each_example_to_itself(tokenizer, base):
    chosen = examples(tokenizer)[:3]
    [packed] = trainer.pack(chosen, max_tokens=sum(map(len, chosen)))
    start = 0
    with torch.no_grad():
        # as the trainer calls it: no cache (with one, transformers keeps one causal mask over the whole sequence)
        together = base(input_ids=packed.input_ids[None], position_ids=packed.position_ids[None],
                        use_cache=False).logits[0]
        for example in sorted(chosen, key=len, reverse=True):  # packed longest first
            alone = logits(base, example.prompt + example.answer)
            torch.testing.assert_close(together[start:start + len(example)], alone, atol=1e-4, rtol=1e-4)
            start += len(example)
        # and so the loss of the packed sequence is the sum of the examples' losses
        packed_loss, count = trainer.sequence_loss(base, packed, "cpu")
        alone_losses = [trainer.sequence_loss(base, trainer.packed_sequence([e]), "cpu") for e in chosen]
    assert count == sum(n for _, n in alone_losses) == sum(len(e.answer) for e in chosen)
    torch.testing.assert_close(packed_loss, sum(loss for loss, _ in alone_losses), atol=1e-3, rtol=1e-4)


def test_packing_fills_sequences_up_to_the_cap_with_every_example_once(tokenizer):
    chosen = examples(tokenizer)
    cap = max(map(len, chosen)) + 40
    packs = trainer.pack(chosen, cap)
    assert all(len(p.input_ids) <= cap for p in packs)
    assert sum(int((p.position_ids == 0).sum()) for p in packs) == len(chosen)
    assert sum(len(p.input_ids) for p in packs) == sum(map(len, chosen))
    assert len(packs) < len(chosen)  # some sequences hold more than one example


def test_the_held_out_split_takes_whole_repositories(tokenizer):
    chosen = examples(tokenizer)
    train, held = trainer.split_by_repo(chosen, eval_share=0.2, seed=0)
    assert held and train and len(train) + len(held) == len(chosen)
    assert not {e.repo for e in train} & {e.repo for e in held}
    assert len(held) >= 0.2 * len(chosen)
    with pytest.raises(ValueError, match="at least two repositories"):
        trainer.split_by_repo([e for e in chosen if e.repo == "org/repo1"], 0.2, 0)


def test_examples_longer_than_the_cap_are_dropped_and_counted(tokenizer):
    lengths = {r["format"]: len(e) for r, e in zip(ROWS, examples(tokenizer))}
    cap = (lengths["apply_patch"] + lengths["whole"]) // 2  # between the two formats' lengths
    assert lengths["apply_patch"] > cap >= lengths["whole"] or lengths["whole"] > cap >= lengths["apply_patch"]
    prepared = trainer.prepare(tokenizer, ROWS, tokenizer.eos_token_id, config(max_tokens=cap, eval_share=0.1))
    counts = prepared["counts"]
    assert sum(counts["dropped_too_long"].values()) + counts["train_examples"] + counts["held_out_examples"] \
        == len(ROWS)
    assert counts["dropped_too_long"] and all(len(p.input_ids) <= cap for p in prepared["train"])


def test_bad_rows_are_refused_with_their_line(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[0], "answer": 3}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"examples.jsonl:2: .*answer"):
        trainer.read_examples(data)
    data.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"examples.jsonl:1: not valid JSON"):
        trainer.read_examples(data)


def test_a_few_steps_lower_the_loss_on_a_repeated_example(tokenizer, base):
    cfg = config(steps=8, dropout=0.0, eval_every=100)
    packed = trainer.packed_sequence(examples(tokenizer)[:1])
    model = peft_model(base, cfg)
    result = trainer.train(model, [packed], [packed], cfg)
    # a random 64-wide model learns slowly through rank-4 adapters alone: 6.39 -> 6.02 here; without training
    # the loss (deterministic: no dropout) would not move at all
    assert result.evals[-1]["loss"] < 0.97 * result.evals[0]["loss"]
    assert result.losses[-1] < result.losses[0]
    assert [e["step"] for e in result.evals] == [0, 8]


def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_weights(tokenizer, tmp_path):
    cfg = config()
    packs = trainer.pack(examples(tokenizer), 300)
    assert len(packs) >= 3  # the data order matters
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = peft_model(tiny_models.chat_model(tokenizer, seed=1), cfg)
    trainer.train(whole, packs, packs[:1], cfg, tmp_path / "whole")

    def crash_after_step_4(phase, done, total, info):
        if phase == "train" and done == 4:
            raise KeyboardInterrupt

    interrupted = peft_model(tiny_models.chat_model(tokenizer, seed=1), cfg)
    with pytest.raises(KeyboardInterrupt):  # after the checkpoint of step 3
        trainer.train(interrupted, packs, packs[:1], cfg, tmp_path / "parts", on_progress=crash_after_step_4)
    resumed = peft_model(tiny_models.chat_model(tokenizer, seed=1), cfg, seed=99)  # other initial LoRA weights
    torch.manual_seed(1234)  # and another RNG state: both must come from the checkpoint
    result = trainer.train(resumed, packs, packs[:1], cfg, tmp_path / "parts", resume=True)
    assert result.steps == 6 and len(result.losses) == 6
    expected = {n: p for n, p in whole.named_parameters() if p.requires_grad}
    got = {n: p for n, p in resumed.named_parameters() if p.requires_grad}
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)
    with pytest.raises(ValueError, match="other settings"):
        trainer.train(resumed, packs, packs[:1], config(rank=8), tmp_path / "parts", resume=True)


@pytest.fixture
def saved(tmp_path, tokenizer):
    """A tiny model folder, and an adapter for it with the peft model that made it."""
    model_dir = tmp_path / "model"
    tiny_models.chat_model(tokenizer, seed=1).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    model = peft_model(tiny_models.chat_model(tokenizer, seed=1), config())
    randomize_lora(model)
    model.eval()
    trainer.save_adapter(model, tmp_path / "adapter")
    return model_dir, tmp_path / "adapter", model


def test_a_saved_adapter_merges_to_the_peft_models_logits(saved, tokenizer):
    _, adapter, tuned = saved
    ids = examples(tokenizer)[0].prompt
    plain = tiny_models.chat_model(tokenizer, seed=1)
    untuned = logits(plain, ids)
    assert merge_adapter(plain, adapter) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    merged = logits(plain, ids)
    assert (merged - untuned).abs().max() > 1e-2  # the adapter changes the model
    torch.testing.assert_close(merged, logits(tuned, ids), atol=1e-4, rtol=1e-4)


def test_load_model_merges_an_adapter_only_when_asked(saved, tokenizer):
    model_dir, adapter, tuned = saved
    ids = examples(tokenizer)[0].prompt
    plain, _ = model_loading.load_model(str(model_dir), threads=1)  # a folder model: no shipped adapter
    without, _ = model_loading.load_model(str(model_dir), threads=1, adapter=False)
    torch.testing.assert_close(logits(plain, ids), logits(without, ids))
    with_adapter, _ = model_loading.load_model(str(model_dir), threads=1, adapter=adapter)
    torch.testing.assert_close(logits(with_adapter, ids), logits(tuned, ids), atol=1e-4, rtol=1e-4)
    assert (logits(with_adapter, ids) - logits(plain, ids)).abs().max() > 1e-2


def test_an_adapter_for_other_weights_is_refused(saved, tmp_path, tokenizer):
    _, adapter, _ = saved
    other = wider_model(tokenizer)
    with pytest.raises(ModelError, match="does not fit this model"):
        merge_adapter(other, adapter)
    with pytest.raises(ModelError, match="not a LoRA adapter folder"):
        model_loading.adapter_folder("0.5b", tmp_path)
    (adapter / "card.json").write_text(json.dumps({"base_sha256": "0" * 64}), encoding="utf-8")
    with pytest.raises(ModelError, match="trained on other weights"):
        model_loading.adapter_folder("0.5b", adapter)
    config_file = adapter / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "use_dora": True}), encoding="utf-8")
    with pytest.raises(ModelError, match="use_dora"):
        merge_adapter(tiny_models.chat_model(tokenizer, seed=1), adapter)


def wider_model(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=128))


def test_the_shipped_adapter_is_used_only_for_the_weights_its_card_names(saved, tmp_path, monkeypatch):
    _, adapter, _ = saved
    shipped = tmp_path / "adapters"
    folder = shipped / model_loading.SHIPPED_ADAPTERS["0.5b"]
    folder.mkdir(parents=True)
    for file in adapter.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(model_loading, "ADAPTERS_DIR", shipped)
    (folder / "card.json").write_text(json.dumps({"base_sha256": REGISTRY["0.5b"].sha256}), encoding="utf-8")
    assert model_loading.adapter_folder("0.5b") == folder
    assert model_loading.adapter_folder("0.5b", adapter=False) is None
    assert model_loading.adapter_folder("1.5b") is None
    assert model_loading.adapter_folder("default") is None  # the default is the 1.5B
    (folder / "card.json").write_text(json.dumps({"base_sha256": "0" * 64}), encoding="utf-8")
    assert model_loading.adapter_folder("0.5b") is None


def test_the_quality_cache_keeps_tuned_and_untuned_results_apart(saved, tmp_path):
    from bench.quality import ResultCache, cache_settings

    _, adapter, _ = saved
    untuned = cache_settings("0.5b", "none", 2, adapter=False)
    assert untuned == {"model": "0.5b", "quantize": "none", "max_retries": 2}  # the keys of earlier runs
    tuned = cache_settings("0.5b", "none", 2, adapter=adapter)
    assert tuned["adapter"] == adapter_key(adapter)
    assert ResultCache(tmp_path, tuned).folder != ResultCache(tmp_path, untuned).folder
    (adapter / WEIGHTS_FILE).write_bytes((adapter / WEIGHTS_FILE).read_bytes() + b" ")
    assert cache_settings("0.5b", "none", 2, adapter=adapter)["adapter"] != tuned["adapter"]
    # "default" is keyed by the model it names, so its rows and those asked for by name are the same rows
    assert cache_settings("default", "none", 2, adapter=False) == cache_settings("1.5b", "none", 2, adapter=False)


def test_train_edit_saves_an_adapter_and_its_card(saved, tmp_path):
    model_dir, _, _ = saved
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    out = tmp_path / "out"
    args = ["model", "train-edit", "--model", str(model_dir), "--data", str(data), "--out", str(out),
            "--steps", "3", "--rank", "2", "--max-tokens", "2048", "--eval-every", "2", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["steps"] == 3 and card["stopped_by"] == "steps"
    assert [e["step"] for e in card["evals"]] == [0, 2, 3]
    assert card["data"]["sha256"] and card["data"]["train_examples"] + card["data"]["held_out_examples"] == len(ROWS)
    assert sum(card["data"]["train_per_format"].values()) == card["data"]["train_examples"]
    assert card["held_out_loss_before"] == card["evals"][0]["loss"] > 0
    assert {p.name for p in out.iterdir()} == {"adapter_model.safetensors", "adapter_config.json", "card.json",
                                              "checkpoint.pt"}
    model_loading.load_model(str(model_dir), threads=1, adapter=out)  # loads and merges
    # a spent time budget still ends with an evaluated, saved adapter
    # (more steps than 0.6 s can hold on any machine: 3 tiny steps fit in it on a fast one)
    result = CliRunner().invoke(app, args + ["--out", str(tmp_path / "timed"), "--minutes", "0.01", "--steps", "100000"])
    assert result.exit_code == 0, result.output
    timed = json.loads((tmp_path / "timed" / "card.json").read_text())
    assert timed["stopped_by"] == "minutes" and timed["steps"] < 100000
    assert (tmp_path / "timed" / WEIGHTS_FILE).is_file()


def test_train_edit_names_the_bad_line_of_its_data(saved, tmp_path):
    model_dir, _, _ = saved
    data = tmp_path / "examples.jsonl"
    data.write_text(json.dumps({"repo": "r"}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["model", "train-edit", "--model", str(model_dir), "--data", str(data),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "examples.jsonl:1" in result.output and not (tmp_path / "out").exists()


def test_edit_takes_an_adapter_or_none_not_both(saved, tmp_path, monkeypatch):
    from editor.commands import propose

    _, adapter, _ = saved
    target = tmp_path / "a.py"
    target.write_text(FILES["a.py"], encoding="utf-8")
    made = []

    def make_editor(**options):
        made.append(options)
        raise RuntimeError("no model in this test")

    monkeypatch.setattr(propose, "make_editor", make_editor)
    result = CliRunner().invoke(app, ["propose", str(target), "Rename add.", "--adapter", str(adapter),
                                      "--no-adapter"])
    assert result.exit_code == 2 and "not both" in result.output and not made
    for flags, expected in (([], True), (["--no-adapter"], False), (["--adapter", str(adapter)], adapter)):
        CliRunner().invoke(app, ["propose", str(target), "Rename add.", *flags])
        assert made.pop()["adapter"] == expected
