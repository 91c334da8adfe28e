"""A safetensors writer that takes one tensor at a time, so fusion never holds the output model.

The plan knows every output name, dtype and shape before the first tensor is computed, so the header
(with each tensor's byte range) is written first and the data follows in name order. The file is the
format safetensors itself writes: an 8-byte little-endian header length, a JSON header padded with
spaces to 8 bytes, then the tensors' bytes back to back.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import BinaryIO, Sequence

import torch

from omnisdk.checkpoint import SAFETENSORS_DTYPES, update_fingerprint

ITEMSIZE = {code: dtype.itemsize for code, dtype in SAFETENSORS_DTYPES.items()}


class StreamingWriter:
    """Write `model.safetensors` tensor by tensor, in the order of `entries`; fingerprints as it goes.

    Use as a context manager; `write` each tensor in order; `fingerprint` is valid after the last.
    """

    def __init__(
        self, path: Path, entries: Sequence[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None = None
    ):
        self.path = Path(path)
        self.entries = list(entries)
        self._next = 0
        self._digest = hashlib.sha256()
        self._fh: BinaryIO | None = None
        header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for name, dtype, shape in self.entries:
            size = math.prod(shape) * ITEMSIZE[dtype]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        self._header = raw + b" " * (-len(raw) % 8)

    def __enter__(self) -> StreamingWriter:
        self._fh = open(self.path, "wb")
        self._fh.write(struct.pack("<Q", len(self._header)))
        self._fh.write(self._header)
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected, dtype, shape = self.entries[self._next]
        if name != expected or tuple(tensor.shape) != tuple(shape):
            raise RuntimeError(f"writer expected '{expected}' {list(shape)}, got '{name}' {list(tensor.shape)}")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        if data.numel() != math.prod(shape) * ITEMSIZE[dtype]:
            raise RuntimeError(f"'{name}' is {tensor.dtype}, the header says {dtype}")
        assert self._fh is not None
        self._fh.write(data.numpy().data)
        update_fingerprint(self._digest, name, tensor)
        self._next += 1

    @property
    def fingerprint(self) -> str:
        if self._next != len(self.entries):
            raise RuntimeError(f"{len(self.entries) - self._next} tensors were not written")
        return self._digest.hexdigest()

    def __exit__(self, *exc) -> None:
        assert self._fh is not None
        self._fh.close()
