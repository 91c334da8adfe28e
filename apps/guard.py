"""PathGuard: the app serves a file only when its real path lies inside an indexed root.

Every path a request names is resolved (symlinks followed, `..` collapsed) before it is compared
with the roots, so a symlink inside a root that points outside it, or a path that climbs out with
`..` in any encoding, is refused. Only regular files of known media kinds are served, and no
hidden ones (names starting with a dot, which the indexer never indexes).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterable

from omnisdk.errors import OmniError

log = logging.getLogger(__name__)

#: What the media route serves, by suffix, and the type it declares (never sniffed by the browser).
MEDIA_TYPES: dict[str, str] = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".avi": "video/x-msvideo",
    ".pdf": "application/pdf", ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
}


class PathRefused(OmniError):
    """A request named a path outside the indexed roots, or not a servable file."""


class PathGuard:
    """Answers "may this path be served?" against a set of root directories that can grow."""

    def __init__(self, roots: Iterable[Path | str] = ()):
        self._lock = threading.Lock()
        self._roots: tuple[Path, ...] = ()
        self.set_roots(roots)

    @property
    def roots(self) -> tuple[Path, ...]:
        return self._roots

    def set_roots(self, roots: Iterable[Path | str]) -> None:
        """Replace the roots; each must be an existing directory other than the filesystem root."""
        resolved = []
        for root in roots:
            real = Path(root).expanduser().resolve()
            if not real.is_dir():
                log.warning("not serving %s: it is not a directory", root)
                continue
            if real == Path(real.anchor):
                raise OmniError(f"refusing to serve files from {real}: an indexed root must not be the filesystem root")
            if real not in resolved:
                resolved.append(real)
        with self._lock:
            self._roots = tuple(resolved)

    def add_root(self, root: Path | str) -> None:
        self.set_roots([*self._roots, root])

    def root_of(self, path: Path) -> Path | None:
        """The root that the already-resolved `path` is or lies under, or None."""
        return next((root for root in self._roots if path == root or path.is_relative_to(root)), None)

    def check(self, raw: str | os.PathLike[str], *, media: bool = True) -> Path:
        """The real path of a servable file named by `raw`, or PathRefused saying why not.

        `media=False` drops the rule on media kinds (the preview route draws a picture of any indexed file
        whose plugin draws previews; it never sends the file itself).
        """
        text = os.fspath(raw)
        if not text or "\x00" in text:
            raise PathRefused("empty path or a NUL byte in it")
        path = Path(text)
        if not path.is_absolute():
            raise PathRefused(f"not an absolute path: {text!r}")
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
            raise PathRefused(f"no such file: {text!r}") from None
        root = self.root_of(real)
        if root is None:
            raise PathRefused(f"outside the indexed roots: {text!r}")
        if any(part.startswith(".") for part in real.relative_to(root).parts):
            raise PathRefused(f"a hidden file or folder (never indexed): {text!r}")
        if not real.is_file():
            raise PathRefused(f"not a regular file: {text!r}")
        if media and media_type(real) is None:
            raise PathRefused(f"not a media file the app shows: {text!r}")
        return real


def media_type(path: Path) -> str | None:
    """The Content-Type the app serves `path` with, or None when it does not serve that kind."""
    return MEDIA_TYPES.get(path.suffix.lower())
