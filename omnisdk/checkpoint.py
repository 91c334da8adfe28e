"""The checkpoint directory: a JSON manifest with lineage, safetensors weights and tokenizer files.

    DIR/omnisdk.json       Manifest (format version, backbone, plugins, fingerprint, lineage)
    DIR/model.safetensors  every parameter: backbone.* and adapters.<modality>.*
    DIR/tokenizer/         the backbone tokenizer's own files
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from pydantic import BaseModel, Field

from omnisdk import __version__
from omnisdk.backbone import BackboneSpec, refuse_pickles
from omnisdk.errors import CheckpointError
from omnisdk.faults import kill_point

MANIFEST = "omnisdk.json"
WEIGHTS = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
FORMAT = "omnisdk-checkpoint"
FORMAT_VERSION = 1


class PluginEntry(BaseModel):
    name: str
    version: str
    package: str = "omnisdk"
    extra: str | None = None
    config: dict[str, Any] = {}


class Lineage(BaseModel):
    """How these weights came to be: the stage, the checkpoints they came from, and with what."""

    stage: str = "base"
    parents: list[str] = []  # fingerprints
    method: str | None = None
    coefficients: dict[str, Any] = {}
    data_hash: str | None = None
    settings: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class Manifest(BaseModel):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    omnisdk_version: str = __version__
    backbone: BackboneSpec
    plugins: list[PluginEntry]
    fingerprint: str = ""
    dtype: str = "float32"
    lineage: Lineage = Lineage()


def fingerprint(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order: the weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda kv: kv[0]):
        update_fingerprint(digest, name, tensor)
    return digest.hexdigest()


def update_fingerprint(digest: Any, name: str, tensor: torch.Tensor) -> None:
    """Add one tensor to a running fingerprint; callers feed tensors in name order (streaming writers)."""
    t = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().data)


# safetensors dtype codes -> torch dtypes (str() of one is what `update_fingerprint` writes).
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def read_safetensors_header(fd: int, path: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """(where the tensor data starts, {name: {"dtype", "shape", "data_offsets"}}) of a safetensors
    file open as `fd`, checking that every tensor lies inside the file."""
    size = os.fstat(fd).st_size
    try:
        (length,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        if length > size - 8:
            raise ValueError(f"its header claims {length} bytes")
        header = json.loads(os.pread(fd, length, 8))
        header.pop("__metadata__", None)
        start = 8 + length
        for name, entry in header.items():
            if entry["dtype"] not in SAFETENSORS_DTYPES:
                raise ValueError(f"tensor '{name}' has an unknown dtype {entry['dtype']}")
            if start + entry["data_offsets"][1] > size:
                raise CheckpointError(f"{path} is truncated: tensor '{name}' ends past the end of the file")
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a safetensors file: {exc}") from exc
    return start, header


def weights_fingerprint(path: Path, chunk_bytes: int = 8 << 20) -> str:
    """The fingerprint of a safetensors file, hashed straight from its bytes.

    Equal to `fingerprint` of its tensors: the header gives each tensor's dtype, shape and byte range,
    and the file stores the bytes `update_fingerprint` hashes (little-endian, contiguous). The file is
    read in chunks into one reused buffer (no tensor is built and the process's memory grows by the
    buffer only), and file reads and hashlib release the GIL, so threads can hash several files at once.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        start, header = read_safetensors_header(fd, path)
        digest, buffer = hashlib.sha256(), memoryview(bytearray(chunk_bytes))
        for name in sorted(header):
            entry = header[name]
            begin, end = (start + offset for offset in entry["data_offsets"])
            digest.update(f"{name}|{SAFETENSORS_DTYPES[entry['dtype']]}|{tuple(entry['shape'])}\n".encode())
            while begin < end:
                got = os.preadv(fd, [buffer[: min(chunk_bytes, end - begin)]], begin)
                if not got:
                    raise CheckpointError(f"{path} shrank while it was read")
                digest.update(buffer[:got])
                begin += got
    finally:
        os.close(fd)
    return digest.hexdigest()


def save_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write tensors to safetensors atomically, un-sharing tied storage that the format forbids."""
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    out = {}
    for name in sorted(state):
        t = state[name].detach().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[name] = t.clone() if key in seen else t
        seen.add(key)
    atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata={"format": "pt"}))


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = directory / WEIGHTS
    if not path.exists():
        refuse_pickles(directory)
        raise CheckpointError(f"{directory} has no {WEIGHTS}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError on a damaged file
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def read_manifest(directory: Path) -> Manifest:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    path = directory / MANIFEST
    if not path.exists():
        refuse_pickles(directory)
        hint = " (it looks like a Hugging Face model: build an omnisdk model from it with `omnisdk init --backbone DIR`)" if (directory / "config.json").exists() else ""
        raise CheckpointError(f"{directory} is not an omnisdk checkpoint: no {MANIFEST}{hint}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an omnisdk manifest (format={data.get('format')!r})")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {data['format_version']}; this omnisdk ({__version__}) reads up to "
            f"{FORMAT_VERSION}: upgrade omnisdk"
        )
    return Manifest.model_validate(data)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    text = manifest.model_dump_json(indent=2)
    atomic_write(directory / MANIFEST, lambda tmp: Path(tmp).write_text(text))


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: a kill never leaves half a file.
    A full, over-quota or read-only filesystem is a one-line WriteError naming `path`; the old file is intact."""
    from omnisdk.errors import WriteError

    try:
        _write_then_rename(path, write)
    except OSError as exc:
        if exc.errno not in WriteError._HINTS:
            raise
        raise WriteError.of(exc, f"writing {path} (its previous content is intact)") from exc


def _write_then_rename(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        kill_point("atomic.rename")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
