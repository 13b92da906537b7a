"""The end-to-end benchmarks' machinery (`edit bench decode|quality`) on tiny models."""

from __future__ import annotations

import pytest

from editor.bench import check_formats, decode, load_items, markdown_decode, markdown_quality, passes, quality
from editor.propose import Editor
from tests.tiny_chat import chat_model, chat_tokenizer


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


def test_decode_reports_every_config_lossless(tiny):
    model, tokenizer, items = tiny
    rows = decode(model, tokenizer, items, max_new_tokens=12)
    names = [row["config"] for row in rows]
    assert names == ["plain +grammar", "copy +grammar", "plain", "copy"]  # no MTP heads given
    assert all(row["identical_to_plain"] for row in rows)
    assert all(row["speedup_vs_plain"] > 0 for row in rows)
    assert "| copy |" in markdown_decode({"model": "tiny", "items": 1, "configs": rows})


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


def test_decode_sweeps_mtp_draft_lengths(tiny):
    from decoding.mtp import MTPHeads

    model, tokenizer, items = tiny
    heads = MTPHeads(model, "qwen3_5")
    rows = decode(model, tokenizer, items, heads=heads, max_new_tokens=8,
                  configs=("plain", "mtp k=1", "mtp k=3", "mtp+copy"), grammar_modes=(True,))
    assert [row["config"] for row in rows] == ["plain +grammar", "mtp k=1 +grammar", "mtp k=3 +grammar",
                                               "mtp+copy +grammar"]
    assert all(row["identical_to_plain"] for row in rows)
