"""Keep the model loaded between `edit FILE INSTRUCTION` calls, as ollama keeps its models loaded.

A one-shot `edit` spends most of its seconds before the first token: importing torch and transformers,
reading the weights and building the MTP heads take ~7-10 s on 2 cores, a short edit 2-5 s. So `edit`
hands its request to a daemon that holds an `Editor` with the same options, and starts one in the
background when none is running; the daemon exits after `keep_alive` seconds without a request
(`edit --keep-alive`, $EDIT_KEEP_ALIVE, default 300; 0: no daemon, the model is loaded in-process).
Being long-lived, the daemon ends up with what `--quantize auto` means for a long-lived process (float16
weights on AVX2 CPUs), but answers its first edit with what it means for one edit (float32 there) and packs
float16 after that answer (`first_load`), so the `edit` that starts it waits no longer than one in-process
edit. Its Editor keeps the KV cache of the last prompt, whose instructions the next request of the same
format shares.

The daemon only proposes: it reads no user file and writes none. The CLI sends the file's text and
writes the accepted edit itself, atomically, as before. It listens on a Unix socket only its user can
open, `<daemon dir>/<hash of the Editor options>.sock` (daemon dir: $EDIT_DAEMON_DIR, else
`<tmp>/edit-<uid>`, mode 0700); a lock file beside it keeps to one daemon per set of options, and its
log is beside it too. One request at a time: a JSON line in; JSON lines out, progress, then the result
or the error. `edit model unload` stops every daemon of the user (`stop_all`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from .errors import EditError

DEFAULT_KEEP_ALIVE = 300.0
START_TIMEOUT = 30.0  # seconds for a new daemon to open its socket; it loads the model after
MAX_LOG_BYTES = 1_000_000


class DaemonError(RuntimeError):
    """No daemon could be started or reached, or it stopped during a request."""


def keep_alive_seconds(option: float | None) -> float:
    """--keep-alive if given, else $EDIT_KEEP_ALIVE, else DEFAULT_KEEP_ALIVE; 0 where there is no daemon
    (not a POSIX system: it needs Unix sockets and flock)."""
    if os.name != "posix":
        return 0.0
    if option is not None:
        return option
    value = os.environ.get("EDIT_KEEP_ALIVE", "").strip()
    try:
        return float(value) if value else DEFAULT_KEEP_ALIVE
    except ValueError:
        raise DaemonError(f"EDIT_KEEP_ALIVE={value!r} is not a number of seconds") from None


def daemon_dir() -> Path:
    # Not under ~/.cache: a Unix socket's path must stay under ~100 bytes.
    folder = Path(os.environ.get("EDIT_DAEMON_DIR") or Path(tempfile.gettempdir()) / f"edit-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise DaemonError(f"{folder} must belong to you alone (mode 0700) to hold the edit daemon's socket")
    return folder


def socket_path(options: dict) -> Path:
    """The socket of the daemon for these Editor options and this code: after an upgrade or a change to the
    package (any .py file of editor/ or decoding/), `edit` starts a new daemon rather than ask an old one."""
    root = Path(__file__).resolve().parents[1]
    code = [(str(file), file.stat().st_mtime_ns, file.stat().st_size)
            for package in ("editor", "decoding") for file in sorted((root / package).rglob("*.py"))]
    key = hashlib.sha256(json.dumps([options, code], sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return daemon_dir() / f"{key}.sock"


# --- client (the CLI; imports no torch) ------------------------------------------------------------------


def propose(options: dict, keep_alive: float, *, name: str, text: str, instruction: str, format: str,
            language: str | None, on_progress=None):
    """`Editor(**options).edit(text, instruction, path=name, ...)` in the daemon for `options` (JSON values, or
    folders as Paths), started if none runs. Returns an `EditResult` (without the parsed edit); raises the `EditError` or
    `ModelError` the daemon met, or `DaemonError`."""
    from decoding.model_registry import ModelError

    from .propose import EditResult

    options = {name: str(Path(value).resolve()) if isinstance(value, Path) else value
               for name, value in options.items()}  # a folder named as it was, from wherever `edit` runs
    path = socket_path(options)
    connection = _connect(path) or _start(options, keep_alive, path)
    request = {"name": name, "text": text, "instruction": instruction, "format": format, "language": language}
    with connection, connection.makefile("rw", encoding="utf-8", newline="\n") as stream:
        _send(stream, request)
        for line in stream:
            answer = json.loads(line)
            if "progress" in answer:
                if on_progress is not None:
                    on_progress(SimpleNamespace(**answer["progress"]))
            elif "result" in answer:
                return EditResult(edit=None, **answer["result"])
            elif answer["error"]["kind"] == "edit":
                error = answer["error"]
                raise EditError(error["message"], file=error["file"], line=error["line"], hunk=error["hunk"])
            elif answer["error"]["kind"] == "model":
                raise ModelError(answer["error"]["message"])
            else:
                raise DaemonError(f"the edit daemon failed: {answer['error']['message']} (log: "
                                  f"{path.with_suffix('.log')})")
    raise DaemonError(f"the edit daemon stopped before answering (log: {path.with_suffix('.log')})")


def stop_all() -> int:
    """Ask every daemon of this user to exit now, freeing its memory; returns how many did."""
    stopped = 0
    for path in sorted(daemon_dir().glob("*.sock")):
        connection = _connect(path)
        if connection is None:
            continue
        with connection, connection.makefile("rw", encoding="utf-8", newline="\n") as stream:
            _send(stream, {"stop": True})
            stopped += bool(stream.readline())
        deadline = time.monotonic() + 5
        while path.exists() and time.monotonic() < deadline:  # gone once the daemon has closed its socket
            time.sleep(0.02)
    return stopped


def _send(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def _connect(path: Path) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:  # no socket, or a stale one left by a killed daemon
        connection.close()
        return None
    return connection


def _start(options: dict, keep_alive: float, path: Path) -> socket.socket:
    log = path.with_suffix(".log")
    if log.exists() and log.stat().st_size > MAX_LOG_BYTES:
        log.unlink()  # appended to by each daemon of these options; kept short
    with open(log, "ab") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "editor.daemon", str(path), json.dumps(options),
                                   str(keep_alive)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  start_new_session=True)  # outlives this process and its terminal's Ctrl-C
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        connection = _connect(path)
        if connection is not None:
            return connection
        if daemon.poll() not in (None, 0):
            break
        time.sleep(0.05)  # exit code 0 before the socket: another daemon holds the lock and is opening it
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise DaemonError(f"the edit daemon did not start{': ' + tail[0] if tail else ''} (log: {log})")


# --- daemon ------------------------------------------------------------------------------------------------


def serve(path: Path, options: dict, keep_alive: float) -> None:
    """Answer requests on `path` until `keep_alive` seconds pass without one; the Editor loads at the first."""
    import fcntl  # POSIX only, as the daemon is

    lock = open(path.with_suffix(".lock"), "w")  # held (open) for the daemon's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another daemon serves these options
    path.unlink(missing_ok=True)  # a socket left by a daemon that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen()
    listener.settimeout(keep_alive)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} daemon {os.getpid()} serving {options}", flush=True)
    editor = None
    first_options, later_weights = first_load(options)
    try:
        while True:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                return
            connection.settimeout(None)
            with connection, connection.makefile("rw", encoding="utf-8", newline="\n") as stream:
                try:
                    request = json.loads(stream.readline())
                    if request.get("stop"):
                        _send(stream, {"stopped": os.getpid()})
                        return
                    editor = answer(stream, request, editor, first_options)
                except OSError:
                    pass  # the client went away (Ctrl-C): its edit is dropped, the model stays loaded
            if editor is not None and later_weights is not None:  # the client has its answer: convert now
                started = time.perf_counter()
                editor.requantize(later_weights)
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} weights now {later_weights} "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)
                later_weights = None
    finally:
        path.unlink(missing_ok=True)
        listener.close()
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} daemon {os.getpid()} exits", flush=True)


def first_load(options: dict) -> tuple[dict, str | None]:
    """The Editor options the daemon loads its model with, and the weights it converts it to once the first edit
    is answered (None: it loads those at once). Where `--quantize auto` means float16 for a long-lived process
    and float32 for one edit, the first edit is answered in float32: packing float16 weights costs more than
    float16 saves on one short edit (the 1.5B: ~15 s of packing), and the `edit` that started the daemon would
    otherwise wait for it."""
    from decoding.model_loading import resolve_quantize

    quantize = options.get("quantize", "auto")
    now, later = resolve_quantize(quantize, single_edit=True), resolve_quantize(quantize)
    if now == later or options.get("server"):
        return options, None
    return {**options, "quantize": now}, later


def answer(stream, request: dict, editor, options: dict):
    """Answer `request` on `stream`: the progress, then the result or error; returns the Editor."""
    from decoding.model_registry import ModelError
    from decoding.server_client import ServerError

    from .propose import Editor

    def progress(stats) -> None:
        _send(stream, {"progress": {"new_tokens": stats.new_tokens, "tokens_per_s": stats.tokens_per_s,
                           "verifications": stats.verifications, "mean_accepted": stats.mean_accepted}})

    try:
        if editor is None:
            editor = Editor(**options)
        result = editor.edit(request["text"], request["instruction"], path=request["name"],
                             format=request["format"], language=request["language"], on_progress=progress)
    except EditError as exc:
        _send(stream, {"error": {"kind": "edit", **exc.to_json()}})
    except OSError:
        raise  # the client went away: nothing to answer
    except (ModelError, ServerError) as exc:
        _send(stream, {"error": {"kind": "model", "message": str(exc)}})
        if editor is None:
            raise SystemExit(1)  # nothing loaded: the next `edit` starts afresh
    except Exception as exc:  # noqa: BLE001 - reported to the client, the traceback kept in the log
        import traceback

        traceback.print_exc()
        _send(stream, {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}})
    else:
        # every field of the EditResult but the parsed edit, which the CLI does not need
        _send(stream, {"result": {field.name: getattr(result, field.name) for field in fields(result)
                                  if field.name != "edit"}})
    return editor


if __name__ == "__main__":
    serve(Path(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]))
