"""What Ray runs for `omnisdk index --engine ray`: decode tasks and the embedding actor.

Imported inside Ray workers (and never by `import omnisdk`); it does not import ray itself.

- `decode_files` (a task over a batch of files): hashes each file, skips the decoding of content the
  collection already holds (the driver settles it as the local indexer does), chunks the rest with
  the model's plugin and prepares each chunk (`OmniModel.prepare`, role "document"). A prepared row
  travels as safetensors bytes; a plugin whose batches cannot be cut into rows sends its chunks
  unprepared and the actor prepares them.
- `Embedder` (an actor class): collates prepared rows by modality and runs the model on them, on a
  GPU when the actor has one.

One output row per chunk, or one per file that needs no embedding ("read", "chunk" failures and
"known" content): the columns of `ROW`.
"""
from __future__ import annotations

import json
import os
import signal
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

#: the columns every row carries between the stages and to the driver
ROW = ("path", "kind", "sha256", "index", "chunks", "meta", "prepared", "cause", "vector")
#: kinds of row: a chunk (embedded, or failed with a cause), or a whole file's outcome
CHUNK, READ_FAILED, CHUNK_FAILED, KNOWN = "chunk", "read", "chunkfail", "known"


@lru_cache(maxsize=2)
def _model(model_dir: str, precision: str, device: str | None = None):
    """One model per worker process: Ray reuses a worker for many tasks, so it loads once."""
    from omnisdk.model import OmniModel

    return OmniModel.load(model_dir, device=device, precision=precision)  # type: ignore[arg-type]


@lru_cache(maxsize=2)
def _known(ref: Any) -> frozenset[bytes]:
    import ray

    return frozenset(ray.get(ref).tolist())


def _row(path: str, kind: str, **fields: Any) -> dict[str, Any]:
    row = {"path": path, "kind": kind, "sha256": "", "index": -1, "chunks": 0, "meta": "", "prepared": b"",
           "cause": "", "vector": b""}
    row.update(fields)
    return row


def decode_files(batch: dict[str, np.ndarray], *, model_dir: str, precision: str, known: Any,
                 batch_size: int) -> dict[str, list]:
    """A Ray Data task: files (path, modality) in, one row per chunk (or per settled file) out."""
    from omnisdk.search.walk import file_sha256

    rows: list[dict[str, Any]] = []
    skip = _known(known)
    for path, modality in zip(batch["path"].tolist(), batch["modality"].tolist()):
        try:
            sha = file_sha256(Path(path))
        except OSError as exc:
            from omnisdk.search.indexer import read_error

            rows.append(_row(path, READ_FAILED, cause=read_error(path, exc).cause))
            continue
        if sha.encode() in skip:  # stored already, here or under another path: the driver settles it
            rows.append(_row(path, KNOWN, sha256=sha))
            continue
        rows.extend(_chunk_rows(_model(model_dir, precision, "cpu"), path, modality, sha, batch_size))
    return {name: [r[name] for r in rows] for name in ROW}


def _chunk_rows(model, path: str, modality: str, sha: str, batch_size: int) -> list[dict[str, Any]]:
    """The file's chunks, prepared; the chunking failure as one row, the way the local indexer words it."""
    from omnisdk.items import Item
    from omnisdk.search.indexer import chunk_cause, nothing_to_embed

    try:
        chunks = model.plugins[modality].chunk(Item.of_file(path, modality))
    except Exception as exc:  # an unreadable file: this one fails, the run goes on
        return [_row(path, CHUNK_FAILED, sha256=sha, cause=chunk_cause(exc))]
    if not chunks:
        return [_row(path, CHUNK_FAILED, sha256=sha, cause=nothing_to_embed(modality))]
    rows = []
    for start in range(0, len(chunks), batch_size):
        part = chunks[start : start + batch_size]
        prepared, causes = _prepare(model, modality, part)
        for k, item in enumerate(part):
            meta = json.dumps({"modality": modality, "locator": item.locator.to_dict() if item.locator else None,
                               "text": item.text})
            rows.append(_row(path, CHUNK, sha256=sha, index=start + k, chunks=len(chunks), meta=meta,
                             prepared=prepared.get(k, b""), cause=causes.get(k, "")))
    return rows


def _prepare(model, modality: str, items: list) -> tuple[dict[int, bytes], dict[int, str]]:
    """Prepared rows as bytes by position, and the cause of each item that failed (as `encode` words them).

    A plugin whose batch cannot be cut into storable rows gets no bytes and no cause: the actor
    prepares those items itself."""
    from omnisdk.batching import is_splittable
    from omnisdk.prepared.store import NotStorable, row_to_bytes

    try:
        prepared = model.prepare(modality, items, role="document", to_device=False)
    except Exception as exc:  # a plugin bug must still cost only these chunks
        return {}, {k: f"preprocessing failed: {exc}" for k in range(len(items))}
    causes = dict(prepared.errors)
    if not prepared.ok:
        return {}, causes
    if prepared.batch is None or not is_splittable(prepared.batch):
        return {}, causes
    try:
        rows = model.plugins[modality].split_rows(prepared.batch, len(prepared.ok))
        return {k: row_to_bytes(row) for k, row in zip(prepared.ok, rows)}, causes
    except (NotStorable, ValueError):
        return {}, causes


class Embedder:
    """A Ray Data actor: prepared chunks in, float32 vectors (as bytes) out; failed chunks pass through.

    `fault_file` is for tests: the first actor that claims it (an atomic rename) SIGKILLs its own
    process before its second batch, a real crash with a batch in flight that Ray must retry.
    """

    def __init__(self, model_dir: str, precision: str, batch_size: int, aspects: bool, fault_file: str | None = None):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = _model(model_dir, precision, device)
        self.batch_size = batch_size
        self.aspects = aspects
        self.fault_file = fault_file
        self.batches = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        self.batches += 1
        if self.fault_file and self.batches == 2 and _claim(self.fault_file):
            os.kill(os.getpid(), signal.SIGKILL)
        rows = [{name: batch[name][i] for name in ROW} for i in range(len(batch["path"]))]
        todo: dict[str, list[int]] = {}
        raw: list[int] = []
        for i, row in enumerate(rows):
            row["vector"] = b""
            if row["kind"] != CHUNK or row["cause"]:
                continue
            if len(row["prepared"]):
                todo.setdefault(json.loads(row["meta"])["modality"], []).append(i)
            else:
                raw.append(i)
        for modality, indices in todo.items():
            for start in range(0, len(indices), self.batch_size):
                self._forward(modality, [rows[i] for i in indices[start : start + self.batch_size]])
        if raw:
            self._encode([rows[i] for i in raw])
        for row in rows:
            row["prepared"] = b""  # spent: the driver needs the vector only
        return {name: [r[name] for r in rows] for name in ROW}

    def _forward(self, modality: str, rows: list[dict[str, Any]]) -> None:
        import torch

        from omnisdk.model import _to_device
        from omnisdk.prepared.store import row_from_bytes

        model = self.model
        try:
            batch = model.plugins[modality].collate_rows([row_from_bytes(bytes(r["prepared"])) for r in rows], model.runtime)
            with torch.inference_mode(), model.inference_precision():
                forward = model.forward_aspects if self.aspects else model.forward_batch
                vectors = forward(modality, _to_device(batch, model.device), "document").float().cpu().numpy()
        except Exception as exc:  # a plugin bug on this batch: its chunks fail, the run goes on
            for row in rows:
                row["cause"] = f"{type(exc).__name__}: {exc}"
            return
        for row, vector in zip(rows, vectors):
            _set_vector(row, vector)

    def _encode(self, rows: list[dict[str, Any]]) -> None:
        """Chunks the decode task could not send prepared: `encode` prepares and embeds them here."""
        from omnisdk.items import Item, Locator

        items = []
        for row in rows:
            meta = json.loads(row["meta"])
            items.append(Item(modality=meta["modality"], text=meta["text"], path=Path(row["path"]),
                              locator=Locator.from_dict(meta["locator"])))
        vectors, failures = self.model.encode(items, batch_size=self.batch_size, role="document", errors="ignore",
                                              return_errors=True, show_progress=False,
                                              **({"aspects": True} if self.aspects else {}))
        causes = {f.index: f.cause for f in failures}
        for k, row in enumerate(rows):
            if k in causes:
                row["cause"] = causes[k]
            else:
                _set_vector(row, vectors[k])


def _set_vector(row: dict[str, Any], vector: np.ndarray) -> None:
    if np.isfinite(vector).all():
        row["vector"] = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
    else:  # extreme input can overflow to NaN: the same cause `encode` gives
        row["cause"] = "the model gave a non-finite vector (NaN or Inf): the input's values are out of range"


def _claim(path: str) -> bool:
    try:
        os.rename(path, path + ".claimed")
        return True
    except OSError:
        return False
