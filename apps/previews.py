"""Preview pictures for result cards: image thumbnails, a video's frame, a PDF's rendered page.

Decoding runs in a child process (`omnisdk.isolation.IsolatedRunner`): the files come from the
user's folders, and FFmpeg or MuPDF may crash or hang on a hostile one, which must cost that one
preview, not the app. Renders are PNG files cached on disk under a key of the file's real path,
size, mtime and the page or time asked for, so a changed file renders again.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from pathlib import Path

from omnisdk.errors import OmniError
from omnisdk.isolation import IsolatedRunner
from omnisdk.items import Locator

log = logging.getLogger(__name__)

#: Longer side of a preview, in pixels (cards show them at about half that on a 2x screen).
PREVIEW_SIDE = 480
#: Oldest cached previews beyond this many are removed when a cache opens.
MAX_CACHED = 5000
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
_VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"}


class PreviewError(OmniError):
    """A preview could not be rendered (unreadable file, a decoder crash or timeout)."""


def previewable(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in _IMAGE_SUFFIXES or suffix in _VIDEO_SUFFIXES or suffix == ".pdf"


class PreviewCache:
    """Renders previews of files the caller has already checked, and keeps them on disk."""

    def __init__(self, cache_dir: Path | None = None, *, side: int = PREVIEW_SIDE, timeout_s: float = 20.0):
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="omnisdk-previews-"))
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.side = side
        self._runner = IsolatedRunner(timeout_s=timeout_s, max_memory_mb=1024, what="the preview renderer",
                                      error=PreviewError)
        self._lock = threading.Lock()  # one runner, one job at a time
        _prune(self.cache_dir, MAX_CACHED)
        # The runner forks its child, which inherits every open file descriptor. Forking now, before
        # the server listens or a browser connects, keeps sockets and pipes out of the child (else a
        # closed connection stays open in it, and a parent waiting for EOF on a pipe waits forever).
        self._runner.run(_ready)

    def close(self) -> None:
        with self._lock:
            self._runner.close()

    def png(self, path: Path, page: int | None = None, t: float | None = None) -> Path:
        """The cached PNG preview of `path` (a real, guarded path), rendering it first if needed."""
        stat = path.stat()
        key = hashlib.sha256(
            f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{page}|{t}|{self.side}".encode()
        ).hexdigest()
        out = self.cache_dir / f"{key}.png"
        if out.is_file():
            return out
        with self._lock:
            if out.is_file():  # another request rendered it while this one waited
                return out
            data = self._runner.run(render_png, str(path), page, t, self.side)
        tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)  # readers never see a half-written file
        return out


def _ready() -> bool:
    return True


def render_png(path: str, page: int | None, t: float | None, side: int) -> bytes:
    """PNG bytes of a preview; runs in the child process, so it returns plain bytes."""
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix == ".pdf":
        image = _pdf_page(source, page or 1, side)
    elif suffix in _VIDEO_SUFFIXES:
        image = _video_frame(source, t)
    elif suffix in _IMAGE_SUFFIXES:
        from omnisdk.plugins.image import load_image

        image = load_image(source, max_pixels=64_000_000)
    else:
        raise PreviewError(f"no preview for '{suffix}' files")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _pdf_page(path: Path, page: int, side: int):
    from PIL import Image

    from omnisdk.plugins.document import DocumentConfig, read_page

    data = read_page(str(path), page, DocumentConfig(render_size=side, max_text_tokens=0, isolate=False))
    return Image.frombytes("RGB", (data.width, data.height), data.samples)


def _video_frame(path: Path, t: float | None):
    from omnisdk.plugins.video import VideoConfig, read_frames

    # One frame at the centre of a short span around t (of the whole video when t is None).
    locator = Locator(t0=t, t1=t + 0.04) if t is not None else None
    return read_frames(path, locator, VideoConfig(num_frames=1))[0]


def _prune(cache_dir: Path, keep: int) -> None:
    try:
        files = sorted(cache_dir.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in files[keep:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:  # a cache that cannot be tidied still works
        log.debug("cannot prune %s: %s", cache_dir, exc)
