"""The server backend and `edit batch` against a fake OpenAI-compatible server in a thread (no vLLM needed):
the request's shape, the grammar sent, backoff on 429/503, timeouts, the auth token, servers without grammar
support, and batches (input order, resume, --yes, one file per task)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decoding.server_client import PROBE_ANSWER, PROBE_GRAMMAR, ServerClient, ServerError
from editor.batch import Task, read_tasks, run_batch
from editor.propose import Editor
from editor.request import build_request
from tests.tiny_models import chat_tokenizer

SOURCE = "def area(radius):\n    return 3.14 * radius * radius\n"
INSTRUCTION = "Rename area to circle_area."
PATCH = """*** Begin Patch
*** Update File: {name}
@@
-def area(radius):
+def circle_area(radius):
     return 3.14 * radius * radius
*** End Patch"""


class FakeServer:
    """A tiny OpenAI-compatible completions server. `answer(body) -> text` writes the completions (the grammar
    probe is answered as a grammar-enforcing server would, unless `grammar` says otherwise); `failures` are HTTP
    statuses sent first, one per request; `delay(body)` seconds pass before each completion."""

    def __init__(self, answer=lambda body: "", *, grammar: str = "enforce", failures=(), delay=lambda body: 0.0):
        self.answer, self.grammar, self.failures, self.delay = answer, grammar, list(failures), delay
        self.requests: list[dict] = []  # {"path", "headers", "body"} of every request, probes included
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.record(self, None)
                self.send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.record(self, body)
                with fake.lock:
                    failure = fake.failures.pop(0) if fake.failures else None
                if failure:
                    self.send(failure, {"error": {"message": "busy"}}, {"Retry-After": "0"})
                    return
                grammar = (body.get("structured_outputs") or {}).get("grammar")
                if grammar is not None and fake.grammar == "reject":
                    self.send(400, {"error": {"message": "structured_outputs is not supported"}})
                    return
                time.sleep(fake.delay(body))
                probe = grammar == PROBE_GRAMMAR and fake.grammar == "enforce"
                text = PROBE_ANSWER if probe else fake.answer(body)
                choice = {"index": 0, "text": text, "finish_reason": "stop", "token_ids": [40, 41, 2]}
                self.send(200, {"choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 2}})

            def send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def record(self, handler, body):
        with self.lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers), "body": body})

    def completions(self) -> list[dict]:
        """The bodies of the completion requests, the grammar probe left out."""
        return [r["body"] for r in self.requests if r["path"] == "/v1/completions"
                and (r["body"].get("structured_outputs") or {}).get("grammar") != PROBE_GRAMMAR]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer(SOURCE + PATCH)


def prompt_text(tokenizer, body) -> str:
    prompt = body["prompt"]
    return prompt if isinstance(prompt, str) else tokenizer.decode(prompt)


# -- the client ----------------------------------------------------------------------------------------------


def test_request_carries_prompt_ids_grammar_budget_and_the_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDIT_SERVER_TOKEN", "sekrit")
    with FakeServer(lambda body: "ok") as server:
        done = ServerClient(server.url + "/v1/").complete([5, 6, 7], grammar='start: "ok"', max_tokens=33, seed=3)
    assert (done.text, done.token_ids, done.finish_reason, done.completion_tokens) == ("ok", [40, 41, 2], "stop", 2)
    body = server.completions()[0]
    assert body["model"] == "fake-model"  # the server's only model, from /v1/models
    assert body["prompt"] == [5, 6, 7] and body["max_tokens"] == 33 and body["temperature"] == 0.0
    assert body["seed"] == 3 and body["structured_outputs"] == {"grammar": 'start: "ok"'}
    assert all(r["headers"]["Authorization"] == "Bearer sekrit" for r in server.requests)


def test_no_token_no_authorization_header(monkeypatch):
    monkeypatch.delenv("EDIT_SERVER_TOKEN", raising=False)
    with FakeServer(lambda body: "x") as server:
        ServerClient(server.url, "named").complete([1], max_tokens=4)
    assert all("Authorization" not in r["headers"] for r in server.requests)
    assert server.completions()[0]["model"] == "named" and "structured_outputs" not in server.completions()[0]


def test_busy_server_is_retried_with_backoff_then_gives_up():
    with FakeServer(lambda body: "done", failures=[503, 429]) as server:
        assert ServerClient(server.url, "m", backoff=0.01).complete([1]).text == "done"
    assert len(server.completions()) == 3
    with FakeServer(lambda body: "done", failures=[503, 503, 503]) as server:
        with pytest.raises(ServerError, match="HTTP 503.*busy"):
            ServerClient(server.url, "m", retries=2, backoff=0.01).complete([1])
    assert len(server.completions()) == 3  # the first try and two more


def test_other_http_errors_are_not_retried():
    with FakeServer(failures=[401]) as server:
        with pytest.raises(ServerError, match="HTTP 401 .set EDIT_SERVER_TOKEN."):
            ServerClient(server.url, "m", backoff=0.01).complete([1])
    assert len(server.completions()) == 1


def test_slow_server_times_out_with_a_clear_error():
    with FakeServer(lambda body: "late", delay=lambda body: 1.0) as server:
        with pytest.raises(ServerError, match="no answer within 0.2 s"):
            ServerClient(server.url, "m", timeout=0.2).complete([1])


def test_no_server_is_a_clear_error():
    with pytest.raises(ServerError, match="cannot connect"):
        ServerClient("http://127.0.0.1:9", "m", retries=1, backoff=0.01).complete([1])


@pytest.mark.parametrize("behaviour, message", [("ignore", "does not enforce grammars"),
                                                ("reject", "structured_outputs is not supported")])
def test_a_server_without_grammars_is_told_to_use_no_grammar(behaviour, message):
    with FakeServer(lambda body: "free text", grammar=behaviour) as server:
        client = ServerClient(server.url)
        with pytest.raises(ServerError, match=message) as error:
            client.complete([1], grammar='start: "a"')
        assert "--no-grammar" in str(error.value)
        assert client.complete([1]).text == "free text"  # without a grammar it still serves


# -- the Editor on a server ----------------------------------------------------------------------------------


def test_editor_sends_the_local_prompt_and_narrowed_grammar_and_applies_the_answer(tokenizer):
    with FakeServer(lambda body: PATCH.format(name="shapes.py")) as server:
        result = Editor(server=server.url, tokenizer=tokenizer).edit(SOURCE, INSTRUCTION, format="apply_patch",
                                                                      path="shapes.py")
    assert result.ok and result.new_text == SOURCE.replace("def area", "def circle_area")
    local = build_request(tokenizer, "apply_patch", name="shapes.py", text=SOURCE, instruction=INSTRUCTION,
                          language="python", eos_token_ids=[tokenizer.eos_token_id])
    (body,) = server.completions()
    assert body["prompt"] == local.prompt_ids and body["max_tokens"] == local.max_new_tokens
    assert body["structured_outputs"]["grammar"] == local.grammar and "return 3.14" in local.grammar
    assert result.stats["attempts"] == 1 and result.stats["output_tokens"] == 2  # the end of turn (2) not counted


def test_a_rejected_server_edit_is_fed_back_through_the_same_retry_loop(tokenizer):
    answers = iter(["*** Begin Patch\n*** Update File: shapes.py\n@@\n-def nowhere():\n+x\n*** End Patch",
                    PATCH.format(name="shapes.py")])
    with FakeServer(lambda body: next(answers)) as server:
        result = Editor(server=server.url, tokenizer=tokenizer, max_retries=1).edit(
            SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert result.ok and result.stats["attempts"] == 2 and len(result.diagnostics) == 1
    first, second = (prompt_text(tokenizer, body) for body in server.completions())
    assert "def nowhere" not in first and "def nowhere" in second  # the rejected try and its error go back


def test_no_grammar_sends_none_and_the_applier_still_checks(tokenizer):
    with FakeServer(lambda body: "not a patch at all", grammar="reject") as server:
        result = Editor(server=server.url, tokenizer=tokenizer, grammar=False, max_retries=0).edit(
            SOURCE, INSTRUCTION, format="apply_patch", path="shapes.py")
    assert not result.ok and result.diagnostics[0]["error"] == "ParseError"
    assert "structured_outputs" not in server.completions()[0]


# -- batches -------------------------------------------------------------------------------------------------


def edit_files(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"shape{i}.py"
        path.write_text(SOURCE.replace("3.14", f"3.1{i}"))
        paths.append(path)
    return paths


def patch_for_prompt(tokenizer):
    """The rename patch of whichever file the prompt shows (shapeN.py or itemN.py, holding 3.1N)."""
    def answer(body):
        name, digit = re.search(r"\b((?:shape|item)(\d)\.py)", prompt_text(tokenizer, body)).groups()
        return PATCH.format(name=name).replace("3.14", f"3.1{digit}")
    return answer


def write_tasks(path: Path, files: list[Path]) -> Path:
    path.write_text("".join(json.dumps({"file": str(f), "instruction": INSTRUCTION, "format": "apply_patch"}) + "\n"
                            for f in files))
    return path


def test_batch_keeps_input_order_when_answers_come_back_out_of_order(tokenizer, tmp_path):
    files = edit_files(tmp_path, 4)
    tasks = read_tasks(write_tasks(tmp_path / "tasks.jsonl", files))
    finished = []
    # the first file's answer comes last
    delay = lambda body: 0.6 if "shape0.py" in prompt_text(tokenizer, body) else 0.0  # noqa: E731
    with FakeServer(patch_for_prompt(tokenizer), delay=delay) as server:
        editor = Editor(server=server.url, tokenizer=tokenizer)
        rows = run_batch(editor, tasks, concurrency=4, on_result=lambda rows, task: finished.append(task.line))
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert finished[-1] == 1 and all(r["status"] == "proposed" for r in rows)
    assert all("+def circle_area" in r["diff"] for r in rows)
    assert all(f.read_text() == SOURCE.replace("3.14", f"3.1{i}") for i, f in enumerate(files))  # nothing written


def test_batch_cli_writes_with_yes_only_and_resumes(tokenizer, tmp_path, monkeypatch):
    from editor.cli import app
    from editor.commands import propose

    files = edit_files(tmp_path, 3)
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", files), tmp_path / "results.jsonl"
    runner = CliRunner()
    with FakeServer(patch_for_prompt(tokenizer)) as server:
        monkeypatch.setattr(propose, "make_editor", lambda **options: Editor(**{**options, "tokenizer": tokenizer}))
        shown = runner.invoke(app, ["batch", str(tasks), "--server", server.url, "--out", str(out)])
        assert shown.exit_code == 0, shown.output
        assert "nothing written" in shown.output and all("area(" in f.read_text() for f in files)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["line"] for r in rows] == [1, 2, 3] and {r["status"] for r in rows} == {"proposed"}

        sent = len(server.completions())
        again = runner.invoke(app, ["batch", str(tasks), "--server", server.url, "--out", str(out)])
        assert again.exit_code == 0 and len(server.completions()) == sent  # all done: nothing sent

        rows[1]["status"] = "error"  # a task that failed is tried again, the others are kept
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        written = runner.invoke(app, ["batch", str(tasks), "--server", server.url, "--out", str(out), "--yes"])
        assert written.exit_code == 0, written.output
    # --yes writes proposals: the two kept from the first run are proposed again, then written
    assert len(server.completions()) == sent + 3
    assert all("def circle_area(radius)" in f.read_text() for f in files)
    assert {json.loads(line)["status"] for line in out.read_text().splitlines()} == {"written"}


def test_batch_refuses_two_tasks_on_one_file_before_sending_anything(tmp_path):
    from editor.cli import app

    (file,) = edit_files(tmp_path, 1)
    tasks = write_tasks(tmp_path / "tasks.jsonl", [file, tmp_path / "." / file.name])
    with FakeServer() as server:
        result = CliRunner().invoke(app, ["batch", str(tasks), "--server", server.url])
    said = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and "tasks.jsonl:2" in said and "also edited by line 1" in said
    assert server.requests == []


@pytest.mark.parametrize("line, message", [("{", "not JSON"), ('{"file": "x.py"}', "a task is"),
                                           ('{"file": "missing.py", "instruction": "x"}', "missing.py: no such file")])
def test_bad_task_lines_are_named(tmp_path, monkeypatch, line, message):
    monkeypatch.chdir(tmp_path)
    Path("tasks.jsonl").write_text('{"file": "tasks.jsonl", "instruction": "x"}\n' + line + "\n")
    with pytest.raises(Exception, match=message) as error:
        read_tasks("tasks.jsonl")
    assert "tasks.jsonl:2" in str(error.value)


def test_a_failing_task_is_recorded_and_the_batch_goes_on(tokenizer, tmp_path):
    files = edit_files(tmp_path, 2)
    with FakeServer(patch_for_prompt(tokenizer), failures=[400]) as server:
        editor = Editor(server=ServerClient(server.url, "m", backoff=0.01), tokenizer=tokenizer)
        rows = run_batch(editor, [Task(1, str(files[0]), INSTRUCTION, "apply_patch"),
                                  Task(2, str(files[1]), INSTRUCTION, "apply_patch")], concurrency=1)
    assert [r["status"] for r in rows] == ["error", "proposed"] and "HTTP 400" in rows[0]["errors"][0]["message"]


def test_bench_batch_counts_written_and_passing_edits_and_compares_diffs(tokenizer):
    from bench.batch import batch_config, compare, markdown_batch
    from bench.items import Item

    items = [Item(f"t/{i}", INSTRUCTION, SOURCE.replace("3.14", f"3.1{i}"), None,
                  "assert round(circle_area(1.0), 2) == 3.1" + str(i) + "\n") for i in range(2)]
    with FakeServer(patch_for_prompt(tokenizer)) as server:
        editor = Editor(server=server.url, tokenizer=tokenizer, max_retries=0)
        results = [batch_config(f"server, concurrency {n}", editor, items, fmt="apply_patch", concurrency=n)
                   for n in (1, 2)]
    report = {"items": 2, "format": "apply_patch", "max_retries": 0, "model": "tiny", "results": compare(results)}
    assert [(r["written"], r["pass_at_1"], r["same_as_first"]) for r in results] == [(2, 1.0, 2), (2, 1.0, 2)]
    assert "| server, concurrency 2 |" in markdown_batch(report)


def test_edit_cli_on_a_server_shows_the_diff_and_says_why_a_grammarless_server_fails(tokenizer, tmp_path,
                                                                                     monkeypatch):
    from editor.cli import app
    from editor.commands import propose

    target = tmp_path / "shapes.py"
    target.write_text(SOURCE)
    monkeypatch.setattr(propose, "make_editor", lambda **options: Editor(**{**options, "tokenizer": tokenizer}))
    args = ["propose", str(target), INSTRUCTION, "--format", "apply_patch", "--dry-run", "--server"]
    with FakeServer(lambda body: PATCH.format(name="shapes.py")) as server:
        shown = CliRunner().invoke(app, args + [server.url])
    assert shown.exit_code == 0 and "+def circle_area(radius):" in shown.output
    with FakeServer(lambda body: "anything", grammar="ignore") as server:
        refused = CliRunner().invoke(app, args + [server.url])
    assert refused.exit_code == 2 and "--no-grammar" in " ".join(refused.output.split())
    assert target.read_text() == SOURCE
