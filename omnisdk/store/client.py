"""The qdrant-client backend: a Qdrant server or cluster (the way past one machine), or its local modes.

- `http(s)://HOST:PORT`: a server; the API key comes from the QDRANT_API_KEY environment variable.
- `:memory:`: qdrant-client's in-process mode, for tests and congruence checks.
- `local:PATH`: qdrant-client's on-disk local mode (brute force in Python: fine for small sets).

Collection metadata lives in Qdrant's own collection metadata (`metadata={"omnisdk": {...}}`,
servers from 1.16 and every local mode). Where the server drops it (older servers), it goes to a
sidecar collection `omnisdk__meta` instead: one point per collection, id uuid5(name), a 1-d dummy
vector and the metadata as payload. Reading tries the collection's metadata first, then the sidecar.

Payload indexes (keyword: modality, source, sha256) are created on servers; the local modes ignore
them (qdrant-client warns), so they are skipped there.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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

SIDECAR = "omnisdk__meta"
_META_KEY = "omnisdk"
_SIDECAR_NS = uuid.UUID("0b5f1d2e-6c8a-5e43-9a1f-7d2c4b6e8f10")


def _qdrant():
    try:
        from qdrant_client import QdrantClient, models
    except ImportError as exc:
        raise StoreError("this store needs qdrant-client: pip install 'omnisdk[search]'") from exc
    return QdrantClient, models


class ClientStore:
    """A Store over a `qdrant_client.QdrantClient`; build it with `connect(spec)` or pass a client."""

    def __init__(self, client: Any, location: str, *, local_path: str | Path | None = None, remote: bool = True):
        self.client = client
        self.location = location
        self.local_path = Path(local_path).absolute() if local_path else None
        self.remote = remote
        self._metas: dict[str, CollectionMeta] = {}

    @classmethod
    def connect(cls, spec: str) -> ClientStore:
        """`:memory:`, `local:PATH` or an http(s) URL (API key from QDRANT_API_KEY)."""
        QdrantClient, _ = _qdrant()
        if spec == ":memory:":
            return cls(QdrantClient(location=":memory:"), ":memory:", remote=False)
        if spec.startswith("local:"):
            path = Path(spec[len("local:") :]).absolute()
            try:
                client = QdrantClient(path=str(path))
            except RuntimeError as exc:  # portalocker: "already accessed by another instance"
                raise StoreLockedError(f"the qdrant-client store in {path} is open in another process or handle: {exc}") from exc
            return cls(client, f"local:{path}", local_path=path, remote=False)
        if spec.startswith(("http://", "https://")):
            return cls(QdrantClient(url=spec, api_key=os.environ.get("QDRANT_API_KEY") or None), spec, remote=True)
        raise StoreError(f"'{spec}' is not a qdrant-client store: use :memory:, local:PATH or http(s)://HOST:PORT")

    def __enter__(self) -> ClientStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClientStore({self.location!r})"

    # -- collections ----------------------------------------------------------------------------------
    def local_dir(self, collection: str) -> Path | None:
        return self.local_path / "omnisdk" / check_name(collection) if self.local_path else None

    def list_collections(self) -> list[str]:
        names = [c.name for c in self._call("list collections", self.client.get_collections).collections]
        return sorted(n for n in names if n != SIDECAR)

    def collection_exists(self, collection: str) -> bool:
        return bool(self._call("check a collection", self.client.collection_exists, check_name(collection)))

    def create_collection(self, collection: str, meta: CollectionMeta) -> None:
        _, models = _qdrant()
        check_name(collection)
        if self.collection_exists(collection):
            raise StoreError(f"collection '{collection}' already exists in {self.location}")
        distance = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclid": models.Distance.EUCLID}[meta.distance]
        self._call(
            "create a collection", self.client.create_collection, collection,
            vectors_config=_vectors_config(models, meta, distance),
            metadata={_META_KEY: meta.model_dump()},
        )
        if self.remote:
            for name in INDEXED_FIELDS:
                self.client.create_payload_index(collection, name, models.PayloadSchemaType.KEYWORD, wait=True)
        if self._collection_metadata(collection) is None:  # a server without collection metadata
            self._write_sidecar(collection, meta)
        self._metas[collection] = meta

    def get_meta(self, collection: str) -> CollectionMeta:
        if collection in self._metas:
            return self._metas[collection]
        if not self.collection_exists(collection):
            known = ", ".join(self.list_collections()) or "none"
            raise CollectionNotFoundError(f"no collection '{collection}' in {self.location} (collections: {known})")
        data = self._collection_metadata(collection) or self._read_sidecar(collection)
        if data is None:
            raise StoreError(
                f"collection '{collection}' in {self.location} carries no omnisdk metadata (model fingerprint, "
                "dimension): it was not made by omnisdk. Index into another collection name"
            )
        meta = CollectionMeta.model_validate(data)
        self._metas[collection] = meta
        return meta

    def update_meta(self, collection: str, meta: CollectionMeta) -> None:
        self.get_meta(collection)  # raises CollectionNotFoundError
        if self._collection_metadata(collection) is not None:
            self._call("update collection metadata", self.client.update_collection, collection,
                       metadata={_META_KEY: meta.model_dump()})
        if self._collection_metadata(collection) is None:  # a server without collection metadata
            self._write_sidecar(collection, meta)
        self._metas[collection] = meta

    def delete_collection(self, collection: str) -> None:
        self._metas.pop(collection, None)
        if self.collection_exists(collection):
            self.client.delete_collection(collection)
        if self.collection_exists(SIDECAR):
            _, models = _qdrant()
            self.client.delete(SIDECAR, points_selector=models.PointIdsList(points=[_sidecar_id(collection)]), wait=True)

    # -- points -----------------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Iterable[StoredPoint], batch_size: int = 256) -> int:
        _, models = _qdrant()
        written, batch = 0, []
        for point in points:
            batch.append(models.PointStruct(id=point.id, vector=as_vector(point.vector), payload=point.payload))
            if len(batch) >= batch_size:
                self.client.upsert(collection, points=batch, wait=True)
                written, batch = written + len(batch), []
        if batch:
            self.client.upsert(collection, points=batch, wait=True)
            written += len(batch)
        return written

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        _, models = _qdrant()
        ids = list(ids)
        for start in range(0, len(ids), 1024):
            self.client.delete(collection, points_selector=models.PointIdsList(points=ids[start : start + 1024]), wait=True)

    def delete_by_source(self, collection: str, sources: Sequence[str]) -> None:
        _, models = _qdrant()
        sources = list(sources)
        for start in range(0, len(sources), 256):
            condition = models.FieldCondition(key="source", match=models.MatchAny(any=sources[start : start + 256]))
            selector = models.FilterSelector(filter=models.Filter(must=[condition]))
            self.client.delete(collection, points_selector=selector, wait=True)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        if ids:
            self.client.set_payload(collection, payload=payload, points=list(ids), wait=True)

    def query(
        self, collection: str, vector: Any, limit: int = 10, modalities: Sequence[str] | None = None, *, exact: bool = False,
        fields: Sequence[str] | None = None,
        using: str | None = None, with_vectors: bool = False,
    ) -> list[Hit]:
        _, models = _qdrant()
        response = self.client.query_points(
            collection, query=as_vector(vector), using=default_using(self.get_meta(collection), using), limit=int(limit),
            query_filter=_modality_filter(modalities), with_vectors=with_vectors,
            with_payload=True if fields is None else models.PayloadSelectorInclude(include=list(fields)),
            # the local modes are always exact (and warn when told so)
            search_params=models.SearchParams(exact=True) if exact and self.remote else None,
        )
        return [Hit(str(p.id), float(p.score), p.payload or {}, p.vector if with_vectors else None) for p in response.points]

    def scroll(self, collection: str, *, with_vectors: bool = False, page_size: int = 1024) -> Iterator[StoredPoint]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                collection, limit=page_size, offset=offset, with_payload=True, with_vectors=with_vectors
            )
            for record in records:
                yield StoredPoint(str(record.id), record.vector if with_vectors else None, record.payload or {})
            if offset is None:
                return

    def retrieve(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        records = self.client.retrieve(collection, ids=list(ids), with_payload=True, with_vectors=with_vectors)
        return [StoredPoint(str(r.id), r.vector if with_vectors else None, r.payload or {}) for r in records]

    def count(self, collection: str, modalities: Sequence[str] | None = None) -> int:
        return int(self.client.count(collection, count_filter=_modality_filter(modalities), exact=True).count)

    def flush(self, collection: str) -> None:
        """Writes are acknowledged with wait=True: nothing is pending here."""

    def optimize(self, collection: str) -> None:
        """The server runs its optimizers itself; the local modes have none."""

    def close(self) -> None:
        self._metas.clear()
        self.client.close()

    # -- internals ----------------------------------------------------------------------------------------
    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:  # connection refused, bad API key, server errors: one line naming the store
            raise StoreError(f"cannot {what} in {self.location}: {type(exc).__name__}: {exc}") from exc

    def _collection_metadata(self, collection: str) -> dict[str, Any] | None:
        info = self._call("read a collection", self.client.get_collection, collection)
        metadata = getattr(info.config, "metadata", None) or {}
        return metadata.get(_META_KEY)

    def _write_sidecar(self, collection: str, meta: CollectionMeta) -> None:
        _, models = _qdrant()
        if not self.collection_exists(SIDECAR):
            self.client.create_collection(SIDECAR, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT))
        point = models.PointStruct(id=_sidecar_id(collection), vector=[1.0], payload={"collection": collection, _META_KEY: meta.model_dump()})
        self.client.upsert(SIDECAR, points=[point], wait=True)

    def _read_sidecar(self, collection: str) -> dict[str, Any] | None:
        if not self.collection_exists(SIDECAR):
            return None
        found = self.client.retrieve(SIDECAR, ids=[_sidecar_id(collection)], with_payload=True)
        return (found[0].payload or {}).get(_META_KEY) if found else None


def _sidecar_id(collection: str) -> str:
    return str(uuid.uuid5(_SIDECAR_NS, collection))


def _modality_filter(modalities: Sequence[str] | None):
    modalities = modality_list(modalities)
    if not modalities:
        return None
    _, models = _qdrant()
    return models.Filter(must=[models.FieldCondition(key="modality", match=models.MatchAny(any=list(modalities)))])


def _vectors_config(models, meta: CollectionMeta, distance):
    """One unnamed vector, or for AGFF the pooled vector plus the aspects as a MaxSim multivector."""
    single = models.VectorParams(size=meta.dim, distance=distance)
    if meta.embedding != "agff":
        return single
    multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    return {POOLED: single, ASPECTS: models.VectorParams(size=meta.dim, distance=distance, multivector_config=multi)}
