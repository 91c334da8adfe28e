"""Preview pictures for result cards, drawn by each modality's plugin (`ModalityPlugin.preview`).

The app asks the plugins of the model that indexed the collection, so the built-in modalities (an
image's thumbnail, a video's frame, a document's page) and a third-party one (a heat map) get their
cards the same way. Drawing runs in a child process (`omnisdk.isolation.IsolatedRunner`): the files
come from the user's folders, and FFmpeg or MuPDF may crash or hang on a hostile one, which must cost
that one preview, not the app. Renders are PNG files cached on disk under a key of the file's real
path, size, mtime, modality and locator, so a changed file renders again.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

from omnisdk.errors import OmniError
from omnisdk.isolation import IsolatedRunner
from omnisdk.items import Item, Locator
from omnisdk.modality import ModalityPlugin, PluginConfig

log = logging.getLogger(__name__)

#: Longer side of a preview, in pixels (cards show them at about half that on a 2x screen).
PREVIEW_SIDE = 480
#: Oldest cached previews beyond this many are removed when a cache opens.
MAX_CACHED = 5000


class PreviewError(OmniError):
    """A preview could not be rendered (unreadable file, a decoder crash or timeout)."""


def draws_previews(plugin: ModalityPlugin | type[ModalityPlugin]) -> bool:
    """Whether a plugin overrides `ModalityPlugin.preview` (the default draws nothing)."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return cls.preview is not ModalityPlugin.preview


class PreviewCache:
    """Renders previews of files the caller has already checked, through the plugins, and keeps them on disk.

    `plugins` are the model's (by modality): each that draws previews is asked with its own config.
    """

    def __init__(self, cache_dir: Path | None = None, *, plugins: Mapping[str, ModalityPlugin] | None = None,
                 side: int = PREVIEW_SIDE, timeout_s: float = 20.0):
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="omnisdk-previews-"))
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.side = side
        # The class and config, not the plugin: the child gets them pickled, and a bound plugin holds the model.
        self._drawers: dict[str, tuple[type[ModalityPlugin], PluginConfig]] = {
            name: (type(plugin), plugin.config) for name, plugin in (plugins or {}).items() if draws_previews(plugin)
        }
        self._runner = IsolatedRunner(timeout_s=timeout_s, max_memory_mb=1024, what="the preview renderer",
                                      error=PreviewError)
        self._lock = threading.Lock()  # one runner, one job at a time
        _prune(self.cache_dir, MAX_CACHED)
        # The runner forks its child, which inherits every open file descriptor. Forking now, before
        # the server listens or a browser connects, keeps sockets and pipes out of the child (else a
        # closed connection stays open in it, and a parent waiting for EOF on a pipe waits forever).
        self._runner.run(_ready)

    @property
    def modalities(self) -> frozenset[str]:
        """The modalities whose plugin draws previews."""
        return frozenset(self._drawers)

    def modality_of(self, path: Path) -> str | None:
        """The drawing modality whose plugin accepts this file (`accepts_path`), for a request that names none."""
        return next((name for name, (cls, _) in self._drawers.items() if cls.accepts_path(path)), None)

    def close(self) -> None:
        with self._lock:
            self._runner.close()

    def png(self, path: Path, modality: str, locator: Locator | None = None) -> Path:
        """The cached PNG preview of `path` (a real, guarded path) as `modality`, rendering it first if needed.

        Raises:
            PreviewError: the modality draws no previews, or its plugin failed on this file.
        """
        if modality not in self._drawers:
            raise PreviewError(f"the '{modality}' plugin draws no previews")
        stat = path.stat()
        where = locator.to_dict() if locator is not None else None
        key = hashlib.sha256(
            f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{modality}|{where}|{self.side}".encode()
        ).hexdigest()
        out = self.cache_dir / f"{key}.png"
        if out.is_file():
            return out
        cls, config = self._drawers[modality]
        with self._lock:
            if out.is_file():  # another request rendered it while this one waited
                return out
            data = self._runner.run(render_png, cls, config, str(path), modality, where, self.side)
        tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)  # readers never see a half-written file
        return out


def _ready() -> bool:
    return True


def render_png(cls: type[ModalityPlugin], config: PluginConfig, path: str, modality: str,
               locator: dict[str, Any] | None, side: int) -> bytes:
    """PNG bytes of the plugin's preview; runs in the child process, so it returns plain bytes."""
    item = Item(modality=modality, path=Path(path), locator=Locator.from_dict(locator))
    picture = cls(config).preview(item, side)
    if picture is None:
        raise PreviewError(f"the '{modality}' plugin has no preview of {Path(path).name}")
    image = to_image(picture)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def to_image(picture: Any):
    """A PIL image from what `ModalityPlugin.preview` returns: a PIL image or a uint8 [H, W(, 3)] array."""
    import numpy as np
    from PIL import Image

    if isinstance(picture, Image.Image):
        return picture.convert("RGB") if picture.mode not in ("RGB", "L") else picture
    array = np.asarray(picture)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise PreviewError(f"a preview must be a PIL image or a uint8 array [H, W] or [H, W, 3], "
                           f"not {array.dtype} {list(array.shape)}")
    return Image.fromarray(array)


def _prune(cache_dir: Path, keep: int) -> None:
    try:
        files = sorted(cache_dir.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in files[keep:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:  # a cache that cannot be tidied still works
        log.debug("cannot prune %s: %s", cache_dir, exc)
