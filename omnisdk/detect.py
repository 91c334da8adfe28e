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
        for suffix in dict.fromkeys((item.path.suffix.lower(), sniff_extension(item.path))):
            claims = [name for name, cls in modalities.items() if suffix and suffix in cls.extensions]
            claims = claims or [name for name, cls in modalities.items()
                                if suffix and suffix in getattr(cls, "fallback_extensions", ())]
            if claims:
                return _only(claims, f"file type '{suffix}'")
        return None
    if item.data is not None:
        return _closest_type_match(item.data, modalities)
    if item.text is not None:
        return "text"
    return None


def _closest_type_match(obj: object, modalities: Mapping[str, type[ModalityPlugin]]) -> str | None:
    """The plugin naming the most specific class in the object's MRO; a tie is ambiguous."""
    for cls in type(obj).__mro__:
        dotted = f"{cls.__module__}.{cls.__qualname__}"
        claims = [name for name, plugin in modalities.items() if dotted in plugin.python_types]
        if claims:
            return _only(claims, f"Python type {dotted}")
    return None


def _only(claims: list[str], what: str) -> str:
    if len(claims) > 1:
        raise ModalityDetectionError(
            f"{what} is claimed by several plugins ({', '.join(sorted(claims))}): "
            "say which with Item(modality=...), or limit the plugins loaded with OMNISDK_PLUGINS"
        )
    return claims[0]
