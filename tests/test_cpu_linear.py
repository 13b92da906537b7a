"""Decoding's Linear forwards (`decoding.cpu_linear`: the transposed product up to 4 rows, oneDNN's beyond):
the same function as F.linear, used only at inference on large float32 layers; a model keeps its greedy output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decoding import cpu_linear
from decoding.cpu_linear import (Float16Linear, bfloat16_weights, fast_linear_forward, float16_weights,
                                 linear_weight, speed_up_small_batches)
from tests.tiny_models import tiny_qwen2


def large_linear(bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(512, 2048, bias=bias)  # 1M weights: at the threshold


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])  # each vendor's few-rows product
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(512,), (1, 512), (1, 1, 512), (3, 512), (1, 5, 512), (2, 4, 512), (1, 12, 512),
                                   (1, 300, 512)])
def test_fast_linear_forward_equals_f_linear(bias, shape, vendor, monkeypatch):
    product, rows = cpu_linear.small_rows_product(vendor)
    monkeypatch.setattr(cpu_linear, "SMALL_ROWS_PRODUCT", product)
    monkeypatch.setattr(cpu_linear, "MAX_SMALL_ROWS", rows)
    layer = large_linear(bias)
    x = torch.randn(shape)
    with torch.inference_mode():
        expected = nn.functional.linear(x, layer.weight, layer.bias)
        got = fast_linear_forward(layer, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_only_large_float_linears_are_rerouted_and_training_keeps_f_linear():
    model = nn.Sequential(large_linear(False), nn.ReLU(), nn.Linear(2048, 4))
    speed_up_small_batches(model)
    assert "forward" in vars(model[0]) and "forward" not in vars(model[2])
    x = torch.randn(2, 512, requires_grad=True)
    out = model[0](x)  # grad enabled: the F.linear path, bit for bit, with gradients
    assert torch.equal(out, nn.functional.linear(x, model[0].weight))
    out.sum().backward()
    assert x.grad is not None and model[0].weight.grad is not None


@pytest.mark.parametrize("vendor, choice", [("GenuineIntel", ("mkl", 3)), ("AuthenticAMD", ("transposed", 4)),
                                            ("", ("transposed", 4))])
def test_each_vendor_gets_the_few_rows_product_measured_faster_on_its_cpus(vendor, choice):
    assert cpu_linear.small_rows_product(vendor) == choice


def test_cpu_info_reads_a_field_of_proc_cpuinfo(tmp_path, monkeypatch, float32_whatever_the_cpu):
    real = float32_whatever_the_cpu
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 amx_bf16 \n\n"
                       "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    real_path = cpu_linear.Path
    monkeypatch.setattr(cpu_linear, "Path", lambda name: cpuinfo if name == "/proc/cpuinfo" else real_path(name))
    assert cpu_linear.cpu_info("vendor_id") == "GenuineIntel"
    assert cpu_linear.cpu_info("flags").split() == ["fpu", "avx2", "amx_bf16"]
    assert cpu_linear.cpu_info("microcode") == ""
    monkeypatch.setattr(cpu_linear, "bfloat16_available", lambda: True)
    assert real.has_amx()
    assert not real.has_float16_product()  # no f16c
    cpuinfo.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 f16c avx512_bf16\n")
    assert not real.has_amx()  # bfloat16 runs there, but was not measured faster
    monkeypatch.setattr(cpu_linear, "float16_available", lambda: True)
    assert real.has_float16_product()
    cpuinfo.unlink()
    assert cpu_linear.cpu_info("vendor_id") == ""


def test_a_rerouted_model_generates_the_same_greedy_tokens(monkeypatch):
    model = tiny_qwen2()
    prompt = torch.tensor([[5, 17, 33, 9, 60, 2]])
    with torch.inference_mode():
        expected = model.generate(prompt, max_new_tokens=12, do_sample=False)
        monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 1)  # the tiny model's layers are all small
        speed_up_small_batches(model)
        assert any("forward" in vars(m) for m in model.modules() if isinstance(m, nn.Linear))
        got = model.generate(prompt, max_new_tokens=12, do_sample=False)
    assert got.tolist() == expected.tolist()


def test_a_transposed_input_gives_the_same_product():
    layer = large_linear(True)
    x = torch.randn(1, 512, 6).transpose(1, 2)  # [1, 6, 512], not contiguous
    with torch.inference_mode():
        torch.testing.assert_close(fast_linear_forward(layer, x), nn.functional.linear(x, layer.weight, layer.bias),
                                   rtol=1e-5, atol=1e-5)


def test_without_onednn_nothing_is_rerouted(monkeypatch):
    monkeypatch.setattr(cpu_linear, "onednn_available", lambda: False)
    model = nn.Sequential(large_linear(False))
    speed_up_small_batches(model)
    assert "forward" not in vars(model[0])


def test_bench_cpu_linear_times_every_path(tmp_path, monkeypatch):
    from bench import cpu_linear as linear_bench
    from tests.tiny_models import chat_model, chat_tokenizer

    tokenizer = chat_tokenizer()
    chat_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 1)
    monkeypatch.setattr(linear_bench, "LENGTHS", (1, 3))
    report = linear_bench.run(str(tmp_path), context=16, repeats=1)
    assert report["layers"] > 0 and [row["tokens"] for row in report["rows"]] == [1, 3]
    assert all(row[f"{path}_ms"] > 0 for row in report["rows"] for path in linear_bench.PATHS)
    assert "| 3 |" in linear_bench.markdown(report)


def test_bench_cpu_linear_times_the_whole_model_per_quantize_mode(tmp_path):
    from bench import cpu_linear as linear_bench
    from tests.tiny_models import chat_model, chat_tokenizer

    tokenizer = chat_tokenizer()
    chat_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    # float16, not bfloat16: every x86 torch wheel has fbgemm, and AVX2-only CPUs have no oneDNN bfloat16
    report = linear_bench.run_weights(str(tmp_path), ["none", "float16"], context=16, repeats=1)
    assert [row["quantize"] for row in report["rows"]] == ["none", "float16"]
    for row in report["rows"]:
        assert row["prefill_ms"] > 0
        assert {path: sorted(steps) for path, steps in row["forward_ms"].items()} == {
            "transformers": ["1", "2", "4", "8"], "lean": ["1", "2", "4", "8"]}
    assert "| float16 |" in linear_bench.markdown_weights(report)


# --- float16 weights ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(512,), (1, 512), (3, 512), (1, 5, 512), (1, 300, 512)])
def test_float16_linear_is_the_product_with_the_weight_rounded_to_float16(bias, shape):
    layer = large_linear(bias)
    x = torch.randn(shape)
    with torch.inference_mode():
        got = Float16Linear(layer)(x)
        rounded = nn.functional.linear(x, layer.weight.half().float(), layer.bias)
        exact = nn.functional.linear(x, layer.weight, layer.bias)
    assert got.shape == exact.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, rounded, rtol=1e-5, atol=1e-5)  # the rounding is the only change
    assert not torch.equal(got, exact)
    torch.testing.assert_close(got, exact, rtol=0, atol=2e-3)  # 11 significant bits of a weight ~0.04


def test_float16_weights_swaps_large_linears_and_a_tied_head_shares_the_float_embedding(monkeypatch):
    model = tiny_qwen2()
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as Qwen2.5-0.5B
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 64 * 128)  # the MLP and lm_head, not q/k/v/o (64 x 64 or less)
    float16_weights(model)
    assert isinstance(model.lm_head, Float16Linear) and isinstance(model.model.layers[0].mlp.up_proj, Float16Linear)
    assert type(model.model.layers[0].self_attn.q_proj) is nn.Linear
    assert model.model.embed_tokens.weight.dtype == torch.float32  # the lookup keeps float32
    assert linear_weight(model.lm_head) is model.model.embed_tokens.weight  # shared, not unpacked
    up = model.model.layers[0].mlp.up_proj
    assert linear_weight(up).shape == (up.out_features, up.in_features)


def test_an_untied_float16_weight_unpacks_to_its_float16_rounding():
    layer = large_linear(False)
    assert torch.equal(linear_weight(Float16Linear(layer)), layer.weight.detach().half().float())


def test_an_untied_lm_head_keeps_float16_rows_for_the_mtp_heads(monkeypatch):
    model = tiny_qwen2()  # untied, as the converted GGUF models
    rounded = model.lm_head.weight.detach().half().float()
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 64 * 128)
    float16_weights(model)
    unpack = torch.ops.quantized.linear_unpack_fp16
    monkeypatch.setattr(torch.ops.quantized, "linear_unpack_fp16", lambda packed: pytest.fail("unpacked"))
    assert torch.equal(linear_weight(model.lm_head), rounded)  # its kept copy, not unpacked (seconds on 0.5B)
    monkeypatch.setattr(torch.ops.quantized, "linear_unpack_fp16", unpack)
    assert linear_weight(model.model.layers[0].mlp.up_proj).dtype == torch.float32  # the others unpack


def test_a_float16_weight_model_generates_the_same_greedy_tokens(monkeypatch):
    model = tiny_qwen2()
    prompt = torch.tensor([[5, 17, 33, 9, 60, 2]])
    with torch.inference_mode():
        expected = model.generate(prompt, max_new_tokens=12, do_sample=False)
        monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 1)
        float16_weights(model)
        assert sum(isinstance(m, Float16Linear) for m in model.modules()) == 2 * 7 + 1  # every Linear + lm_head
        got = model.generate(prompt, max_new_tokens=12, do_sample=False)
    assert got.tolist() == expected.tolist()


def test_bench_kernels_products_agree_on_one_layer():
    from bench import cpu_linear as linear_bench

    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    x = torch.randn(3, 128)
    products = linear_bench.kernel_products(weight)
    exact = x @ weight.T
    with torch.inference_mode():
        errors = {name: float((product(x) - exact).norm() / exact.norm()) for name, product in products.items()}
    # relative error: float32 exact, float16 ~2^-11, int8 ~1/127 a weight, int4 ~1/15 of a group's range
    assert errors["float32 (shipped)"] < 1e-6 and errors["float16 (fbgemm)"] < 1e-3, errors
    assert errors["bfloat16 (oneDNN)"] < 0.01, errors  # 8 significant bits of weights and inputs
    assert errors["int8 weight-only"] < 0.02 and errors["int8 dynamic"] < 0.05 and errors["int4 weight-only"] < 0.2, errors
    assert errors["int8 weight-only (inductor)"] < 0.02, errors


# --- bfloat16 decoder -----------------------------------------------------------------------------------------


def test_a_bfloat16_decoder_keeps_a_float32_lm_head_logits_and_rotary_frequencies(monkeypatch):
    model = tiny_qwen2()
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as Qwen2.5-0.5B
    prompt = torch.tensor([[5, 17, 33, 9, 60, 2]])
    with torch.inference_mode():
        exact = model(prompt).logits
        monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 1)
        bfloat16_weights(model)
        got = model(prompt).logits
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.float32 and model.lm_head.weight is not model.model.embed_tokens.weight
    assert "forward" in vars(model.lm_head)  # the fast float32 product
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert got.dtype == torch.float32 and not torch.equal(got, exact)
    torch.testing.assert_close(got, exact, rtol=0, atol=0.1)  # 8 significant bits through 2 layers


def test_load_model_refuses_bfloat16_where_the_cpu_has_no_fast_kernels(monkeypatch):
    from decoding import model_loading
    from decoding.model_registry import ModelError

    monkeypatch.setattr(cpu_linear, "bfloat16_available", lambda: False)
    with pytest.raises(ModelError, match="bfloat16 kernels"):
        model_loading.load_model("no/such-model", quantize="bfloat16")
