"""Run fragile decoding (FFmpeg, MuPDF: C code fed hostile files) where a crash or a hang costs one job.

`IsolatedRunner` sends `fn(*args)` jobs, one at a time, to a child process that lives for the
runner's `with` block. A job's own exception is raised again in the caller with its type and message
(a plugin's `VideoError` stays a `VideoError`); a crash, a hang past `timeout_s` or an allocation past
`max_memory_mb` raises the runner's `error` class with the cause, and the next job gets a fresh child.

On Linux the child is forked: instant, and it inherits the caller's imports. It must only run the
decoder and pipe I/O, never torch (a forked OpenMP pool can deadlock), so jobs return plain data
(PIL images, bytes, numbers). Elsewhere the child is spawned. `isolate=False`, and any daemonic
process (a DataLoader worker may not have children and is expendable itself), run jobs in-process.

A forked child's C-level stderr (fd 2) goes to a temporary file, not the terminal: FFmpeg, decord
and MuPDF print there ("moov atom not found") on every hostile file. After a failed job the last
lines are added to its error ("[decoder log: ...]"), so the cause reaches the caller's error log
once, as text; after a good job they are only logged at DEBUG level.

The document plugin has its own runner of the same design (plugins/document.py); this one is the
shared, decoder-neutral version.
"""
from __future__ import annotations

import contextlib
import faulthandler
import importlib
import logging
import multiprocessing
import os
import pickle
import re
import signal
import sys
import tempfile
import threading
import warnings
from typing import Any, Callable, Iterator, Sequence

from omnisdk.errors import OmniError

_log = logging.getLogger(__name__)
#: How much of the end of a job's captured stderr is read back, and how much of it an error quotes.
_LOG_TAIL_BYTES = 64 * 1024
_LOG_QUOTE_LINES = 3
_LOG_QUOTE_CHARS = 300
_LOG_LINE_CHARS = 150


class IsolationError(OmniError):
    """A job's child process crashed, hung or ran out of memory."""


class IsolatedRunner:
    """Runs `fn(*args)` jobs in a child process; see the module docstring."""

    def __init__(
        self,
        isolate: bool = True,
        timeout_s: float = 60.0,
        max_memory_mb: int | None = None,
        *,
        what: str = "the decoder",
        error: Callable[[str], BaseException] = IsolationError,
        preload: Sequence[str] = (),
        child_setup: Callable[[], None] | None = None,
        describe: Callable[[BaseException], str] | None = None,
    ):
        """`child_setup` runs once in each new child (quieting a library, say); `describe`, when
        given, turns any exception of a job into `error(describe(exc))` instead of re-raising it."""
        self.isolate = isolate
        self.timeout_s = timeout_s
        self.max_memory_mb = max_memory_mb
        self.what = what
        self.error = error
        self.preload = tuple(preload)
        self.child_setup = child_setup
        self.describe = describe
        self._proc = None
        self._conn = None
        self._stderr: Any = None  # the file a forked child's fd 2 writes to

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.isolate or multiprocessing.current_process().daemon:
            try:
                return fn(*args)
            except MemoryError:
                raise self.error(f"{self.what} ran out of memory") from None
            except Exception as exc:
                if self.describe is None:
                    raise
                raise self.error(self.describe(exc)) from exc
        if self._proc is None:
            self._start()
        self._clear_stderr()
        try:
            self._conn.send((fn, args))
        except OSError:  # the child died between jobs (killed from outside): a fresh one takes this job
            self._stop(kill=True)
            self._start()
            self._conn.send((fn, args))
        if not self._conn.poll(self.timeout_s):
            self._stop(kill=True)
            raise self.error(self._with_stderr(
                f"{self.what} took over {self.timeout_s:g} s and was stopped (a hostile file? else raise timeout_s)"))
        try:
            status, value, text = self._conn.recv()
        except (EOFError, OSError):
            code = self._stop()
            raise self.error(self._with_stderr(f"{self.what} crashed ({describe_exit(code)})")) from None
        if status == "ok":
            captured = self._read_stderr()
            if captured.strip():
                _log.debug("%s wrote to stderr: %s", self.what, captured.strip())
            return value
        if status == "raise":
            try:
                exc = pickle.loads(value)
            except Exception:  # an exception type that does not unpickle: its text still tells the cause
                exc = None
            if isinstance(exc, BaseException):
                if len(exc.args) == 1 and isinstance(exc.args[0], str):  # the usual one-message error
                    exc.args = (self._with_stderr(exc.args[0]),)
                raise exc
        raise self.error(self._with_stderr(text))

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._conn.send(None)  # a polite stop lets the child exit by itself
            except OSError:
                pass
            self._stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- the child's stderr --------------------------------------------------------------------------
    def _clear_stderr(self) -> None:
        if self._stderr is not None:
            os.ftruncate(self._stderr.fileno(), 0)  # O_APPEND: the child's next write lands at 0

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - _LOG_TAIL_BYTES)
        return os.pread(fd, size - start, start).decode("utf-8", "replace")

    def _with_stderr(self, message: str) -> str:
        """`message` plus what the decoder printed that it does not already say."""
        quoted = decoder_lines(self._read_stderr(), message)
        return f"{message} [decoder log: {'; '.join(quoted)}]" if quoted else message

    def _start(self) -> None:
        for module in self.preload:  # imported once here, so every forked child has it already
            try:
                importlib.import_module(module)
            except ImportError:
                pass
        method = "fork" if sys.platform.startswith("linux") else None
        ctx = multiprocessing.get_context(method)
        parent, child = ctx.Pipe(duplex=True)
        stderr_fd = None
        if method == "fork":  # a spawned child inherits no descriptor: its stderr stays the caller's
            if self._stderr is None:
                self._stderr = _append_only_tempfile()
            stderr_fd = self._stderr.fileno()
        self._proc = ctx.Process(target=_serve, daemon=True, args=(
            child, parent, self.max_memory_mb, self.what, self.child_setup, self.describe, stderr_fd))
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork in a threaded process (torch's pools): the child runs the
            # decoder and pipe I/O only, never code that could wait on a lock held by those threads.
            warnings.filterwarnings("ignore", ".*fork\\(\\) may lead to deadlocks", DeprecationWarning)
            self._proc.start()
        child.close()
        self._conn = parent

    def _stop(self, kill: bool = False) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if not kill:
            proc.join(timeout=1.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
        return proc.exitcode


def _serve(conn, parent_end, max_memory_mb: int | None, what: str, child_setup, describe, stderr_fd: int | None = None) -> None:
    """The child's loop: receive (fn, args), reply ("ok", result, "") or ("raise", pickled, text), until None."""
    parent_end.close()  # else the child never sees EOF if its parent dies
    if stderr_fd is not None:
        os.dup2(stderr_fd, 2)  # C libraries write to fd 2 directly; sys.stderr writes there too
    _close_inherited_descriptors(keep=conn.fileno())
    # A crash here is expected and reported by the parent; an inherited faulthandler (pytest
    # enables one) would only dump this child's Python stack to the shared stderr.
    faulthandler.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the pipe
    limit_memory(max_memory_mb)
    if child_setup is not None:
        child_setup()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        fn, args = job
        try:
            reply = ("ok", fn(*args), "")
        except MemoryError:
            reply = ("error", None, f"{what} ran out of memory (over max_memory_mb?)")
        except Exception as exc:  # raised again in the parent as this job's error
            if describe is not None:
                conn.send(("error", None, describe(exc)))
                continue
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            try:
                reply = ("raise", pickle.dumps(exc), text)
            except Exception:  # unpicklable (holds a handle): the text goes alone
                reply = ("error", None, text)
        conn.send(reply)


def _close_inherited_descriptors(keep: int) -> None:
    """Close every descriptor the fork copied (sockets, pipes, files) but stdio and our pipe.

    A child holding its parent's sockets keeps connections half-open after the parent closes
    them, and a test driver waiting for EOF on an inherited pipe waits for ever.
    """
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send this process's fd 2 to a temporary file for the block; the list gets its decoder lines.

    For C decoders run in-process (libsndfile's mpg123 prints "Cannot read next header" on random
    bytes). Only for short calls: Python's own stderr writes in that window are captured too, and a
    lock keeps two threads from swapping fd 2 at once.
    """
    lines: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(decoder_lines(sink.read(_LOG_TAIL_BYTES).decode("utf-8", "replace")))
            if lines:
                _log.debug("a decoder wrote to stderr: %s", "; ".join(lines))


def _append_only_tempfile():
    """An unlinked temporary file whose every write appends, so truncating it rewinds the writer too."""
    import fcntl

    handle = tempfile.TemporaryFile()
    flags = fcntl.fcntl(handle.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(handle.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
    return handle


# FFmpeg's "[mov,mp4 @ 0x55...] ", decord's "[10:38:50] /src/video_reader.cc:83: " and mpg123's
# "[src/libmpg123/parse.c:do_readahead():1083] " prefixes.
_LOG_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\]\s*|\[[\d:]+\]\s+\S+:\d+:\s*|\[[^\]\s]+:\d+\]\s*)+")


def decoder_lines(captured: str, message: str = "") -> list[str]:
    """The last few distinct lines a decoder printed, without location prefixes or what `message` says."""
    lines: list[str] = []
    for raw in captured.splitlines():
        line = _LOG_PREFIX.sub("", raw).strip()
        if line and line not in message and line not in lines:
            lines.append(line)
    quoted, size = [], 0
    for line in reversed(lines[-_LOG_QUOTE_LINES:]):  # the last lines are the closest to the failure
        line = line if len(line) <= _LOG_LINE_CHARS else line[:_LOG_LINE_CHARS] + "..."
        size += len(line)
        if quoted and size > _LOG_QUOTE_CHARS:
            break
        quoted.insert(0, line)
    return quoted


def limit_memory(max_memory_mb: int | None) -> None:
    """Cap this process's address space at what it maps now plus `max_memory_mb` (Linux)."""
    if max_memory_mb is None:
        return
    try:
        import resource

        # A forked child starts with its parent's whole address space (torch maps a lot), so the
        # limit is what it has now plus the allowance.
        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + max_memory_mb * 2**20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no RLIMIT_AS here: the timeout still bounds a runaway file


def describe_exit(code: int | None) -> str:
    """'killed by SIGSEGV' or 'exit code 1' for a child's exit code."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
