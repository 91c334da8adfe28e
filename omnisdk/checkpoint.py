"""The checkpoint directory: a JSON manifest with lineage, safetensors weights and tokenizer files.

    DIR/omnisdk.json       Manifest (format version, backbone, plugins, fingerprint, lineage)
    DIR/model.safetensors  every parameter: backbone.* and adapters.<modality>.*
    DIR/tokenizer/         the backbone tokenizer's own files
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from pydantic import BaseModel, Field

from omnisdk import __version__
from omnisdk.backbone import BackboneSpec, refuse_pickles
from omnisdk.errors import CheckpointError

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


def weights_fingerprint(path: Path) -> str:
    """The fingerprint of a safetensors file, read one tensor at a time to keep memory flat."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        names = sorted(fh.keys())
        return fingerprint((n, fh.get_tensor(n)) for n in names)


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
    """Write through a temporary file in the same directory, then rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
