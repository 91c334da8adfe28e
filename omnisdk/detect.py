"""Fallback modality detection: explicit modality, Python type, file extension, then magic bytes."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Mapping

from omnisdk.errors import ModalityDetectionError
from omnisdk.hookspecs import hookimpl
from omnisdk.items import Item
from omnisdk.modality import ModalityPlugin

# File signatures, so a file with a wrong or missing extension still finds its plugin.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"GIF8", ".gif"),
    (0, b"%PDF-", ".pdf"),
    (0, b"fLaC", ".flac"),
    (0, b"OggS", ".ogg"),
    (0, b"ID3", ".mp3"),
    (4, b"ftyp", ".mp4"),
    (0, b"\x1a\x45\xdf\xa3", ".mkv"),
]


def sniff_extension(path: Path) -> str | None:
    """The extension a file's first bytes imply, or None (also for a FIFO or device: opening one can block)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF":
        return {b"WAVE": ".wav", b"WEBP": ".webp", b"AVI ": ".avi"}.get(head[8:12])
    for offset, magic, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return ext
    return None


@hookimpl(trylast=True)
def omnisdk_detect_modality(item: Item, modalities: Mapping[str, type[ModalityPlugin]]) -> str | None:
    if item.modality is not None:
        return item.modality
    if item.path is not None:
        return _path_match(item.path, modalities)
    if item.data is not None:
        return _closest_type_match(item.data, modalities)
    if item.text is not None:
        return "text"
    return None


def _path_match(path: Path, modalities: Mapping[str, type[ModalityPlugin]]) -> str | None:
    """The plugin whose `accepts_path` claims the file; failing that, the one its first bytes point to.

    A claim through `fallback_extensions` only counts when no plugin claims the file otherwise.
    """
    suffix = path.suffix.lower()
    claims = [name for name, cls in modalities.items() if cls.accepts_path(path)]
    strong = [name for name in claims if suffix not in getattr(modalities[name], "fallback_extensions", ())]
    if strong or claims:
        return _only(strong or claims, f"file type '{suffix}'" if suffix else f"file '{path.name}'")
    sniffed = sniff_extension(path)  # a wrong or missing extension: the content says what it is
    if sniffed is None or sniffed == suffix:
        return None
    claims = [name for name, cls in modalities.items() if sniffed in cls.extensions]
    claims = claims or [name for name, cls in modalities.items() if sniffed in getattr(cls, "fallback_extensions", ())]
    return _only(claims, f"file type '{sniffed}'") if claims else None


def _closest_type_match(obj: object, modalities: Mapping[str, type[ModalityPlugin]]) -> str | None:
    """The plugin whose `accepts_object` claims the object; of several, the one naming the most specific
    class in its MRO (a plugin that claims it by an override of its own counts as the most specific)."""
    claims = [name for name, plugin in modalities.items() if plugin.accepts_object(obj)]
    if len(claims) < 2:
        return claims[0] if claims else None
    dotted = [f"{cls.__module__}.{cls.__qualname__}" for cls in type(obj).__mro__]

    def rank(name: str) -> int:
        named = [i for i, d in enumerate(dotted) if d in modalities[name].python_types]
        return min(named) if named else 0

    best = min(rank(n) for n in claims)
    return _only([n for n in claims if rank(n) == best], f"Python type {dotted[best]}")


def _only(claims: list[str], what: str) -> str:
    if len(claims) > 1:
        raise ModalityDetectionError(
            f"{what} is claimed by several plugins ({', '.join(sorted(claims))}): "
            "say which with Item(modality=...), or limit the plugins loaded with OMNISDK_PLUGINS"
        )
    return claims[0]
