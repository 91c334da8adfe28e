"""The serving costs of a seed-method ablation variant: index size and search latency.

- index size: bytes allocated on disk by a Qdrant Edge collection holding the test corpus (the
  vectors the test evaluation encoded, payloads shaped like the indexer's), after flush and
  optimize, WAL included; and the float32 bytes of its vectors alone. An AGFF model stores K aspect
  vectors (a MaxSim multivector) plus one pooled vector per point. Edge preallocates sparse files
  (32 MB pages, WAL segments), so the apparent size is recorded too but says little.
- latency: p50/p99 of `Searcher.search_vector` on a Qdrant Edge collection of N random unit
  points (bench/search.py's vectors and payloads; default 100k), with the variant's own model, so
  an AGFF collection is searched the AGFF way: MaxSim prefetch over the multivector, then exact
  rescoring with the model's trained aggregation. At 100k points the Searcher searches exactly
  (EXACT_SEARCH_UP_TO). Latency depends on the layout (single vector, or K aspects), not on the
  weights' values, so the ablation measures it once per layout.

Used by scripts/seed_ablations.py.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

COLLECTION = "ablation"
_NAMESPACE = uuid.UUID("6f1c7c53-4d1e-4f0e-9a55-1c0a5e0b1a2e")


def _bench_search():
    """bench/search.py as a module (bench/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "search.py"
    spec = importlib.util.spec_from_file_location("omnisdk_bench_search", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CapturingEncoder:
    """Wraps an OmniModel for `evaluate`: every document-role vector it encodes is kept (item, vector),
    so the test corpus can be indexed without encoding it twice. Everything else is the model's."""

    def __init__(self, model: Any):
        self._model = model
        self.documents: dict[tuple, tuple[Any, np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode(self, items, **kwargs):
        items = list(items)
        out = self._model.encode(items, **kwargs)
        vectors, errors = out if isinstance(out, tuple) else (out, [])
        if kwargs.get("role") == "document":
            failed = {e.index for e in errors}
            for i, item in enumerate(items):
                row = np.asarray(vectors[i], dtype=np.float32)
                if i not in failed and np.isfinite(row).all():
                    self.documents[_marker(item)] = (item, row)
        return out


def _marker(item: Any) -> tuple:
    locator = item.locator.to_dict() if getattr(item, "locator", None) else None
    return (item.modality, str(item.path) if item.path else None, item.text, repr(locator))


def _points(documents: Sequence[tuple[Any, np.ndarray]], indexed_at: str) -> Iterator[Any]:
    from omnisdk.store.base import ASPECTS, POOLED, StoredPoint

    for item, vector in documents:
        source = str(item.path) if item.path else ""
        content = item.text if item.text is not None else source
        sha = hashlib.sha256(content.encode("utf-8")).hexdigest()
        locator = item.locator.to_dict() if getattr(item, "locator", None) else None
        payload = {"modality": item.modality, "source": source, "locator": locator, "sha256": sha,
                   "size": len(content), "mtime": 0.0, "chunks": 1, "indexed_at": indexed_at}
        if item.text is not None:
            payload["text"] = item.text
        if vector.ndim == 2:  # AGFF: K aspect vectors and their pooled vector, as the indexer stores them
            mean = vector.mean(axis=0)
            vector = {POOLED: mean / max(float(np.linalg.norm(mean)), 1e-12), ASPECTS: vector}
        yield StoredPoint(str(uuid.uuid5(_NAMESPACE, f"{sha}:{source}:{locator}")), vector, payload)


#: index.json's format: 2 counts allocated bytes (Edge preallocates sparse 32 MB files, so the
#: apparent size of an almost empty collection is ~150 MB and says nothing about its vectors).
INDEX_FORMAT = 2


def directory_bytes(root: Path) -> tuple[int, int]:
    """(bytes allocated on disk, apparent bytes) of the files under `root`."""
    files = [p.stat() for p in root.rglob("*") if p.is_file()]
    return sum(st.st_blocks * 512 for st in files), sum(st.st_size for st in files)


def index_size(model: Any, documents: Sequence[tuple[Any, np.ndarray]]) -> dict[str, Any]:
    """Bytes of an Edge collection of `documents` ((item, vector) pairs; vector (D,) or (K, D))."""
    from omnisdk.store.base import CollectionMeta, now_iso
    from omnisdk.store.edge import EdgeStore

    if not documents:
        raise ValueError("no document vectors were captured: evaluate the test split with a CapturingEncoder first")
    tmp = Path(tempfile.mkdtemp(prefix="ablation-index-"))
    store = EdgeStore(tmp / "store")
    try:
        meta = CollectionMeta(dim=model.dim, fingerprint=model.fingerprint, embedding=model.embedding_kind,
                              aspects=model.aspect_count)
        store.create_collection(COLLECTION, meta)
        written = store.upsert(COLLECTION, _points(documents, now_iso()), batch_size=512)
        store.flush(COLLECTION)
        store.optimize(COLLECTION)
        store.close()
        allocated, apparent = directory_bytes(tmp / "store")
        per_point = (model.aspect_count + 1 if model.aspect_count else 1) * model.dim * 4  # AGFF: K aspects + pooled
        return {"format": INDEX_FORMAT, "points": written, "bytes": allocated, "apparent_bytes": apparent,
                "vector_bytes": written * per_point, "embedding": model.embedding_kind, "aspects": model.aspect_count}
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _random_points(n: int, dim: int, aspects: int, seed: int, batch: int = 512) -> Iterator[Any]:
    """bench/search.py's random unit vectors and payloads, made batch by batch (an AGFF 100k set of
    K x 384 floats would otherwise sit in memory whole)."""
    from omnisdk.store.base import ASPECTS, POOLED, StoredPoint

    bench = _bench_search()
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        shape = (count, aspects, dim) if aspects else (count, dim)
        rows = rng.standard_normal(shape, dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
        for j in range(count):
            i = start + j
            vector = rows[j]
            if aspects:
                mean = vector.mean(axis=0)
                vector = {POOLED: mean / max(float(np.linalg.norm(mean)), 1e-12), ASPECTS: vector}
            yield StoredPoint(str(uuid.UUID(int=(i + 1) << 64 | i)), vector, bench.payload(i, bench.MODALITIES[i % 4]))


def search_latency(model: Any, points: int = 100_000, queries: int = 300, limit: int = 10, seed: int = 0) -> dict[str, Any]:
    """p50/p99 ms of `Searcher.search_vector` with `model` over `points` random points (see the module docstring)."""
    from omnisdk.search import Searcher
    from omnisdk.store.base import CollectionMeta
    from omnisdk.store.edge import EdgeStore

    aspects = model.aspect_count
    tmp = Path(tempfile.mkdtemp(prefix="ablation-latency-"))
    store = EdgeStore(tmp / "store")
    try:
        store.create_collection(COLLECTION, CollectionMeta(dim=model.dim, fingerprint=model.fingerprint,
                                                           embedding=model.embedding_kind, aspects=aspects))
        started = time.perf_counter()
        store.upsert(COLLECTION, _random_points(points, model.dim, aspects, seed), batch_size=512)
        store.flush(COLLECTION)
        upsert_s = time.perf_counter() - started
        started = time.perf_counter()
        store.optimize(COLLECTION)
        optimize_s = time.perf_counter() - started
        searcher = Searcher(store, COLLECTION, model, calibrate=False)
        rng = np.random.default_rng(seed + 1)
        shape = (queries + 1, aspects, model.dim) if aspects else (queries + 1, model.dim)
        qs = rng.standard_normal(shape, dtype=np.float32)
        qs /= np.linalg.norm(qs, axis=-1, keepdims=True)
        searcher.search_vector(qs[0], limit=limit)  # warm-up
        latencies = []
        for q in qs[1:]:
            t0 = time.perf_counter()
            searcher.search_vector(q, limit=limit)
            latencies.append((time.perf_counter() - t0) * 1000)
        return {"points": points, "queries": queries, "limit": limit, "embedding": model.embedding_kind,
                "aspects": aspects, "p50_ms": round(statistics.median(latencies), 3),
                "p99_ms": round(float(np.percentile(latencies, 99)), 3), "upsert_s": round(upsert_s, 2),
                "optimize_s": round(optimize_s, 2), "store_bytes": directory_bytes(tmp / "store")[0]}
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
