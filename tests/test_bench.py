"""The end-to-end benchmarks' machinery (`edit bench decode|quality`) on tiny models."""

from __future__ import annotations

import json

import pytest

from bench.decode import decode, markdown_decode
from bench.items import filler_pool, load_items, passes, pick, split_imports, steering_set
from bench.quality import (
    FAILURES,
    ResultCache,
    check_formats,
    markdown_quality,
    plot_quality,
    quality,
    rejected,
    rescore,
    run_item,
    summarize,
)
from editor.errors import ApplyError, EditError, NoChangeError, ParseError, StoppedError, ValidationError
from editor.propose import DEFAULT_RETRIES, Editor, EditResult
from tests.tiny_models import chat_model, chat_tokenizer


@pytest.mark.shared
def test_items_load_and_their_tests_tell_right_from_wrong():
    editeval = load_items("editeval", limit=2)
    assert len(editeval) == 2 and editeval[0].task_id == "EditEval/0"
    assert passes(editeval[0].reference, editeval[0].test)
    assert not passes(editeval[0].code, editeval[0].test)
    fix = load_items("humanevalfix", limit=1)[0]
    assert fix.instruction == "Fix bugs in has_close_elements." and passes(fix.reference, fix.test)
    assert not passes(fix.code, fix.test)


def test_unknown_benchmark_and_format_are_refused():
    with pytest.raises(ValueError):
        load_items("nope")
    with pytest.raises(ValueError):
        check_formats(["apply_patch", "nope"])
    assert check_formats(["auto", "whole"]) == ["auto", "whole"]
    assert check_formats(["all"]) == ["apply_patch", "udiff", "ot", "rule", "block", "excerpt", "whole"]


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
def test_quality_scores_each_format(tiny, tmp_path):
    model, tokenizer, items = tiny
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=16, max_retries=0)
    results = quality(editor, items, ["ot", "whole"])
    assert [r["format"] for r in results] == ["ot", "whole"]
    for r in results:
        assert 0 <= r["pass_at_1"] <= r["well_formed"] <= 1
        assert r["mean_prompt_tokens"] > 0 and r["p50_seconds"] <= r["p90_seconds"]
        assert sum(r["failures"].values()) + sum(row["passed"] for row in r["rows"]) == r["items"] == 1
    report = {"benchmark": "editeval", "set": "all", "model": "tiny", "quantize": "none", "max_retries": 0,
              "mtp": False, "items": 1, "results": results}
    table = markdown_quality(report)
    assert "| whole |" in table and "max retries 0, MTP off" in table and "| budget or runaway |" in table
    plot_quality([report], tmp_path / "quality.png")
    assert (tmp_path / "quality.png").read_bytes().startswith(b"\x89PNG")
    # `edit bench plot`: several reports' panels side by side in one chart
    from PIL import Image
    from typer.testing import CliRunner

    from editor.cli import app

    (tmp_path / "report.json").write_text(json.dumps(report))
    result = CliRunner().invoke(app, ["bench", "plot", str(tmp_path / "report.json"), str(tmp_path / "report.json"),
                                      "--out", str(tmp_path / "two.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "two.png").size[0] == 2 * Image.open(tmp_path / "quality.png").size[0]


@pytest.mark.shared
def test_the_cache_resumes_a_run_without_redoing_items(tiny, tmp_path):
    model, tokenizer, _ = tiny
    items = load_items("editeval", limit=2)
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=8, max_retries=0)
    calls = []
    edit = editor.edit
    editor.edit = lambda *args, **kwargs: calls.append(kwargs["format"]) or edit(*args, **kwargs)
    cache = ResultCache(tmp_path, {"model": "tiny", "quantize": "none", "max_retries": 0})
    first = quality(editor, items, ["ot", "whole"], cache=cache)
    assert calls == ["ot", "ot", "whole", "whole"]
    assert all(isinstance(row["answer"], str) for result in first for row in result["rows"])  # rescorable
    assert quality(editor, items, ["ot", "whole"], cache=cache) == first and len(calls) == 4
    cache.path("whole", items[1]).unlink()  # as if the run had stopped before the last item
    partial = quality(None, items, ["ot", "whole"], cache=cache, cached_only=True)  # runs nothing
    assert [[r["task_id"] for r in result["rows"]] for result in partial] == [["EditEval/0"]] * 2
    assert partial[0]["rows"][0] == first[0]["rows"][0] and len(calls) == 4
    resumed = quality(editor, items, ["ot", "whole"], cache=cache)
    assert calls[4:] == ["whole"]
    untimed = lambda results: [{k: v for k, v in row.items() if k != "seconds"}  # noqa: E731
                               for result in results for row in result["rows"]]
    assert untimed(resumed) == untimed(first) and resumed[0] == first[0]
    assert len(list(tmp_path.rglob("*.json"))) == 4 and not list(tmp_path.rglob(".*"))  # no partial files
    other = ResultCache(tmp_path, {"model": "tiny", "quantize": "int8", "max_retries": 0})
    assert other.get("ot", items[0]) is None  # other settings, other results


@pytest.mark.shared
def test_a_cached_answer_is_scored_again_with_the_applier_as_it_is_now(tmp_path):
    items = load_items("editeval", limit=1)
    item = items[0]
    # As if an earlier applier had refused the reference rewrite: scored again, it passes.
    stale = {"task_id": item.task_id, "ok": False, "passed": False, "failure": "validation", "message": "old",
             "attempts": 1, "output_tokens": 9, "prompt_tokens": 99, "seconds": 1.0, "answer": item.reference}
    assert rescore(item, "whole", stale) == {**stale, "ok": True, "passed": True, "failure": None, "message": None}
    broken = rescore(item, "whole", {**stale, "answer": "def broken(:\n"})
    assert broken["failure"] == "validation" and "syntax error" in broken["message"]
    for kept in ({k: v for k, v in stale.items() if k != "answer"}, {**stale, "failure": "runaway"}):
        assert rescore(item, "whole", kept) == kept  # nothing to score again: kept as it is
    cache = ResultCache(tmp_path, {"model": "tiny", "quantize": "none", "max_retries": 0})
    cache.put("whole", item, stale)
    [result] = quality(None, items, ["whole"], cache=cache, cached_only=True, rescored=True)
    assert result["pass_at_1"] == 1.0 and cache.get("whole", item)["passed"]  # the cache holds the new row


@pytest.mark.shared
def test_the_cache_keys_a_structured_format_by_its_grammar_too(monkeypatch, tmp_path):
    import bench.quality as quality_module

    item = load_items("editeval", limit=1)[0]
    cache = ResultCache(tmp_path, {"model": "tiny"})
    before = {fmt: cache.path(fmt, item) for fmt in ("apply_patch", "whole")}
    real = quality_module.format_grammar
    monkeypatch.setattr(quality_module, "format_grammar",
                        lambda fmt, *args: None if real(fmt, *args) is None else real(fmt, *args) + "\n// changed")
    assert cache.path("apply_patch", item) != before["apply_patch"]  # decoded under another grammar: run again
    assert cache.path("whole", item) == before["whole"]  # a rewrite has no grammar


@pytest.mark.shared
def test_auto_reuses_the_result_of_the_format_it_chooses(tiny, tmp_path):
    model, tokenizer, _ = tiny
    items = load_items("editeval", limit=2)  # short files: `edit` rewrites them whole
    editor = Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=8, max_retries=0)
    calls = []
    edit = editor.edit
    editor.edit = lambda *args, **kwargs: calls.append(kwargs["format"]) or edit(*args, **kwargs)
    cache = ResultCache(tmp_path, {"model": "tiny", "quantize": "none", "max_retries": 0})
    whole, auto = quality(editor, items, ["whole", "auto"], cache=cache)
    assert calls == ["whole", "whole"]  # auto ran nothing of its own
    assert auto["chosen"] == {"whole": 2} and [r["chosen"] for r in auto["rows"]] == ["whole", "whole"]
    assert auto["pass_at_1"] == whole["pass_at_1"] and auto["failures"] == whole["failures"]
    assert "| auto (whole 2) |" in markdown_quality({"benchmark": "editeval", "set": "all", "model": "tiny",
                                                     "quantize": "none", "max_retries": 0, "mtp": False,
                                                     "items": 2, "results": [whole, auto]})


def test_each_failure_has_its_kind():
    def rejection(error: Exception) -> dict:  # as the Editor keeps a rejected try
        return {"attempt": 1, "error": type(error).__name__, **error.to_json()}

    kinds = [rejected(rejection(error))["failure"]
             for error in (ParseError("p"), ApplyError("a"), ValidationError("v"), StoppedError("s"),
                           NoChangeError("the edit changes nothing"), EditError("the model server went away"))]
    assert kinds == ["no_parse", "no_match", "validation", "runaway", "no_change", "error"]
    assert set(kinds) | {"tests_failed", "dropped_code"} == set(FAILURES)


def test_a_rewrite_that_drops_the_rest_of_a_long_file_fails_though_its_tests_pass():
    from bench.items import Item
    from bench.quality import run_item

    class Rewriter:
        def __init__(self, new_text):
            self.new_text = new_text

        def edit(self, text, instruction, **options):
            return EditResult("item.py", "whole", self.new_text, self.new_text, text, self.new_text, "", [],
                              {"attempts": 1, "output_tokens": 3, "prompt_tokens": 9})

    other = "def other():\n    return 1"
    item = Item("T/1", "Make f return 2.", f"{other}\n\n\ndef f():\n    return 1\n", None,
                "assert f() == 2\n", kept=(other,))
    dropped = run_item(Rewriter("def f():\n    return 2\n"), item, "whole")
    kept = run_item(Rewriter(f"{other}\n\n\ndef f():\n    return 2\n"), item, "whole")
    assert (dropped["passed"], dropped["failure"]) == (False, "dropped_code")
    assert (kept["passed"], kept["failure"]) == (True, None)


@pytest.mark.shared
def test_an_item_the_editor_raises_on_is_an_error_not_the_end_of_the_run(tiny):
    model, tokenizer, items = tiny
    row = run_item(Editor(model_obj=model, tokenizer=tokenizer, max_new_tokens=8), items[0], "nope")
    assert row["failure"] == "error" and "unknown format" in row["message"] and not row["passed"]


@pytest.mark.shared
@pytest.mark.parametrize("options, message", [
    (["--set", "nope"], "all or steer"),
    (["--items", "3"], "A:B"),
    (["--format", "ot,nope"], "unknown format"),
])
def test_bench_quality_command_refuses_bad_options_before_loading_a_model(options, message):
    from typer.testing import CliRunner

    from editor.cli import app

    result = CliRunner().invoke(app, ["bench", "quality", "--model", "/nonexistent/model", *options])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.shared
def test_bench_quality_command_measures_as_edit_does_and_resumes(tmp_path):  # float32: conftest, whatever the CPU
    import json

    from typer.testing import CliRunner

    from editor.cli import app
    from tests.tiny_models import save_instant_model

    model = save_instant_model(tmp_path / "model")
    command = ["bench", "quality", "--model", str(model), "--benchmark", "humanevalfix-long", "--set", "steer",
               "--items", "1:3", "--format", "whole,ot", "--cache", str(tmp_path / "cache"),
               "--json", str(tmp_path / "report.json")]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert {k: report[k] for k in ("benchmark", "set", "items_range", "quantize", "max_retries", "items")} == {
        "benchmark": "humanevalfix-long", "set": "steer", "items_range": "1:3", "quantize": "none",
        "max_retries": DEFAULT_RETRIES, "items": 2}
    steer = steering_set(load_items("humanevalfix-long"), "humanevalfix-long")
    assert [row["task_id"] for row in report["results"][0]["rows"]] == [i.task_id for i in steer[1:3]]
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 4
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and json.loads((tmp_path / "report.json").read_text()) == report  # all cached
    assert "| whole |" in again.stdout
    wider = [arg if arg != "1:3" else "0:3" for arg in command[:-2]]  # one item more, never run
    cached = CliRunner().invoke(app, [*wider, "--cached-only"])
    assert cached.exit_code == 0, cached.output
    assert "MTP as cached, 2 items" in cached.stdout and len(list((tmp_path / "cache").rglob("*.json"))) == 4
    refused = CliRunner().invoke(app, ["bench", "quality", "--model", str(model), "--cached-only"])
    assert refused.exit_code == 2 and "needs --cache" in refused.output


def test_items_span():
    assert pick(list(range(10)), "2:5") == [2, 3, 4]
    assert pick(list(range(10)), "7:") == [7, 8, 9] and pick(list(range(10)), ":2") == [0, 1]
    with pytest.raises(ValueError, match="A:B"):
        pick([1], "3")


@pytest.mark.shared
def test_the_steering_set_is_fixed_and_shared_with_the_long_sets():
    editeval, hef = load_items("editeval"), load_items("humanevalfix")
    steer = steering_set(editeval, "editeval")
    assert len(steer) == 60 and len(steering_set(hef, "humanevalfix")) == 40
    assert [i.task_id for i in steer] == [i.task_id for i in steering_set(list(reversed(editeval)), "editeval")][::-1]
    long_ids = {i.task_id for i in steering_set(load_items("editeval-long"), "editeval-long")}
    assert len(long_ids) == 60 and len(long_ids & {i.task_id for i in steer}) >= 55  # less the fragments


def test_filler_functions_only_define():
    """Executing every filler function's source with no builtins at all runs nothing but the `def`s."""
    pool = filler_pool()
    assert len(pool) > 100 and len({f.name for f in pool}) == len(pool)
    namespace = {"__builtins__": {}}
    exec("\n\n".join(f.source for f in pool), namespace)
    assert set(namespace) - {"__builtins__"} == {f.name for f in pool}


@pytest.mark.shared
@pytest.mark.parametrize("benchmark", ["editeval", "humanevalfix"])
def test_long_items_are_long_real_files_that_keep_their_tests(benchmark):
    import ast

    short = {i.task_id: i for i in load_items(benchmark)}
    long = load_items(benchmark + "-long")
    assert long == load_items(benchmark + "-long")  # deterministic
    assert len(long) >= len(short) - 7  # EditEval's 7 fragments cannot be placed in a file
    for item in long:
        original = short[item.task_id]
        compile(item.reference, item.task_id, "exec")
        assert 300 <= item.code.count("\n") - original.code.count("\n") <= 810
        head = split_imports(original.code)[0]
        assert item.code.startswith(head) and item.reference.startswith(split_imports(original.reference)[0])
        assert item.kept and all(text in item.code and text in item.reference for text in item.kept)
        names = lambda code: {getattr(node, "name", None) for node in ast.parse(code).body}  # noqa: E731
        assert names(item.reference) - names(original.reference) <= {f.name for f in filler_pool()}
    assert len({i.code.index(split_imports(short[i.task_id].code)[1]) for i in long}) > len(long) // 2  # positions vary
    for item in long[:4]:  # a subprocess per run: a sample (all of them, by hand, agree with the short items)
        assert passes(item.reference, item.test) and not passes(item.code, item.test)


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


# --- edit bench peers -----------------------------------------------------------------------------------------

LLAMA_ABSENT = "llama.cpp's virtualenv (.venv-peers, `make peers`) or the default GGUF is not here; CI has neither"


@pytest.mark.shared
def test_peers_times_our_configs_on_the_prompts_edit_sends(tiny, monkeypatch):
    import copy

    from bench import peers as peer_bench
    from decoding import cpu_linear
    from decoding.generate import Generator
    from editor.request import build_request

    model, tokenizer, items = tiny
    eos = Generator(model, tokenizer).eos_token_ids
    jobs = peer_bench.make_jobs(tokenizer, items, ["whole", "apply_patch"], eos)
    assert [job.id for job in jobs] == ["whole/EditEval/0", "apply_patch/EditEval/0"]
    sent = build_request(tokenizer, "apply_patch", name="item.py", text=items[0].code,
                         instruction=items[0].instruction, language="python", eos_token_ids=eos)
    assert jobs[1].prompt_ids == sent.prompt_ids and jobs[1].max_new_tokens == sent.max_new_tokens
    jobs = [peer_bench.Job(job.id, job.fmt, job.item, job.prompt_ids, 12) for job in jobs]  # short outputs
    monkeypatch.setattr(cpu_linear, "MIN_WEIGHTS", 1)  # the tiny model's layers are all small
    halved = cpu_linear.float16_weights(copy.deepcopy(model))
    rows = peer_bench.peers(jobs, llama=None, ours={"none": (model, tokenizer, None, 1.5),
                                                    "float16": (halved, tokenizer, None, 2.5)},
                            configs=("plain", "copy", "mtp"))
    assert [(r["format"], r["weights"], r["drafting"]) for r in rows] == [
        (fmt, weights, drafting) for fmt in ("whole", "apply_patch") for weights in ("none", "float16")
        for drafting in ("plain", "copy")]  # no MTP heads given
    for row in rows:  # float16 weights keep this model's greedy tokens; drafting is lossless, prompt cached or not
        assert row["identical_to_float32"] == 1 and row["repeatable"]
        assert 0 < row["decode_s"] and row["output_tokens"] > 0 and row["load_s"] == {"none": 1.5, "float16": 2.5}[row["weights"]]
        assert row["speedup_vs_fastest_llama"] is None and "identical_to_llama_plain" not in row
    table = peer_bench.markdown_peers({"model": "tiny", "gguf_name": "-", "benchmark": "editeval", "items": 1,
                                       "threads": 1, "rows": rows})
    assert "| whole | ours | float32 | copy |" in table and "llama.cpp not run" in table


def test_peers_compares_with_llama_cpp_results_per_format():
    from bench import peers as peer_bench
    from bench.items import Item

    item = Item("t/0", "do it", "x = 1\n", None, "")
    jobs = [peer_bench.Job("whole/t/0", "whole", item, [1, 2, 3, 4], 8)]
    llama = {"llama_cpp": "0.3.36", "modes": {
        "plain": {"load_s": 0.5, "jobs": [{"id": "whole/t/0", "tokens": [7, 8], "end_to_end_s": 3.0,
                                           "decode_s": 2.0, "repeatable": True}]},
        "lookup": {"load_s": 0.5, "jobs": [{"id": "whole/t/0", "tokens": [7, 9], "end_to_end_s": 2.0,
                                            "decode_s": 1.0, "repeatable": True}]}}}
    rows = peer_bench.peers(jobs, llama=llama, ours={}, configs=())
    plain, lookup = rows
    assert plain["decode_tokens_per_s"] == 1.0 and plain["prefill_tokens_per_s"] == 4.0
    assert plain["identical_to_llama_plain"] == 1 and lookup["identical_to_llama_plain"] == 0
    assert lookup["speedup_vs_fastest_llama"] == 1.0 and plain["speedup_vs_fastest_llama"] == 2 / 3
    assert lookup["decode_vs_llama_plain"] == 2.0


def test_peers_without_llama_cpp_says_how_to_get_it(tmp_path):
    from bench import peers as peer_bench
    from bench.items import Item

    jobs = [peer_bench.Job("whole/t/0", "whole", Item("t/0", "do it", "x = 1\n", None, ""), [1, 2], 4)]
    with pytest.raises(peer_bench.PeersError, match="make peers"):
        peer_bench.run_llama(tmp_path / "model.gguf", jobs, {0}, 1, python=tmp_path / "no-python")


def llama_setup():
    from bench.peers import llama_available
    from decoding.model_registry import REGISTRY, gguf_path

    gguf = gguf_path(REGISTRY["default"])
    return gguf if gguf.is_file() and llama_available() else None


@pytest.mark.skipif(llama_setup() is None, reason=LLAMA_ABSENT)
def test_llama_cpp_decodes_the_same_prompt_greedily_twice():
    from bench import peers as peer_bench
    from bench.items import Item
    from transformers import AutoTokenizer

    from decoding.model_loading import resolve

    gguf = llama_setup()
    tokenizer = AutoTokenizer.from_pretrained(resolve("default"))
    item = Item("t/0", "Rename x to y.", "x = 1\nprint(x)\n", None, "")
    jobs = peer_bench.make_jobs(tokenizer, [item], ["whole"], {151645, 151643})
    jobs = [peer_bench.Job(job.id, job.fmt, job.item, job.prompt_ids, 8) for job in jobs]
    result = peer_bench.run_llama(gguf, jobs, {151645, 151643}, 2, modes=("plain",))
    (row,) = result["modes"]["plain"]["jobs"]
    assert result["llama_cpp"] == "0.3.36" and row["repeatable"] and 0 < len(row["tokens"]) <= 8
    assert "AVX2 = 1" in result["system_info"]  # the build's CPU features, for the report
    assert row["end_to_end_s"] > row["decode_s"] > 0  # the second run found the prompt cached


@pytest.mark.parametrize("options, message", [
    (["--formats", "whole,udiff"], "unknown udiff"),
    (["--configs", "plain,eagle"], "unknown eagle"),
    (["--weights", "none,int4"], "unknown int4"),
    (["--benchmark", "nope"], "editeval or humanevalfix"),
    ([], "no GGUF for '/nonexistent/model.gguf'"),
])
def test_bench_peers_command_refuses_bad_options_before_loading_a_model(options, message):
    from typer.testing import CliRunner

    from editor.cli import app

    result = CliRunner().invoke(app, ["bench", "peers", "--model", "/nonexistent/model.gguf", *options])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_an_edit_that_changes_nothing_is_well_formed_and_wrong(tmp_path):
    from bench.items import Item

    item = Item("T/1", "Make f return 2.", "def f():\n    return 1\n", None, "assert f() == 2\n")
    cache = ResultCache(tmp_path, {"model": "tiny"})
    row = {"task_id": "T/1", "ok": False, "passed": False, "failure": "error", "message": "the edit changes nothing",
           "attempts": 3, "output_tokens": 30, "prompt_tokens": 90, "seconds": 1.0}
    cache.put("block", item, row)  # as a run cached it before the kind existed
    assert cache.get("block", item)["failure"] == "no_change"
    rows = [cache.get("block", item), {**row, "failure": "no_parse", "message": "bad"},
            {**row, "ok": True, "failure": "tests_failed", "message": None}]
    summary = summarize("block", rows)
    assert summary["failures"]["no_change"] == 1 and summary["failures"]["error"] == 0
    assert summary["well_formed"] == pytest.approx(2 / 3) and summary["pass_at_1"] == 0


def test_several_syntax_errors_cached_as_an_error_are_read_as_validation(tmp_path):
    from bench.items import Item

    item = Item("T/1", "Make f return 2.", "def f():\n    return 1\n", None, "assert f() == 2\n")
    cache = ResultCache(tmp_path, {"model": "tiny"})
    message = ("item.py:4: new syntax error at column 5: ERROR near '>>>'; "
               "item.py:6: new syntax error at column 5: ERROR near 'x'")
    row = {"task_id": "T/1", "ok": False, "passed": False, "failure": "error", "message": message,
           "attempts": 1, "output_tokens": 30, "prompt_tokens": 90, "seconds": 1.0}
    cache.put("apply_patch", item, row)  # as a run cached it before several errors kept their kind
    assert cache.get("apply_patch", item)["failure"] == "validation"
    cache.put("udiff", item, {**row, "message": "the model server went away"})
    assert cache.get("udiff", item)["failure"] == "error"


@pytest.mark.parametrize("amx, half, key", [(True, True, "bfloat16"), (False, True, "float16"),
                                            (False, False, "none")])
def test_the_quality_cache_keys_auto_by_the_weights_it_loads_here(amx, half, key, monkeypatch):
    from bench.quality import cache_settings
    from decoding import cpu_linear

    monkeypatch.setattr(cpu_linear, "has_amx", lambda: amx)
    monkeypatch.setattr(cpu_linear, "has_float16_product", lambda: half)
    assert cache_settings("/some/model", "auto", 0) == cache_settings("/some/model", key, 0)
    assert cache_settings("/some/model", "auto", 0)["quantize"] == key


def test_excerpt_survey_finds_an_items_own_unit():
    from bench.excerpts import own_names, shows

    assert own_names("import os\n\ndef f(x):\n    return x\n\n\nclass C:\n    pass\n") == ["f", "C"]
    assert own_names("def broken(:\n") == []
    assert shows("x = 1\n\nclass C(Base):\n    pass\n", ["f", "C"])
    assert not shows("def f_other(x):\n    return f(x)\n", ["f"])  # a call or a longer name is not the definition


@pytest.mark.shared
def test_excerpt_survey_grows_with_the_cap():
    from bench.excerpts import survey, table

    rows = survey("editeval-long", [40, 200])
    assert [task for task, *_ in rows[40]] == [task for task, *_ in rows[200]] and len(rows[40]) == 60
    assert all(small <= large for (_, small, _), (_, large, _) in zip(rows[40], rows[200]))
    assert sum(shown for *_, shown in rows[200]) > 40  # most items' instructions lead to their unit
    assert "| 40 | 60 |" in table(rows)
