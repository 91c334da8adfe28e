"""Which named paths omnisdk opens: regular files, and pipes read once to the end; nothing else.

A FIFO, a socket, a device or a directory given where a file is expected would block for ever
(a FIFO with no writer), never end (/dev/zero), or fail with an obscure error. They are refused up
front with their kind named. The one exception is a pipe named explicitly (`mkfifo`, or bash's
`omnisdk embed <(sox ...)`, which passes /dev/fd/63): `PipeSpool` reads it once, to the end, into a
temporary file that is then embedded like any file, with every plugin's limits.

Reading a pipe never hangs: it is opened non-blocking, and if no byte (and no end of file) arrives
for `OMNISDK_PIPE_TIMEOUT_S` seconds (default 30) it fails, naming the pipe. A pipe that gives
more than `OMNISDK_MAX_PIPE_BYTES` (default 1 GiB) is cut off with an error rather than filling the
disk. The spool's file keeps the pipe's own name, plus the extension its first bytes imply when the
name has none, so modality detection and error messages work as for a file.
"""
from __future__ import annotations

import errno
import os
import select
import shutil
import stat
import tempfile
import weakref
from pathlib import Path
from typing import Any, BinaryIO

from omnisdk.errors import OmniError
from omnisdk.items import Item

PIPE_TIMEOUT_S = 30.0
MAX_PIPE_BYTES = 1 << 30
_READ_BLOCK = 1 << 20
_TEXT_PROBE = 64 * 1024

_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


class SpecialFileError(OmniError):
    """A path is not a regular file omnisdk can read (a socket, a device, a directory, a silent pipe)."""


def special_kind(path: str | Path) -> str | None:
    """None for a regular file (or a path that does not exist: the reader says so), else its kind."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks: a link to a FIFO is a FIFO
    except OSError as exc:
        return "symlink loop" if exc.errno == errno.ELOOP else None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def refusal(kind: str) -> str:
    """The one-line reason a special file is not read (callers add its name)."""
    if kind == "directory":
        return "a directory, not a file (to embed the files in a folder, use `omnisdk index`)"
    return f"a {kind}, not a regular file: refused (omnisdk reads regular files, and pipes once to the end)"


def check_regular_or_pipe(path: str | Path) -> None:
    """Raise SpecialFileError unless `path` is a regular file, a pipe, or missing (the reader reports that)."""
    kind = special_kind(path)
    if kind is not None and kind != "pipe (FIFO)":
        raise SpecialFileError(f"{path} is {refusal(kind)}")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise OmniError(f"{name}={raw!r} is not a number") from None


def read_pipe(path: str | Path, out: BinaryIO, *, max_bytes: int | None = None, timeout_s: float | None = None) -> int:
    """Copy a pipe to `out` until its writers close it; the byte count. Never waits over `timeout_s` for a byte.

    Errors give the cause only: the caller names the pipe."""
    max_bytes = int(_env_number("OMNISDK_MAX_PIPE_BYTES", MAX_PIPE_BYTES)) if max_bytes is None else max_bytes
    timeout_s = _env_number("OMNISDK_PIPE_TIMEOUT_S", PIPE_TIMEOUT_S) if timeout_s is None else timeout_s
    # Non-blocking, or open() itself waits for a writer that may never come.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    total = 0
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            # Linux reports no hang-up on a FIFO that never had a writer: poll waits, up to the timeout.
            if not poller.poll(timeout_s * 1000):
                waited = "no writer opened it" if total == 0 else f"it stalled after {total:,} bytes"
                raise SpecialFileError(
                    f"nothing came through the pipe for {timeout_s:g} s ({waited}); write to it "
                    "before or while omnisdk reads, or raise OMNISDK_PIPE_TIMEOUT_S"
                )
            try:
                block = os.read(fd, _READ_BLOCK)
            except BlockingIOError:
                continue
            if not block:  # every writer closed it: the end
                return total
            total += len(block)
            if total > max_bytes:
                raise SpecialFileError(f"the pipe gave over {max_bytes:,} bytes, the limit (raise OMNISDK_MAX_PIPE_BYTES)")
            out.write(block)
    finally:
        os.close(fd)


def _implied_suffix(path: Path) -> str:
    """The extension the spooled bytes imply: a known signature, else .txt for UTF-8 text, else none."""
    from omnisdk.detect import sniff_extension

    sniffed = sniff_extension(path)
    if sniffed:
        return sniffed
    with open(path, "rb") as fh:
        head = fh.read(_TEXT_PROBE)
    if b"\0" in head:
        return ""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the probe's end
            return ""
    return ".txt"


class PipeSpool:
    """Resolves items naming files: a regular file passes, a pipe is read into a temporary file, the rest refused.

    Use as a context manager (or call `close`); the temporary files go with it.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._finalizer: Any = None
        self._count = 0

    def __enter__(self) -> PipeSpool:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def resolve(self, item: Item) -> Item:
        """The item to embed in place of `item`; SpecialFileError (the cause, not the name) for a refused
        special file or a pipe that failed."""
        if item.path is None or item.data is not None:
            return item
        kind = special_kind(item.path)
        if kind is None:
            return item
        if kind != "pipe (FIFO)":
            raise SpecialFileError(refusal(kind))
        return self._spool(item)

    def _spool(self, item: Item) -> Item:
        source = Path(item.path)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="omnisdk-pipes-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._count += 1
        folder = self._dir / str(self._count)  # one folder per pipe: two pipes may share a name
        folder.mkdir()
        target = folder / (source.name or "pipe")
        with open(target, "wb") as out:
            size = read_pipe(source, out)
        if size == 0:
            raise SpecialFileError(f"the pipe was empty (its writer closed it without writing)")
        if not source.suffix and item.modality is None:
            suffix = _implied_suffix(target)
            if suffix:
                target = target.rename(target.with_name(target.name + suffix))
        return Item(modality=item.modality, text=item.text, path=target, locator=item.locator,
                    meta={**item.meta, "source": str(source)})
