"""The store contract: one Protocol that both backends implement, its records, metadata and errors."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict

from omnisdk import __version__
from omnisdk.errors import OmniError

Distance = Literal["cosine", "dot", "euclid"]
EmbeddingKind = Literal["single", "agff"]
#: An AGFF collection's named vectors: the pooled vector (plain clients) and the K aspect vectors
#: as a multivector compared by MaxSim (search prefetches with it, then rescores exactly).
POOLED, ASPECTS = "pooled", "aspects"
#: Payload fields with a keyword index where the backend supports one: the search filter and the
#: indexer's bookkeeping (delete by source, find a file's chunks by content) read them.
INDEXED_FIELDS = ("modality", "source", "sha256")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class StoreError(OmniError):
    """A store or collection cannot be opened, created or used as asked."""


class CollectionNotFoundError(StoreError):
    """The named collection does not exist in the store."""


class StoreLockedError(StoreError):
    """Another process (or another handle in this one) holds the collection open."""


class FingerprintMismatchError(StoreError):
    """The collection was indexed with another model than the one at hand."""


class EmbeddingKindMismatchError(StoreError):
    """The collection holds another kind of embedding (one vector, or AGFF aspect vectors) than the model makes."""


class CollectionMeta(BaseModel):
    """What a collection records about the vectors in it; written when it is created."""

    model_config = ConfigDict(extra="allow")

    format: Literal["omnisdk-collection"] = "omnisdk-collection"
    format_version: int = 1
    dim: int
    distance: Distance = "cosine"
    #: sha256 of the model weights that made the vectors (OmniModel.fingerprint).
    fingerprint: str
    #: the model directory used to index, so search can load it without being told.
    model_path: str | None = None
    omnisdk_version: str = __version__
    created_at: str = ""
    #: the roots indexed into it (absolute paths) -> {"rules": the walk rules used, "indexed_at": ...},
    #: recorded before a run writes anything, so the app knows what it may serve without a scroll.
    roots: dict[str, dict[str, Any]] = {}
    #: per-modality score statistics for the query-time modality correction (omnisdk.search.calibration),
    #: refreshed by the indexer; None until a run has written vectors.
    calibration: dict[str, Any] | None = None
    #: "single": one vector per point; "agff": named vectors POOLED and ASPECTS (K x dim multivector).
    embedding: EmbeddingKind = "single"
    #: K, the aspect vectors per point of an "agff" collection; 0 for "single".
    aspects: int = 0

    def model_post_init(self, _context: Any) -> None:
        if not self.created_at:
            self.created_at = now_iso()


@dataclass
class StoredPoint:
    """A point as written to or read from a store; `vector` is None when it was not asked for."""

    id: str
    #: a float sequence (list or numpy array); in an AGFF collection {POOLED: [dim], ASPECTS: [K][dim]}
    vector: Any = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    """One search result: the point's id, its similarity score and its payload."""

    id: str
    score: float
    payload: dict[str, Any]
    #: the point's vector(s), when the query asked for them (`with_vectors=True`)
    vector: Any = None


@runtime_checkable
class Store(Protocol):
    """A vector store holding named collections. Both backends implement it; `open_store` picks one.

    Every method takes the collection name first (as qdrant-client does). Ids are UUID strings.
    Writes are durable when the call returns (the Edge WAL, or the server's acknowledgement).
    """

    #: where the store lives, for messages: a directory, a URL or ":memory:".
    location: str

    def local_dir(self, collection: str) -> Path | None:
        """A directory on this machine that belongs to the collection (for logs), or None (remote, memory)."""

    def list_collections(self) -> list[str]: ...

    def collection_exists(self, collection: str) -> bool: ...

    def create_collection(self, collection: str, meta: CollectionMeta) -> None:
        """Create an empty collection of `meta.dim` vectors and record `meta` with it."""

    def get_meta(self, collection: str) -> CollectionMeta:
        """The collection's metadata; CollectionNotFoundError when it does not exist."""

    def update_meta(self, collection: str, meta: CollectionMeta) -> None:
        """Replace the collection's recorded metadata (dimension and fingerprint must stay as they are)."""

    def delete_collection(self, collection: str) -> None: ...

    def upsert(self, collection: str, points: Iterable[StoredPoint], batch_size: int = 256) -> int:
        """Insert or replace points by id, `batch_size` per request; returns how many were written."""

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def delete_by_source(self, collection: str, sources: Sequence[str]) -> None:
        """Delete every point whose payload `source` is one of `sources`."""

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Merge `payload` into the payload of the given points."""

    def query(
        self, collection: str, vector: Any, limit: int = 10, modalities: Sequence[str] | None = None, *, exact: bool = False,
        fields: Sequence[str] | None = None,
        using: str | None = None, with_vectors: bool = False,
    ) -> list[Hit]:
        """Nearest points, best first; `modalities` keeps only points whose payload modality is listed.

        In an AGFF collection `using` names the vector searched: POOLED (the default, for a plain
        vector) or ASPECTS (a [K][dim] query, scored by MaxSim). `with_vectors` fills `Hit.vector`.

        `exact=True` scores every (filtered) point instead of walking the HNSW graph, which Qdrant
        builds once a collection outgrows its indexing threshold (about 10k 384-d vectors).
        `fields`: only these payload keys come back (None: the whole payload); a wide query whose
        hits are mostly discarded then skips reading and converting their payloads.
        """

    def scroll(self, collection: str, *, with_vectors: bool = False, page_size: int = 1024) -> Iterator[StoredPoint]:
        """Every point with its payload, in id order."""

    def retrieve(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        """The points among `ids` that exist."""

    def count(self, collection: str, modalities: Sequence[str] | None = None) -> int: ...

    def flush(self, collection: str) -> None:
        """Persist everything written so far (a no-op where writes are already persisted)."""

    def optimize(self, collection: str) -> None:
        """Build indexes and merge segments after large writes (a no-op where the server does it)."""

    def close(self) -> None:
        """Flush and release every collection (and its lock)."""


def check_name(collection: str) -> str:
    """A collection name is also a directory name: letters, digits, '_', '.', '-'; it starts with a letter or digit."""
    if not _NAME.match(collection or ""):
        raise StoreError(
            f"collection name {collection!r} is not allowed: use up to 128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return collection


def check_fingerprint(meta: CollectionMeta, fingerprint: str, collection: str, action: str = "search") -> None:
    """Refuse a model whose fingerprint differs from the one the collection was indexed with."""
    if meta.fingerprint == fingerprint:
        return
    where = f" (from {meta.model_path})" if meta.model_path else ""
    hint = f" --model {meta.model_path}" if meta.model_path else ""
    raise FingerprintMismatchError(
        f"cannot {action} collection '{collection}' with model {fingerprint[:12]}: it was indexed with model "
        f"{meta.fingerprint[:12]}{where}, and vectors of two models are not comparable. Use that model{hint}, "
        "or index into a new collection"
    )


def check_kind(meta: CollectionMeta, embedding: str, aspects: int, collection: str, action: str = "search") -> None:
    """Refuse a model whose kind of embedding (one vector, or K AGFF aspect vectors) differs from the collection's."""
    if meta.embedding == embedding and (embedding != "agff" or meta.aspects == aspects):
        return
    raise EmbeddingKindMismatchError(
        f"cannot {action} collection '{collection}' with this model: the collection holds "
        f"{_kind(meta.embedding, meta.aspects)}, the model makes {_kind(embedding, aspects)}. Use the model the "
        "collection was indexed with, or index into a new collection"
    )


def _kind(embedding: str, aspects: int) -> str:
    return f"AGFF embeddings ({aspects} aspect vectors per item)" if embedding == "agff" else "single vectors"


def ensure_collection(
    store: Store, collection: str, *, dim: int, fingerprint: str, model_path: str | Path | None = None,
    action: str = "index into", embedding: str = "single", aspects: int = 0,
) -> CollectionMeta:
    """Open the collection if it exists (refusing another kind of embedding, model or dimension), else create it."""
    check_name(collection)
    if store.collection_exists(collection):
        meta = store.get_meta(collection)
        check_kind(meta, embedding, aspects, collection, action)
        check_fingerprint(meta, fingerprint, collection, action)
        if meta.dim != dim:  # same fingerprint, other dim: only a hand-edited metadata file gets here
            raise StoreError(f"collection '{collection}' holds {meta.dim}-d vectors, the model makes {dim}-d ones")
        return meta
    meta = CollectionMeta(dim=dim, fingerprint=fingerprint, model_path=str(Path(model_path).resolve()) if model_path else None,
                          embedding=embedding, aspects=aspects)
    store.create_collection(collection, meta)
    return meta


def modality_list(modalities: str | Sequence[str] | None) -> list[str] | None:
    """None or a non-empty list of modality names (a single name is accepted)."""
    if modalities is None:
        return None
    if isinstance(modalities, str):
        modalities = [modalities]
    out = list(dict.fromkeys(modalities))
    return out or None


def as_vector(vector: Any) -> Any:
    """Plain lists for a backend: a vector, a multivector, or a dict of named ones."""
    if isinstance(vector, dict):
        return {name: as_vector(v) for name, v in vector.items()}
    if hasattr(vector, "tolist"):
        return vector.tolist()
    return [as_vector(x) if isinstance(x, (list, tuple)) or hasattr(x, "tolist") else float(x) for x in vector]


def default_using(meta: CollectionMeta, using: str | None) -> str | None:
    """The named vector a query searches: POOLED by default in an AGFF collection, the unnamed one otherwise."""
    if meta.embedding != "agff":
        if using not in (None, POOLED):
            raise StoreError(f"this collection holds single vectors; there is no '{using}' vector to search")
        return None
    if using not in (None, POOLED, ASPECTS):
        raise StoreError(f"an AGFF collection has the vectors '{POOLED}' and '{ASPECTS}', not '{using}'")
    return using or POOLED


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
