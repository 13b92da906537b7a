"""MTP head training on a tiny random Qwen2 model: the chained training forward is the inference draft,
training lowers the loss, checkpoints resume, saved heads reload exactly, and the corpus's answers apply."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from decoding.model_loading import HEADS_FILE, SHIPPED_HEADS, load_default_heads
from decoding.model_registry import REGISTRY
from decoding.mtp import MTPHeads, load_mtp_heads
from editor.files import MemoryFiles
from editor.formats import apply_patch, ot
from tests import tiny_models
from training import mtp_trainer as trainer
from training.mtp_corpus import EditPair, answer, diff_windows, mutate, window

VOCAB = 96


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_qwen2(seed: int = 0):
    return tiny_models.tiny_qwen2(VOCAB, seed, peak=1.0)


def sequences(count: int = 6, length: int = 40, prefix: int = 8, seed: int = 0) -> list[trainer.TrainSequence]:
    rng = random.Random(seed)
    shared = [rng.randrange(VOCAB) for _ in range(prefix)]
    return [trainer.TrainSequence(shared + [rng.randrange(VOCAB) for _ in range(length - prefix)], prefix, 25)
            for _ in range(count)]


@pytest.fixture
def setup(tmp_path):
    base = tiny_qwen2()
    heads = MTPHeads(base, "deepseek", num_layers=1, hidden_norm="post")
    trainer.init_from_base(heads)
    records = trainer.cache_targets(base, sequences(), tmp_path / "cache", top_k=8, hidden_norm="post")
    return base, heads, records


CONFIG = dict(steps=12, origins=8, chain_steps=3, top_k=8, lr=3e-3, warmup=2, checkpoint_every=4)


def test_cached_targets_with_a_shared_prefix_equal_a_full_forward(setup, tmp_path):
    base, _, records = setup
    sequence = sequences()[1]
    alone = trainer.base_targets(base, trainer.TrainSequence(sequence.tokens, 0, 25), 8, "post", {})
    start = sequence.prefix_len
    torch.testing.assert_close(records[1].hidden.float(), alone.hidden[start:].float(), atol=2e-3, rtol=1e-3)
    assert torch.equal(records[1].top_ids[:, 0], alone.top_ids[start:, 0])


def test_chained_training_forward_is_the_inference_draft(setup):
    _, heads, records = setup
    record = records[0]
    origins = torch.tensor([3, 12, 20])
    tokens = record.tokens.tolist()
    with torch.no_grad():
        outs = trainer.chained_outputs(heads, record, origins, steps=3)
        for i, origin in enumerate(origins.tolist()):
            state = heads.new_state()
            heads.extend(state, record.hidden[:origin + 1].float(), tokens[record.start + 1:record.start + origin + 2])
            torch.testing.assert_close(heads.logits(0, outs[0][i]), heads.logits(0, state.last_block_out[0, -1]))
            # step 3 with the corpus tokens as the known tail is what the chained forward computed
            tail = tokens[record.start + origin + 2:record.start + origin + 4]
            drafted, _ = heads.draft(state, tail, 1)
            assert drafted == [int(heads.logits(0, outs[2][i]).argmax())]


def test_training_lowers_the_loss_on_fixed_origins(setup):
    _, heads, records = setup
    vocab, index = trainer.training_vocab(records, VOCAB)
    config = trainer.TrainConfig(**{**CONFIG, "steps": 40, "lr": 3e-2})
    fixed = [(r, trainer.sample_origins(r, 8, 3, random.Random(1))) for r in records]

    def excess_loss() -> float:
        # soft cross-entropy above its floor, the targets' own entropy (the loss of a perfect student)
        with torch.no_grad():
            total = 0.0
            for record, origins in fixed:
                total += float(trainer.step_loss(heads, record, origins, config, vocab, index))
                floor = 0.0
                for step in range(1, config.chain_steps + 1):
                    # targets outside the training vocabulary drop out of the loss, so of its floor too
                    inside = index[record.top_ids[origins + step].long()] >= 0
                    p = record.top_probs[origins + step].float() * inside
                    p = p / p.sum(-1, keepdim=True)
                    floor += config.step_decay ** (step - 1) * float(-(p * p.clamp(min=1e-30).log()).sum(-1).mean())
                total -= floor / sum(config.step_decay ** j for j in range(config.chain_steps))
            return total

    before = excess_loss()
    trainer.train(heads, records, config)
    assert excess_loss() < 0.85 * before


def test_the_loss_drops_targets_outside_the_training_vocabulary(setup):
    _, heads, records = setup
    record, origins = records[0], torch.tensor([2, 9, 15])
    config = trainer.TrainConfig(**CONFIG)
    vocab, index = trainer.training_vocab(records, VOCAB)
    greedy = set(torch.cat([r.top_ids[:, 0] for r in records]).tolist())
    dropped = next(t for t in range(VOCAB) if t not in greedy)  # a token that is never the base's first choice
    narrow = index.clone()
    narrow[dropped] = -1
    narrow[vocab[vocab > dropped]] -= 1  # the same vocabulary without it
    # Out of the vocabulary, the token's probability is as if it had been zero in the targets.
    zeroed = trainer.CachedSequence(**{**record.__dict__,
                                       "top_probs": record.top_probs.masked_fill(record.top_ids == dropped, 0)})
    with torch.no_grad():
        expected = trainer.step_loss(heads, zeroed, origins, config, vocab[vocab != dropped], narrow)
        got = trainer.step_loss(heads, record, origins, config, vocab[vocab != dropped], narrow)
        unchanged = trainer.step_loss(heads, record, origins, config, vocab, index)
    torch.testing.assert_close(got, expected)
    assert bool((record.top_ids[origins[:, None] + torch.arange(1, 4)] == dropped).any()) and got != unchanged


class Killed(Exception):
    pass


def test_resume_continues_the_interrupted_run_exactly(setup, tmp_path):
    _, heads, records = setup
    initial = {k: v.clone() for k, v in heads.state_dict().items()}
    whole = trainer.train(heads, records, trainer.TrainConfig(**CONFIG))
    straight = {k: v.clone() for k, v in heads.state_dict().items()}

    def kill_at_step_7(phase, done, total, info):
        if done == 7:
            raise Killed

    heads.load_state_dict(initial)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        trainer.train(heads, records, trainer.TrainConfig(**CONFIG), checkpoint, on_progress=kill_at_step_7)
    heads.load_state_dict(initial)  # the resumed run must take everything from the checkpoint (step 4)
    resumed = trainer.train(heads, records, trainer.TrainConfig(**CONFIG), checkpoint, resume=True)
    assert resumed.steps == 12
    torch.testing.assert_close(resumed.losses, whole.losses)
    for name, tensor in heads.state_dict().items():
        torch.testing.assert_close(tensor, straight[name])


def test_saved_heads_reload_in_the_qwen3_5_layout_with_the_same_logits(setup, tmp_path):
    base, heads, records = setup
    trainer.train(heads, records, trainer.TrainConfig(**{**CONFIG, "steps": 4}))
    path = tmp_path / "mtp.safetensors"
    trainer.save_heads(heads, path, layout="qwen3_5", dtype=torch.float32)
    loaded = load_mtp_heads(path, base)
    assert loaded.layout.name == "qwen3_5" and loaded.hidden_norm == "post"
    record, tokens = records[2], records[2].tokens.tolist()
    drafts = []
    for mtp in (heads, loaded):
        state = mtp.new_state()
        mtp.extend(state, record.hidden[:20].float(), tokens[record.start + 1:record.start + 21])
        with torch.no_grad():
            drafts.append((mtp.logits(0, state.last_block_out[0, -1]), mtp.draft(state, [], 4)[0]))
    torch.testing.assert_close(drafts[0][0], drafts[1][0], atol=1e-5, rtol=1e-5)
    assert drafts[0][1] == drafts[1][1]


def test_evaluate_reports_acceptance_in_range(setup):
    _, heads, records = setup
    result = trainer.evaluate(heads, records[:2], steps=3, origins_per_sequence=8)
    for scope in ("all", "focus"):
        assert len(result[scope]["accept"]) == 3
        assert all(0.0 <= a <= 1.0 for a in result[scope]["accept"] + result[scope]["top1"])
    assert result["all"]["origins"] == 16


def test_draft_vocabulary_holds_the_greedy_targets_and_the_first_ids(setup):
    _, _, records = setup
    vocab = trainer.draft_vocabulary(records, VOCAB, first_ids=10)
    assert vocab.tolist() == sorted(set(vocab.tolist()))
    greedy = set()
    for record in records:
        greedy |= set(record.top_ids[:, 0].tolist())
    assert set(vocab.tolist()) == greedy | set(range(10)) and len(greedy) < VOCAB


def test_load_default_heads_finds_native_tensors_in_a_folder_and_none_without(setup, tmp_path):
    base, heads, _ = setup
    folder = tmp_path / "model"
    base.save_pretrained(folder)
    assert load_default_heads(str(folder), base) is None
    assert load_default_heads(str(tmp_path / "missing.gguf"), base) is None
    trainer.save_heads(heads, folder / "mtp.safetensors", dtype=torch.float32)
    found = load_default_heads(str(folder), base)
    assert found is not None and found.layout.name == "qwen3_5"


def test_corpus_answers_apply_to_give_the_new_text(tmp_path):
    rng = random.Random(3)
    source = "\n".join(f"def f{i}(x):\n    total = x + {i}\n    return total\n" for i in range(12))
    text = window(source, rng)
    new, instruction = mutate(text, rng)
    assert new != text and instruction
    pair = EditPair("m.py", "m.py", text, new, instruction)
    patch = apply_patch.parse(answer("apply_patch", pair))
    [change] = apply_patch.apply(MemoryFiles({"m.py": text}), patch, target="m.py")
    assert change.new_text == new
    quoted = ot.parse(answer("ot", pair))
    assert ot.apply_text(text, quoted) == new
    assert all(op.text is not None for op in quoted.ops)  # quotes, no counts: what the model's grammar admits
    old_version = source
    new_version = source.replace("total = x + 5", "total = x - 5")
    windows = list(diff_windows(old_version, new_version, rng))
    assert len(windows) == 1 and "x + 5" in windows[0][0] and "x - 5" in windows[0][1]


SHIPPED = Path(__file__).resolve().parents[1] / "decoding" / "heads" / SHIPPED_HEADS["0.5b"]


def test_edit_requests_of_a_larger_call_start_with_those_of_a_smaller_one(tmp_path):
    from training.mtp_corpus import edit_requests

    for i in range(100):
        body = "".join(f"    value_{j} = x * {i + j}\n" for j in range(14))
        (tmp_path / f"mod{i}.py").write_text(f"def f{i}(x):\n{body}    return value_0\n", encoding="utf-8")
    small_train, small_eval = edit_requests([tmp_path], 5, 1, eval_fraction=0.3)
    large_train, large_eval = edit_requests([tmp_path], 20, 4, eval_fraction=0.3)
    # A larger --generated (and so more held-out answers) must not change the requests answered before.
    assert large_train[:5] == small_train and large_eval[:1] == small_eval
    assert len(large_train) == 20 and len({r.source for r in large_train}) == 20 and len(large_eval) == 4
    assert not {r.source for r in large_train} & {r.source for r in large_eval}


def test_shipped_heads_are_qwen3_5_tensors_for_the_0_5b_weights():
    card = json.loads((SHIPPED / "card.json").read_text(encoding="utf-8"))
    assert card["base_sha256"] == REGISTRY["0.5b"].sha256
    assert (SHIPPED / HEADS_FILE).stat().st_size <= 60 * 2**20
    with safe_open(str(SHIPPED / HEADS_FILE), framework="pt") as handle:
        assert handle.metadata() == {"layout": "qwen3_5", "hidden_norm": "post"}
        assert all(name.startswith("mtp.") for name in handle.keys())
    with safe_open(str(SHIPPED / "draft_vocab.safetensors"), framework="pt") as handle:
        vocab = handle.get_tensor("token_ids")
    assert vocab.dtype == torch.int64 and len(vocab) == card["draft_vocab"]
    assert torch.equal(vocab, torch.unique(vocab)) and int(vocab.max()) < 151936
    assert 151645 in vocab.tolist()  # <|im_end|>: the heads can draft the end of the answer


@pytest.mark.slow
def test_shipped_heads_load_with_the_0_5b_model_and_draft_losslessly():
    from decoding.drafters import MTPDrafter
    from decoding.generate import Generator
    from decoding.model_loading import load_model

    model, tokenizer = load_model("0.5b")
    heads = load_default_heads("0.5b", model)
    assert heads is not None and heads.layout.name == "qwen3_5" and heads._draft_vocab is not None
    prompt = tokenizer.encode("def fibonacci(n):\n    if n < 2:\n        return n\n", add_special_tokens=False)
    plain = Generator(model, tokenizer).generate(prompt, max_new_tokens=24)
    drafted = Generator(model, tokenizer, max_draft=2, adaptive=False).generate(
        prompt, max_new_tokens=24, drafters=[MTPDrafter(heads)])
    assert drafted.tokens == plain.tokens
    assert drafted.stats.accepted_per_drafter.get("mtp", 0) > 0


def test_train_mtp_command_writes_heads_vocabulary_and_card(tmp_path):
    from typer.testing import CliRunner

    from decoding.model_loading import DRAFT_VOCAB_FILE, load_heads_file
    from editor.cli import app
    from tests.tiny_models import chat_model, chat_tokenizer

    sources = tmp_path / "src"
    sources.mkdir()
    for i in range(30):
        body = "".join(f"    value_{j} = x * {i + j}\n" for j in range(14))
        (sources / f"mod{i}.py").write_text(f"def f{i}(x):\n{body}    return value_0\n", encoding="utf-8")
    tokenizer = chat_tokenizer((sources / "mod0.py").read_text())
    chat_model(tokenizer).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "heads"
    result = CliRunner().invoke(app, ["model", "train-mtp", "--model", str(tmp_path / "model"), "--out", str(out),
                                      "--data", str(sources), "--sequences", "6", "--eval-sequences", "2",
                                      "--steps", "3", "--origins", "4", "--minutes", "5", "--threads", "1"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    assert card["steps"] == 3 and card["layout"] == "qwen3_5"
    # The held-out split goes by a hash of the source path (tmp_path here), so the counts vary a little.
    assert 1 <= card["data"]["train_sequences"] <= 6 and card["data"]["eval_sequences"] <= 2
    assert card["config"]["origins"] == 4 and len(card["acceptance"]["all"]["accept"]) == 4
    heads = load_heads_file(out, chat_model(tokenizer))
    vocab = heads._draft_vocab[0]
    assert len(vocab) == card["draft_vocab"] == len(set(vocab.tolist()))
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in vocab.tolist()
    assert (out / DRAFT_VOCAB_FILE).is_file() and "Held-out acceptance" in (out / "README.md").read_text()


def test_train_mtp_command_trains_on_the_models_own_answers_from_earlier_heads(tmp_path):
    from typer.testing import CliRunner

    from decoding.model_loading import HEADS_FILE, load_model
    from decoding.mtp import load_mtp_heads
    from editor.cli import app
    from training.mtp_corpus import generated_corpus
    from tests.tiny_models import chat_model, chat_tokenizer

    sources = tmp_path / "src"
    sources.mkdir()
    for i in range(100):  # files are held out by a hash of their (temporary) path: 100 leave some out
        body = "".join(f"    value_{j} = x * {i + j}\n" for j in range(14))
        (sources / f"mod{i}.py").write_text(f"def f{i}(x):\n{body}    return value_0\n", encoding="utf-8")
    tokenizer = chat_tokenizer((sources / "mod0.py").read_text())
    model = chat_model(tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["model", "train-mtp", "--model", str(tmp_path / "model"), "--data", str(sources), "--sequences", "4",
              "--eval-sequences", "1", "--steps", "2", "--origins", "4", "--minutes", "5", "--threads", "1"]
    assert CliRunner().invoke(app, common + ["--out", str(first)]).exit_code == 0
    result = CliRunner().invoke(app, common + ["--out", str(second), "--init", str(first), "--generated", "3",
                                               "--generated-repeat", "2"])
    assert result.exit_code == 0, result.output
    card = json.loads((second / "card.json").read_text(encoding="utf-8"))
    assert card["init"] == str(first) and card["data"]["generated_repeat"] == 2
    assert 1 <= card["data"]["generated_sequences"] <= 3 and card["acceptance_generated"] is not None
    assert len(list((second / "generated").glob("*.json"))) >= 1 + card["data"]["generated_sequences"]
    readme = (second / "README.md").read_text(encoding="utf-8")
    assert card["init_card"]["command"].startswith("edit model train-mtp") and card["init_card"]["steps"] == 2
    assert "started from heads trained by `edit model train-mtp" in readme and "answered by the model itself" in readme

    # A rerun reads the kept answers back instead of generating (deadline already passed).
    model, tokenizer = load_model(str(tmp_path / "model"), threads=1)
    train, _ = generated_corpus(model, tokenizer, [sources], second / "generated", train_sequences=3,
                                eval_sequences=1, deadline=0.0)
    assert len(train) == card["data"]["generated_sequences"]
    assert all(len(s.tokens) > s.focus_start > s.prefix_len for s in train)
    # Those answers were decoded with the --init heads drafting (in int8): without them, the same tokens.
    plain, _ = generated_corpus(model, tokenizer, [sources], tmp_path / "plain", train_sequences=len(train),
                                eval_sequences=1)
    assert [s.tokens for s in plain] == [s.tokens for s in train]
    before = load_mtp_heads(first / HEADS_FILE, model).state_dict()
    after = load_mtp_heads(second / HEADS_FILE, model).state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    # A later run trains on the answers the second one kept, without generating any.
    kept = list((second / "generated").glob("*.json"))
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "0123456789abcdef0123.json").write_text(kept[0].read_text())  # names a prompt no longer sent
    third = tmp_path / "third"
    result = CliRunner().invoke(app, common + ["--out", str(third), "--answers", str(second / "generated"),
                                               "--answers", str(stale)])
    assert result.exit_code == 0, result.output
    card = json.loads((third / "card.json").read_text(encoding="utf-8"))
    data = card["data"]
    assert data["kept_answers"]["train_sequences"] == data["generated_sequences"] >= len(train)
    assert data["generated_sequences"] + data["generated_eval_sequences"] == len(kept)
    assert not (third / "generated").exists() and "kept by earlier runs" in (third / "README.md").read_text()
    # A folder of something else is named, not trained on.
    (stale / "fedcba9876543210fedc.json").write_text('{"answer": [1, 2]}')
    result = CliRunner().invoke(app, common + ["--out", str(tmp_path / "fourth"), "--answers", str(stale)])
    unwrapped = result.output.replace("\n", "")  # rich wraps long lines
    assert result.exit_code == 1 and "fedcba9876543210fedc.json: not an answer kept by train-mtp" in unwrapped


def test_init_from_heads_starts_from_saved_heads_in_another_layout(tmp_path):
    from decoding.mtp import MTPHeads, load_mtp_heads, save_mtp_heads

    base = tiny_qwen2()
    trained = MTPHeads(base, "deepseek", num_layers=1, hidden_norm="post")
    trainer.init_from_base(trained)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_mtp_heads(trained, tmp_path / "mtp.safetensors", layout="qwen3_5")
    fresh = MTPHeads(base, "deepseek", num_layers=1, hidden_norm="post")
    trainer.init_from_heads(fresh, load_mtp_heads(tmp_path / "mtp.safetensors", base))
    for name, tensor in trained.state_dict().items():
        assert torch.allclose(fresh.state_dict()[name], tensor, atol=1e-6), name
    with pytest.raises(ValueError, match="this run trains 2"):
        trainer.init_from_heads(MTPHeads(base, "deepseek", num_layers=2, hidden_norm="post"), trained)
