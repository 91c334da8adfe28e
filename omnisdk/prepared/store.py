"""On-disk store of prepared rows: content-addressed safetensors shards, verified before use.

    ROOT/<plugin>-<namespace>/<sha256 of the file>.safetensors

A namespace is everything preprocessing depends on besides the item (plugin, version, configs,
tokenizer); a shard holds rows keyed by item. A shard's name is the sha256 of its bytes, so a shard
is checked against its name the first time a process reads from it: a flipped byte, a truncated
write or a foreign file fails the check, the shard is deleted, and its items are prepared again.
Shards are written through a temporary file and renamed, so a kill never leaves half a shard under
a valid name. Rows are read through safetensors' memory map: the page cache holds them, not the heap.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from omnisdk.batching import Row

log = logging.getLogger(__name__)

FORMAT = "omnisdk-prepared"
FORMAT_VERSION = "1"
# Rows wait in memory until this many bytes are pending, then go to disk as one shard.
FLUSH_BYTES = 256 << 20
_STR, _NONE = ":str", ":none"


class NotStorable(TypeError):
    """A row holds a value the store cannot write (only tensors, str and None are)."""


class ShardStore:
    """Rows by (namespace, key); written in shards, checked before the first read of each shard."""

    def __init__(self, root: str | Path, flush_bytes: int = FLUSH_BYTES):
        self.root = Path(root)
        self.flush_bytes = flush_bytes
        self._index: dict[str, dict[str, Path]] = {}  # namespace -> key -> shard
        # verified shards: their safetensors handle and each key's tensor names, grouped once
        self._open: dict[Path, tuple[Any, dict[str, list[str]]]] = {}
        self._pending: dict[str, dict[str, Row]] = {}
        self._pending_bytes = 0
        self.rebuilt: list[str] = []  # shards that failed their check and were removed

    # -- reading ------------------------------------------------------------------------------------
    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, Row]:
        """The rows of the keys that are stored; missing keys are simply absent from the result."""
        found: dict[str, Row] = {}
        pending = self._pending.get(namespace, {})
        index = self._namespace_index(namespace)
        for key in keys:
            if key in pending:
                found[key] = pending[key]
                continue
            shard = index.get(key)
            if shard is None:
                continue
            opened = self._verified(namespace, shard)
            if opened is not None:
                handle, names = opened
                found[key] = _read_row(handle, key, names.get(key, []))
        return found

    def _namespace_index(self, namespace: str) -> dict[str, Path]:
        if namespace not in self._index:
            index: dict[str, Path] = {}
            directory = self.root / namespace
            for shard in sorted(directory.glob("*.safetensors")) if directory.is_dir() else []:
                for key in _shard_keys(shard):
                    index.setdefault(key, shard)
            self._index[namespace] = index
        return self._index[namespace]

    def _verified(self, namespace: str, shard: Path):
        if shard in self._open:
            return self._open[shard]
        from safetensors import safe_open

        problem = _check(shard)
        if problem is None:
            try:
                handle = safe_open(str(shard), framework="pt")
                names: dict[str, list[str]] = {}
                for name in handle.keys():
                    names.setdefault(name.split("/", 1)[0], []).append(name)
                self._open[shard] = (handle, names)
                return self._open[shard]
            except Exception as exc:  # a header that hashes right but does not parse: not ours
                problem = f"unreadable ({exc})"
        log.warning("prepared-input cache: %s failed its check (%s); removing it, its items are prepared again",
                    shard, problem)
        self.rebuilt.append(str(shard))
        shard.unlink(missing_ok=True)
        index = self._index.get(namespace, {})
        for key in [k for k, s in index.items() if s == shard]:
            del index[key]
        return None

    # -- writing ------------------------------------------------------------------------------------
    def put(self, namespace: str, rows: dict[str, Row]) -> None:
        """Keep rows (in memory at first); they reach disk when enough are pending, or at `flush`."""
        for key, row in rows.items():
            self._pending.setdefault(namespace, {})[key] = row
            self._pending_bytes += _row_bytes(row)
        if self._pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write every pending row: one shard per namespace."""
        for namespace, rows in self._pending.items():
            if rows:
                shard = _write_shard(self.root / namespace, rows)
                index = self._namespace_index(namespace)
                for key in rows:
                    index.setdefault(key, shard)
        self._pending.clear()
        self._pending_bytes = 0

    def namespaces(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []


def _check(shard: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(shard, "rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
    except OSError as exc:
        return str(exc)
    if digest.hexdigest() != shard.stem:
        return "its content does not match its name"
    return None


def _shard_keys(shard: Path) -> list[str]:
    from omnisdk.checkpoint import read_safetensors_header

    try:
        fd = os.open(shard, os.O_RDONLY)
        try:
            _, header = read_safetensors_header(fd, shard)
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - a damaged header: the check will remove the shard on first use
        return [_unreadable_key(shard)]
    return sorted({name.split("/", 1)[0] for name in header if name != "__metadata__"})


def _unreadable_key(shard: Path) -> str:
    return f"unreadable:{shard.name}"


def row_to_bytes(row: Row) -> bytes:
    """One prepared row as safetensors bytes (how a row travels between processes, e.g. Ray workers)."""
    from safetensors.torch import save

    check_storable(row)
    return save(_tensors_of({"row": row}))


def row_from_bytes(data: bytes) -> Row:
    """The row `row_to_bytes` wrote."""
    from safetensors.torch import load

    tensors = load(data)
    return _read_row(_Loaded(tensors), "row", list(tensors))


class _Loaded:
    """A dict of loaded tensors read through the `get_tensor` of a safetensors handle."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.get_tensor = tensors.__getitem__


def _read_row(handle, key: str, names: list[str]) -> Row:
    row: Row = {}
    prefix = key + "/"
    for name in names:
        field = name[len(prefix):]
        tensor = handle.get_tensor(name)
        if field.endswith(_STR):
            row[field[: -len(_STR)]] = bytes(tensor.numpy()).decode("utf-8")
        elif field.endswith(_NONE):
            row[field[: -len(_NONE)]] = None
        else:
            row[field] = tensor
    return row


def check_storable(row: Row) -> None:
    for field, value in row.items():
        if "/" in field or field.endswith((_STR, _NONE)):
            raise NotStorable(f"field name '{field}' cannot be stored")
        if not isinstance(value, (torch.Tensor, str)) and value is not None:
            raise NotStorable(f"field '{field}' holds a {type(value).__name__}")


def _row_bytes(row: Row) -> int:
    return sum(v.numel() * v.element_size() if isinstance(v, torch.Tensor) else len(str(v)) for v in row.values())


def _tensors_of(rows: dict[str, Row]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for key, row in rows.items():
        for field, value in row.items():
            if isinstance(value, str):
                tensors[f"{key}/{field}{_STR}"] = torch.tensor(list(value.encode("utf-8")), dtype=torch.uint8)
            elif value is None:
                tensors[f"{key}/{field}{_NONE}"] = torch.zeros(0, dtype=torch.uint8)
            else:
                tensors[f"{key}/{field}"] = value.detach().cpu().contiguous()
    return tensors


def _write_shard(directory: Path, rows: dict[str, Row]) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".shard.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_tensors_of(rows), tmp, metadata={"format": FORMAT, "format_version": FORMAT_VERSION})
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        final = directory / f"{digest}.safetensors"
        os.replace(tmp, final)
        return final
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
