"""For the app's tests: a real backend (an in-memory Qdrant collection of real files) and small media files."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

#: Headless flags that work on this kind of machine: no sandbox as root, no calls to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
CHROMIUM = Path("/usr/bin/chromium")


def open_app_backend(model, roots: Sequence[Path], collection: str = "app-test"):
    """A StoreBackend over qdrant-client's in-memory mode, with `roots` indexed by `model`."""
    from omnisdk.apps.store_backend import StoreBackend
    from omnisdk.store import open_store

    backend = StoreBackend(open_store(":memory:"), collection, model)
    summary = backend.index_files(list(roots))
    assert summary.files and not summary.failed, summary
    return backend


def write_png(path: Path, rgb: tuple[int, int, int], size: int = 64) -> Path:
    """A real PNG: a coloured square with a white disc, so thumbnails show something."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), rgb)
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(255, 255, 255))
    image.save(path)
    return path
