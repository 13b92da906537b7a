"""The end-to-end benchmarks' machinery (`edit bench decode|quality`) on tiny models."""

from __future__ import annotations

import pytest

from bench.decode import decode, markdown_decode
from bench.items import load_items, passes
from bench.quality import check_formats, markdown_quality, quality
from editor.propose import Editor
from tests.tiny_models import chat_model, chat_tokenizer


@pytest.mark.shared
def test_items_load_and_their_tests_tell_right_from_wrong():
    editeval = load_items("editeval", limit=2)
    assert len(editeval) == 2 and editeval[0].task_id == "EditEval/0"
    assert passes(editeval[0].reference, editeval[0].test)
    assert not passes(editeval[0].code, editeval[0].test)
    fix = load_items("humanevalfix", limit=1)[0]
    assert fix.instruction and fix.reference is None
    assert not passes(fix.code, fix.test)


def test_unknown_benchmark_and_format_are_refused():
    with pytest.raises(ValueError):
        load_items("nope")
    with pytest.raises(ValueError):
        check_formats(["apply_patch", "nope"])
    assert check_formats(["all"])[-1] == "whole"


@pytest.fixture(scope="module")
def tiny():
    items = load_items("editeval", limit=1)
    tokenizer = chat_tokenizer(items[0].code)
    return chat_model(tokenizer), tokenizer, items


@pytest.mark.shared
def test_decode_reports_every_config_lossless(tiny):
    model, tokenizer, items = tiny
    rows = decode(model, tokenizer, items, max_new_tokens=12)
    names = [row["config"] for row in rows]
    assert names == ["plain +grammar", "copy +grammar", "plain", "copy"]  # no MTP heads given
    assert all(row["identical_to_plain"] for row in rows)
    assert all(row["speedup_vs_plain"] > 0 for row in rows)
    assert "| copy |" in markdown_decode({"model": "tiny", "items": 1, "configs": rows})


@pytest.mark.shared
def test_decode_measures_whole_file_outputs(tiny):
    model, tokenizer, items = tiny
    rows = decode(model, tokenizer, items, max_new_tokens=12, fmt="whole", configs=("plain", "copy"),
                  grammar_modes=(False,))
    assert [row["config"] for row in rows] == ["plain", "copy"] and all(r["identical_to_plain"] for r in rows)
    assert "whole outputs" in markdown_decode({"model": "tiny", "items": 1, "format": "whole", "configs": rows})
    assert "outputs, MTP heads: shipped (int8)\n" in markdown_decode(
        {"model": "tiny", "items": 1, "heads": "shipped", "heads_dtype": "int8", "configs": rows})


@pytest.mark.shared
@pytest.mark.parametrize("configs", [(), ("copy", "plain"), ("plain", "mtp k=9")])
def test_decode_refuses_configs_it_cannot_measure_against_plain(tiny, configs):
    model, tokenizer, items = tiny
    with pytest.raises(ValueError, match="plain first"):
        decode(model, tokenizer, items, configs=configs)


@pytest.mark.parametrize("options, message", [
    (["--format", "whole"], "no grammar"),
    (["--format", "udiff"], "apply_patch or whole"),
    (["--configs", "copy,plain"], "plain first"),
    (["--configs", "plain,mtp k=9"], "choose among"),
])
def test_bench_decode_command_refuses_bad_options_before_loading_a_model(options, message):
    from typer.testing import CliRunner

    from editor.cli import app

    result = CliRunner().invoke(app, ["bench", "decode", "--model", "/nonexistent/model", *options])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.shared
def test_quality_scores_each_format(tiny):
    model, tokenizer, items = tiny
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=16, max_retries=0)
    results = quality(editor, items, ["ot", "whole"])
    assert [r["format"] for r in results] == ["ot", "whole"]
    for r in results:
        assert 0 <= r["pass_at_1"] <= r["well_formed"] <= 1
        assert r["mean_prompt_tokens"] > 0
    table = markdown_quality({"benchmark": "editeval", "model": "tiny", "items": 1, "results": results})
    assert "| whole |" in table


@pytest.mark.shared
def test_decode_sweeps_mtp_draft_lengths(tiny):
    from decoding.mtp import MTPHeads

    model, tokenizer, items = tiny
    heads = MTPHeads(model, "qwen3_5")
    rows = decode(model, tokenizer, items, heads=heads, max_new_tokens=8,
                  configs=("plain", "mtp k=1", "mtp k=3", "mtp+copy"), grammar_modes=(True,))
    assert [row["config"] for row in rows] == ["plain +grammar", "mtp k=1 +grammar", "mtp k=3 +grammar",
                                               "mtp+copy +grammar"]
    assert all(row["identical_to_plain"] for row in rows)
    assert rows[0]["draft_acceptance"] is None
    assert all(0.0 <= row["draft_acceptance"] <= 1.0 for row in rows[1:])
    with pytest.raises(ValueError, match="start with plain"):
        decode(model, tokenizer, items, heads=heads, configs=("copy", "plain"))


@pytest.mark.shared
def test_bench_decode_command_measures_given_heads_with_their_draft_vocabulary(tiny, tmp_path):
    import json

    import torch
    from typer.testing import CliRunner

    from decoding.model_loading import DRAFT_VOCAB_FILE, HEADS_FILE, load_heads_file
    from decoding.mtp import MTPHeads
    from training.mtp_trainer import save_draft_vocab, save_heads
    from editor.cli import app

    model, tokenizer, _ = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "heads").mkdir()
    save_heads(MTPHeads(model, "qwen3_5"), tmp_path / "heads" / HEADS_FILE, dtype=torch.float32)
    save_draft_vocab(torch.arange(0, len(tokenizer), 2), tmp_path / "heads" / DRAFT_VOCAB_FILE)
    loaded = load_heads_file(tmp_path / "heads", model)
    assert loaded._draft_vocab[0].tolist() == list(range(0, len(tokenizer), 2))
    assert load_heads_file(tmp_path / "heads" / HEADS_FILE, model)._draft_vocab is not None
    out = tmp_path / "decode.json"
    result = CliRunner().invoke(app, ["bench", "decode", "--model", str(tmp_path / "model"), "--limit", "1",
                                      "--max-new-tokens", "6", "--grammar", "off", "--heads",
                                      str(tmp_path / "heads"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [row["config"] for row in report["configs"]] == ["plain", "copy", "mtp", "mtp k=1", "mtp k=2",
                                                           "mtp k=3", "mtp k=4", "mtp+copy"]
    assert all(row["identical_to_plain"] for row in report["configs"])
    assert report["heads_dtype"] == "int8"  # as `edit` drafts with them
    assert "| mtp k=2 |" in result.stdout
    bad = CliRunner().invoke(app, ["bench", "decode", "--model", str(tmp_path / "model"), "--grammar", "maybe"])
    assert bad.exit_code != 0 and "on, off or both" in bad.output
