"""A small client for an OpenAI-compatible completions server (vLLM): the prompt goes as token ids, the edit
format's Lark grammar as vLLM's `structured_outputs.grammar`, so the server decodes under the same grammar and
from the same prompt as local decoding does.

Standard library only (urllib): requests are few and large (one per edit try), so a connection per request
costs nothing worth a dependency. Thread-safe: `edit batch` sends many requests at once from worker threads.

    client = ServerClient("http://127.0.0.1:8000")
    done = client.complete(prompt_ids, grammar=lark_text, max_tokens=256)  # -> Completion
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

TOKEN_ENV = "EDIT_SERVER_TOKEN"  # sent as "Authorization: Bearer <token>" when set
RETRY_STATUSES = (429, 503)  # rate limited, overloaded or still loading: worth another try after a pause
# A grammar that admits one answer: a server that enforces grammars returns exactly PROBE_ANSWER.
PROBE_ANSWER = "grammar-probe-7f3a"
PROBE_GRAMMAR = f'start: "{PROBE_ANSWER}"\n'


class ServerError(RuntimeError):
    """The server could not be reached, refused the request, or answered something unusable."""


@dataclass
class Completion:
    text: str
    token_ids: list[int] | None  # the output's token ids, when the server returns them (vLLM does)
    finish_reason: str  # "stop" (an EOS, a stop string, or the grammar ended) or "length"
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall-clock of the successful request, retries' waits excluded


class ServerClient:
    """`url`: the server's base, with or without /v1. `model`: the served model's name (None: the server's only
    one, from /v1/models). `timeout`: seconds for one request. `retries`: further tries after a 429/503 or a
    refused connection, waiting `backoff` * 2**n seconds (or the server's Retry-After)."""

    def __init__(self, url: str, model: str | None = None, *, timeout: float = 600.0, retries: int = 4,
                 backoff: float = 1.0, token_env: str = TOKEN_ENV):
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.token = os.environ.get(token_env) or None
        self._model = model
        self._lock = threading.Lock()
        self._grammar_checked = False

    @property
    def model(self) -> str:
        """The served model's name: given, or the server's only model."""
        with self._lock:
            if self._model is None:
                names = [m["id"] for m in self.request("GET", "/models").get("data", [])]
                if len(names) != 1:
                    raise ServerError(f"{self.base}/models lists {len(names)} models ({', '.join(names) or 'none'}); "
                                      "name the one to use (--server-model)")
                self._model = names[0]
            return self._model

    def complete(self, prompt: list[int] | str, *, grammar: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None) -> Completion:
        """One completion of `prompt` (token ids, or text), constrained by the Lark `grammar` when given.
        ServerError when the server takes no grammar (see `check_grammar`)."""
        if grammar is not None:
            self.check_grammar()
        return self._complete(prompt, grammar, max_tokens, temperature, seed)

    def check_grammar(self) -> None:
        """Once per client: a request whose grammar admits one answer must get exactly that answer. A server
        that rejects `structured_outputs` or ignores it gets a ServerError that says what to do."""
        with self._lock:
            if self._grammar_checked:
                return
        try:
            answer = self._complete("Answer:", PROBE_GRAMMAR, 16, 0.0, None).text
        except ServerError as error:
            raise ServerError(f"{error}\n{_NO_GRAMMAR_HINT}") from None
        if answer != PROBE_ANSWER:
            raise ServerError(f"the server at {self.base} does not enforce grammars: a request whose grammar admits "
                              f"only {PROBE_ANSWER!r} got {answer[:80]!r}.\n{_NO_GRAMMAR_HINT}")
        with self._lock:
            self._grammar_checked = True

    def _complete(self, prompt, grammar, max_tokens, temperature, seed) -> Completion:
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                "n": 1, "stream": False, "return_token_ids": True}
        if seed is not None:
            body["seed"] = seed
        if grammar is not None:
            body["structured_outputs"] = {"grammar": grammar}
        started = time.perf_counter()
        answer = self.request("POST", "/completions", body)
        seconds = time.perf_counter() - started
        try:
            choice = answer["choices"][0]
            usage = answer.get("usage") or {}
            return Completion(choice["text"], choice.get("token_ids"), choice.get("finish_reason") or "stop",
                              usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), seconds)
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.base}/completions answered without a completion: {str(answer)[:300]}") from None

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """The JSON answer of one request, retried on 429/503 and refused connections (see the class)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base + path
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method),
                                            timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                detail = _detail(error)
                if error.code not in RETRY_STATUSES or last:
                    hint = f" (set {TOKEN_ENV})" if error.code in (401, 403) and not self.token else ""
                    raise ServerError(f"{method} {url}: HTTP {error.code}{hint}: {detail}") from None
                time.sleep(_retry_after(error) or self.backoff * 2 ** attempt)
            except TimeoutError:
                raise ServerError(f"{method} {url}: no answer within {self.timeout:g} s") from None
            except urllib.error.URLError as error:
                if isinstance(error.reason, TimeoutError):
                    raise ServerError(f"{method} {url}: no answer within {self.timeout:g} s") from None
                if last or not isinstance(error.reason, ConnectionError):
                    raise ServerError(f"{method} {url}: cannot connect: {error.reason}") from None
                time.sleep(self.backoff * 2 ** attempt)
            except json.JSONDecodeError:
                raise ServerError(f"{method} {url}: the answer is not JSON") from None
        raise AssertionError("unreachable: the last try returns or raises")


_NO_GRAMMAR_HINT = ("Serve the model with vLLM and the guidance backend (`--structured-outputs-config.backend "
                    "guidance`, see docs/SERVING.md), or pass --no-grammar for unconstrained output that the "
                    "applier still checks.")


def _detail(error: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI style {"error": {"message": ...}} or vLLM's {"message": ...})."""
    try:
        raw = error.read().decode("utf-8", errors="replace")
    except OSError:
        return error.reason or ""
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        return raw[:300]
    inner = payload.get("error", payload) if isinstance(payload, dict) else payload
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or payload)[:300]


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff
