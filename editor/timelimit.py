"""Run a function in a forked child process under a time limit.

ast-grep matches in Rust while holding the GIL, and one bad rule can run for hours (a few nested
`has`/`inside` with `stopBy: end` over deeply nested code), so neither a thread nor a signal handler
can stop it: only killing a process can. The child also keeps a crash in the library (a stack
overflow in Rust) from taking the caller, an MCP server say, down with it.

    new_texts = run(20, rewrite_all, plan)   # the result, the child's exception, or TimeLimitError

The child calls `note(text)` to say what it is working on; a TimeLimitError carries the last note.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import struct
import time

NOTE_BYTES = 4096
_note_page: mmap.mmap | None = None  # in a child: shared with the parent, which reads it on a timeout
_children: set[int] = set()  # the children running now, for `stop_all`


class TimeLimitError(Exception):
    def __init__(self, seconds: float, note: str):
        super().__init__(f"stopped after {seconds:g} s" + (f" (at {note})" if note else ""))
        self.seconds = seconds
        self.note = note


def note(text: str) -> None:
    """In a child of `run`: what it is working on now. Elsewhere: nothing."""
    if _note_page is not None:
        data = text.encode("utf-8", "replace")[:NOTE_BYTES - 4]
        _note_page[:4 + len(data)] = struct.pack("I", len(data)) + data


def stop_all() -> None:
    """Kill every child running now: each `run` waiting on one raises ChildProcessError at once."""
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # reaped since the list was taken
            pass


def run(seconds: float, function, *args):
    """`function(*args)` in a forked child: its result (pickled back), or the exception it raised.
    Past `seconds` the child is killed and TimeLimitError raised; ChildProcessError if it died."""
    global _note_page
    page = mmap.mmap(-1, NOTE_BYTES)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _note_page = page
            try:
                outcome = (True, function(*args))
            except Exception as exc:
                outcome = (False, exc)
            with open(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(outcome))
        finally:
            os._exit(0)  # no atexit handlers, no flushing of buffers the parent owns
    os.close(write_end)
    _children.add(pid)
    data = None
    try:
        data = _read_until(read_end, time.monotonic() + seconds)
    finally:
        os.close(read_end)
        _children.discard(pid)  # before reaping it: until then no other process can take its pid
        if data is None:  # out of time
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if data is None:
        (length,) = struct.unpack_from("I", page)
        raise TimeLimitError(seconds, page[4:4 + min(length, NOTE_BYTES - 4)].decode("utf-8", "replace"))
    if not data:
        cause = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                 else "it returned something that cannot be pickled")
        raise ChildProcessError(f"the worker process died ({cause})")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything written to `fd` until it closes; None if that is not before `deadline`."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
