"""Vector stores for omnisdk collections: one `Store` protocol, two Qdrant backends, one facade.

    from omnisdk.store import open_store

    store = open_store()                       # Qdrant Edge, embedded, in ./.omnisdk
    store = open_store("/data/index")          # Qdrant Edge in that directory ("edge:PATH" too)
    store = open_store("http://localhost:6333")  # a Qdrant server; API key from QDRANT_API_KEY
    store = open_store(":memory:")             # qdrant-client in-process (tests)
    store = open_store("local:/tmp/q")         # qdrant-client's on-disk local mode

    with store:
        store.create_collection("photos", CollectionMeta(dim=384, fingerprint=model.fingerprint))
        store.upsert("photos", [StoredPoint(id, vector, payload), ...])
        hits = store.query("photos", vector, limit=10, modalities=["image"])   # [Hit(id, score, payload)]

Every collection records a `CollectionMeta` (model fingerprint, dimension, distance, model path,
omnisdk version): Qdrant Edge in `collection.json` beside its shard, qdrant-client in the
collection's Qdrant metadata (or a sidecar collection on servers without it). `ensure_collection`
opens or creates one and refuses a model with another fingerprint or kind of embedding. An AGFF
collection (`CollectionMeta.embedding == "agff"`) holds two named vectors per point: "pooled" (one
vector, what a plain query searches) and "aspects" (the K aspect vectors, a MaxSim multivector). Indexing and search on top of
a store: `omnisdk.search` (`Indexer`, `Searcher`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omnisdk.store.base import (
    CollectionMeta,
    CollectionNotFoundError,
    EmbeddingKindMismatchError,
    FingerprintMismatchError,
    Hit,
    Store,
    StoredPoint,
    StoreError,
    StoreLockedError,
    check_fingerprint,
    check_kind,
    check_name,
    ensure_collection,
)

DEFAULT_STORE = ".omnisdk"

__all__ = [
    "DEFAULT_STORE",
    "CollectionMeta",
    "CollectionNotFoundError",
    "EmbeddingKindMismatchError",
    "FingerprintMismatchError",
    "Hit",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoredPoint",
    "check_fingerprint",
    "check_kind",
    "check_name",
    "ensure_collection",
    "open_store",
]


def open_store(spec: str | Path | Store | Any | None = None) -> Store:
    """Open the vector store a spec names (see the module docstring); use it as a context manager.

    Args:
        spec: None or "" (Qdrant Edge in ./.omnisdk), a directory or `edge:PATH` (Qdrant Edge, embedded),
            `local:PATH` or `:memory:` (qdrant-client's local mode), `http(s)://HOST:PORT` (a Qdrant server;
            the API key from QDRANT_API_KEY), a `qdrant_client.QdrantClient`, or a Store (passed through).

    Returns:
        A Store: collections with their model's fingerprint, upserts, queries, deletes.

    Raises:
        StoreError: the spec names no kind of store, or the store cannot be opened (in use, unreachable).
    """
    from omnisdk.store.client import ClientStore
    from omnisdk.store.edge import EdgeStore

    if spec is None or spec == "":
        return EdgeStore(DEFAULT_STORE)
    if isinstance(spec, Path):
        return EdgeStore(spec)
    if isinstance(spec, str):
        if spec == ":memory:" or spec.startswith(("local:", "http://", "https://")):
            return ClientStore.connect(spec)
        if spec.startswith("edge:"):
            return EdgeStore(spec[len("edge:") :])
        if "://" in spec:
            raise StoreError(f"'{spec}' is not a store: use a directory, edge:PATH, local:PATH, :memory: or http(s)://HOST:PORT")
        return EdgeStore(spec)
    if type(spec).__name__ == "QdrantClient":
        remote = type(getattr(spec, "_client", None)).__name__ != "QdrantLocal"
        return ClientStore(spec, f"QdrantClient({'remote' if remote else 'local'})", remote=remote)
    if isinstance(spec, Store):
        return spec
    raise StoreError(f"cannot open a store from {type(spec).__name__}: pass a path, a URL, ':memory:' or a Store")
