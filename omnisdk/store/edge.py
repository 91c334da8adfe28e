"""The embedded default: Qdrant Edge (`qdrant-edge-py`, import `qdrant_edge`), the Qdrant engine in-process.

Layout under the store directory (default `./.omnisdk`):

    ROOT/NAME/collection.json   CollectionMeta (fingerprint, dim, distance, model path, versions)
    ROOT/NAME/shard/            the Edge shard: segments and its write-ahead log
    ROOT/NAME/.lock             held (flock) while this process has the collection open
    ROOT/NAME/errors.jsonl      the indexer's failures of its last run

`collection.json` is written last when a collection is created, so it marks a complete one.

Edge refuses a second open of an open shard, but in 0.9 the refused `EdgeShard.load` has already
touched the segments' payload-index files, and the first handle's next flush then fails ("Tracker
journal ... is shorter than expected"). The `.lock` file turns that into a clear StoreLockedError
before Edge is asked. One process at a time per collection: to search while indexing, share one
EdgeStore in the process, or use a Qdrant server (qdrant-client backend).

Every update goes through Edge's WAL, so it survives a kill of the process once `update` returns.

A full disk: Edge writes through memory maps of sparse files, and a write to a page the disk cannot
back kills the process with SIGBUS (measured with Edge 0.9 on a tmpfs with 1 MiB free: already
while opening a shard, before any update; no error, no cleanup). So opening a shard, and every
write, first checks that the disk has room for it plus ROOM_MARGIN, and refuses with a WriteError
("no space left on device") otherwise; what was written before stays consistent.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from omnisdk.checkpoint import atomic_write
from omnisdk.errors import WriteError
from omnisdk.store.base import (
    ASPECTS,
    INDEXED_FIELDS,
    POOLED,
    CollectionMeta,
    CollectionNotFoundError,
    Hit,
    StoredPoint,
    StoreError,
    StoreLockedError,
    as_vector,
    check_name,
    default_using,
    modality_list,
)

META_FILE = "collection.json"
SHARD_DIR = "shard"
LOCK_FILE = ".lock"

log = logging.getLogger(__name__)
#: free space every Edge write leaves untouched (segment files, payload indexes and WAL pages grow in steps)
ROOM_MARGIN = 16 << 20


def _edge():
    try:
        import qdrant_edge
    except ImportError as exc:
        raise StoreError("the embedded store needs qdrant-edge-py: pip install 'omnisdk[search]'") from exc
    return qdrant_edge


class EdgeStore:
    """Collections as Qdrant Edge shards in one directory; see the module docstring."""

    def __init__(self, root: str | Path = ".omnisdk"):
        self.root = Path(root).absolute()
        self.location = str(self.root)
        self._shards: dict[str, Any] = {}
        self._locks: dict[str, Any] = {}
        self._metas: dict[str, CollectionMeta] = {}
        self._copies: dict[str, Path] = {}  # collection -> a private copy of a shard on a read-only filesystem

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EdgeStore({self.location!r})"

    # -- collections ----------------------------------------------------------------------------------
    def local_dir(self, collection: str) -> Path:
        return self.root / check_name(collection)

    def list_collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META_FILE).is_file())

    def collection_exists(self, collection: str) -> bool:
        return (self.local_dir(collection) / META_FILE).is_file()

    def create_collection(self, collection: str, meta: CollectionMeta) -> None:
        edge = _edge()
        directory = self.local_dir(collection)
        if (directory / META_FILE).exists():
            raise StoreError(f"collection '{collection}' already exists in {self.location}")
        directory.mkdir(parents=True, exist_ok=True)
        self._lock(collection)
        shard_dir = directory / SHARD_DIR
        if shard_dir.exists():  # a creation killed before its metadata was written: nothing to keep
            shutil.rmtree(shard_dir)
        distance = {"cosine": edge.Distance.Cosine, "dot": edge.Distance.Dot, "euclid": edge.Distance.Euclid}[meta.distance]
        vectors = edge.EdgeVectorParams(meta.dim, distance)
        if meta.embedding == "agff":  # the pooled vector for plain clients, the aspects as a MaxSim multivector
            multi = edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
            vectors = {POOLED: vectors, ASPECTS: edge.EdgeVectorParams(meta.dim, distance, multivector_config=multi)}
        self._ensure_room(collection, 0)
        shard = edge.EdgeShard.create(str(shard_dir), edge.EdgeConfig(vectors=vectors))
        for name in INDEXED_FIELDS:
            shard.update(edge.UpdateOperation.create_field_index(name, edge.PayloadSchemaType.Keyword))
        shard.flush()
        self._shards[collection] = shard
        text = meta.model_dump_json(indent=2)
        atomic_write(directory / META_FILE, lambda tmp: Path(tmp).write_text(text))
        self._metas[collection] = meta

    def get_meta(self, collection: str) -> CollectionMeta:
        if collection in self._metas:
            return self._metas[collection]
        path = self.local_dir(collection) / META_FILE
        if not path.is_file():
            known = ", ".join(self.list_collections()) or "none"
            raise CollectionNotFoundError(f"no collection '{collection}' in {self.location} (collections: {known})")
        try:
            meta = CollectionMeta.model_validate_json(path.read_text())
        except ValueError as exc:
            raise StoreError(f"{path} is not valid collection metadata: {exc}") from exc
        self._metas[collection] = meta
        return meta

    def update_meta(self, collection: str, meta: CollectionMeta) -> None:
        path = self.local_dir(collection) / META_FILE
        if not path.is_file():
            raise CollectionNotFoundError(f"no collection '{collection}' in {self.location}")
        text = meta.model_dump_json(indent=2)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))  # a kill leaves the old or the new file
        self._metas[collection] = meta

    def delete_collection(self, collection: str) -> None:
        directory = self.local_dir(collection)
        if not directory.exists():
            return
        self._lock(collection)
        shard = self._shards.pop(collection, None)
        if shard is not None:
            shard.close()
        self._metas.pop(collection, None)
        (directory / META_FILE).unlink(missing_ok=True)  # first: a half-deleted collection no longer counts
        shutil.rmtree(directory / SHARD_DIR, ignore_errors=True)
        self._unlock(collection)
        shutil.rmtree(directory, ignore_errors=True)

    # -- points -----------------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Iterable[StoredPoint], batch_size: int = 256) -> int:
        edge = _edge()
        written, batch, need = 0, [], 0
        for point in points:
            vector = as_vector(point.vector)
            batch.append(edge.Point(point.id, vector, point.payload))
            need += _point_bytes(vector, point.payload)
            if len(batch) >= batch_size:
                self._shard(collection, write=True, need=need).update(edge.UpdateOperation.upsert_points(batch))
                written, batch, need = written + len(batch), [], 0
        if batch:
            self._shard(collection, write=True, need=need).update(edge.UpdateOperation.upsert_points(batch))
            written += len(batch)
        return written

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        edge = _edge()
        ids = list(ids)
        for start in range(0, len(ids), 1024):
            self._shard(collection, write=True).update(edge.UpdateOperation.delete_points(ids[start : start + 1024]))

    def delete_by_source(self, collection: str, sources: Sequence[str]) -> None:
        edge = _edge()
        sources = list(sources)
        for start in range(0, len(sources), 256):
            condition = edge.FieldCondition("source", match=edge.MatchAny(sources[start : start + 256]))
            self._shard(collection, write=True).update(edge.UpdateOperation.delete_points_by_filter(edge.Filter(must=[condition])))

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self._shard(collection, write=True).update(_edge().UpdateOperation.set_payload(list(ids), payload))

    def query(
        self, collection: str, vector: Any, limit: int = 10, modalities: Sequence[str] | None = None, *, exact: bool = False,
        fields: Sequence[str] | None = None,
        using: str | None = None, with_vectors: bool = False,
    ) -> list[Hit]:
        edge = _edge()
        shard = self._shard(collection)
        name = default_using(self.get_meta(collection), using)
        nearest = edge.Query.Nearest(as_vector(vector), using=name) if name else edge.Query.Nearest(as_vector(vector))
        request = edge.QueryRequest(
            limit=int(limit), query=nearest, filter=_modality_filter(modalities),
            with_payload=True if fields is None else edge.PayloadSelector.Include(list(fields)),
            with_vector=with_vectors or None, params=edge.SearchParams(exact=True) if exact else None,
        )
        return [Hit(str(p.id), float(p.score), p.payload or {}, p.vector if with_vectors else None) for p in shard.query(request)]

    def scroll(self, collection: str, *, with_vectors: bool = False, page_size: int = 1024) -> Iterator[StoredPoint]:
        edge = _edge()
        shard, offset = self._shard(collection), None
        while True:
            records, offset = shard.scroll(
                edge.ScrollRequest(offset=offset, limit=page_size, with_payload=True, with_vector=with_vectors)
            )
            for record in records:
                yield StoredPoint(str(record.id), record.vector if with_vectors else None, record.payload or {})
            if offset is None:
                return

    def retrieve(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        records = self._shard(collection).retrieve(list(ids), True, with_vectors)
        return [StoredPoint(str(r.id), r.vector if with_vectors else None, r.payload or {}) for r in records]

    def count(self, collection: str, modalities: Sequence[str] | None = None) -> int:
        edge = _edge()
        shard = self._shard(collection)
        if not modalities:
            # The shard's own tally: microseconds, where an exact count walks every point (6 ms at 100k,
            # paid by every search). It equals the exact count after upserts, re-upserts, deletes and
            # optimize (tests/test_store.py), as Edge applies each update whole before returning.
            return int(shard.info().points_count)
        return int(shard.count(edge.CountRequest(exact=True, filter=_modality_filter(modalities))))

    def flush(self, collection: str) -> None:
        if collection in self._shards:
            try:
                self._shards[collection].flush()
            except Exception as exc:  # Edge's own error: "... No space left on device (os error 28)"
                code = next((c for c in WriteError._HINTS if f"(os error {c})" in str(exc)), None)
                if code is None:
                    raise
                raise WriteError.of(OSError(code, os.strerror(code)), f"flushing collection '{collection}' in "
                                    f"{self.location} (every update is in its write-ahead log)") from exc

    def optimize(self, collection: str) -> None:
        self._shard(collection, write=True).optimize()

    def close(self) -> None:
        errors = []
        for name in list(self._shards):
            shard = self._shards.pop(name)
            try:
                shard.flush()
                shard.close()
            except Exception as exc:  # keep closing the others; the WAL still holds every update
                errors.append(f"{name}: {exc}")
        for name in list(self._locks):
            self._unlock(name)
        for copy in self._copies.values():
            shutil.rmtree(copy, ignore_errors=True)
        self._copies.clear()
        self._metas.clear()
        if errors:
            raise StoreError(f"closing {self.location} failed for {'; '.join(errors)}")

    # -- internals ----------------------------------------------------------------------------------------
    def _shard(self, collection: str, *, write: bool = False, need: int = 0):
        shard = self._shards.get(collection)
        if shard is None:
            shard = self._load(collection)
        if write and collection in self._copies:
            raise WriteError(f"collection '{collection}' in {self.location} is on a read-only filesystem: it can be "
                             "searched, not changed; remount it read-write, or index into a store elsewhere")
        if write:
            self._ensure_room(collection, need)
        return shard

    def _ensure_room(self, collection: str, need: int, doing: str = "writing to") -> None:
        """Refuse a write the disk may not hold (see the module docstring: Edge would die of SIGBUS)."""
        directory = self.local_dir(collection)
        try:
            stat = os.statvfs(directory)
        except OSError:  # gone: Edge's own error says so
            return
        free, wanted = stat.f_bavail * stat.f_frsize, need + ROOM_MARGIN
        if free < wanted:
            raise WriteError.of(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                f"{doing} collection '{collection}' ({directory}: {free / 2**20:.1f} MiB free, "
                                f"{wanted / 2**20:.1f} MiB wanted; the points written before are intact)")

    def _load(self, collection: str):
        meta = self.get_meta(collection)  # raises CollectionNotFoundError
        self._lock(collection)
        edge = _edge()
        shard_dir = self.local_dir(collection) / SHARD_DIR
        if not _read_only(shard_dir):  # Edge writes to its files as it opens them
            try:
                self._ensure_room(collection, 0, "opening")
            except WriteError:
                self._unlock(collection)
                raise
        try:
            if _read_only(shard_dir):
                shard_dir = self._private_copy(collection, shard_dir)
            shard = edge.EdgeShard.load(str(shard_dir))
        except Exception as exc:
            self._unlock(collection)
            raise StoreError(f"cannot open collection '{collection}' ({shard_dir}): {exc}") from exc
        self._shards[collection] = shard
        self._metas[collection] = meta
        return shard

    def _private_copy(self, collection: str, shard_dir: Path) -> Path:
        """Edge maps a shard's files read-write, so it cannot open one on a read-only filesystem: search a copy
        in the temporary directory (removed at close), and refuse writes, which the copy would silently lose."""
        copy = Path(tempfile.mkdtemp(prefix=f"omnisdk-{collection}-"))
        self._copies[collection] = copy
        log.warning("collection '%s' is on a read-only filesystem: searching a temporary copy of it (%s)", collection, copy)
        shutil.copytree(shard_dir, copy / SHARD_DIR)
        return copy / SHARD_DIR

    def _lock(self, collection: str) -> None:
        if collection in self._locks:
            return
        path = self.local_dir(collection) / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+")
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            return  # a read-only filesystem: no writer can come, and each reader opens its own copy (_private_copy)
        try:
            import fcntl
        except ImportError:  # not POSIX: Edge's own refusal is the only guard
            self._locks[collection] = handle
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise StoreLockedError(
                f"collection '{collection}' in {self.location} is open in another process{f' (pid {holder})' if holder else ''} "
                "or another store handle: the embedded store serves one at a time. Close the other, share one store "
                "object, or use a Qdrant server (--store http://HOST:6333)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._locks[collection] = handle

    def _unlock(self, collection: str) -> None:
        handle = self._locks.pop(collection, None)
        if handle is not None:
            handle.close()  # closing the descriptor releases the flock


def _point_bytes(vector: Any, payload: dict[str, Any]) -> int:
    """About what one point takes on disk, times 4: the WAL's copy, vector and payload storage, indexes."""
    floats = sum(len(v) if not v or not isinstance(v[0], list) else len(v) * len(v[0])
                 for v in (vector.values() if isinstance(vector, dict) else [vector]))
    return 4 * (4 * floats + len(json.dumps(payload, default=str)) + 64)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:  # missing: Edge's own error says so
        return False


def _modality_filter(modalities: Sequence[str] | None):
    modalities = modality_list(modalities)
    if not modalities:
        return None
    edge = _edge()
    return edge.Filter(must=[edge.FieldCondition("modality", match=edge.MatchAny(list(modalities)))])


