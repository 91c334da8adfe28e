"""The store protocol on both backends: congruence (Edge vs qdrant-client), metadata, locks, refusals."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from omnisdk.store import (
    CollectionMeta,
    CollectionNotFoundError,
    FingerprintMismatchError,
    Store,
    StoredPoint,
    StoreError,
    StoreLockedError,
    ensure_collection,
    open_store,
)
from omnisdk.store.client import ClientStore
from omnisdk.store.edge import EdgeStore

DIM = 24
MODALITIES = ("text", "image", "document", "audio")
FP = "a1" * 32


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_points(n: int = 300, seed: int = 0) -> list[StoredPoint]:
    rng = np.random.default_rng(seed)
    vectors = unit_rows(rng, n)
    return [
        StoredPoint(str(uuid.UUID(int=int(rng.integers(1, 2**63)) << 64 | i)), vectors[i],
                    {"modality": MODALITIES[i % 4], "source": f"/data/f{i % 37}.bin", "locator": {"page": i % 5 + 1}})
        for i in range(n)
    ]


@pytest.fixture(params=["edge", "memory", "local"])
def store(request, tmp_path) -> Store:
    spec = {"edge": str(tmp_path / "edge"), "memory": ":memory:", "local": f"local:{tmp_path / 'local'}"}[request.param]
    s = open_store(spec)
    yield s
    s.close()


def test_open_store_picks_the_backend(tmp_path):
    assert isinstance(open_store(str(tmp_path / "a")), EdgeStore)
    assert isinstance(open_store(f"edge:{tmp_path / 'b'}"), EdgeStore)
    assert isinstance(open_store(tmp_path / "c"), EdgeStore)
    assert open_store().location.endswith(".omnisdk")
    memory = open_store(":memory:")
    assert isinstance(memory, ClientStore) and isinstance(memory, Store)
    assert open_store(memory) is memory
    from qdrant_client import QdrantClient

    wrapped = open_store(QdrantClient(":memory:"))
    assert isinstance(wrapped, ClientStore) and not wrapped.remote
    with pytest.raises(StoreError, match="is not a store"):
        open_store("ftp://host/x")


def test_congruence_edge_and_qdrant_client_local(tmp_path):
    """Same points, same queries: same top-k ids and scores on Qdrant Edge and qdrant-client :memory:."""
    points = make_points(300)
    queries = unit_rows(np.random.default_rng(7), 25)
    edge, memory = open_store(str(tmp_path / "edge")), open_store(":memory:")
    for s in (edge, memory):
        s.create_collection("c", CollectionMeta(dim=DIM, fingerprint=FP))
        assert s.upsert("c", points, batch_size=64) == 300
    matrix = np.stack([p.vector for p in points])
    for filt, exact in ((None, False), (["image"], False), (["text", "audio"], False), (None, True), (["document"], True)):
        for q in queries:
            a, b = edge.query("c", q, 10, filt, exact=exact), memory.query("c", q, 10, filt, exact=exact)
            assert [h.id for h in a] == [h.id for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
            if filt:
                assert {h.payload["modality"] for h in a} <= set(filt)
            # and both agree with exact search
            keep = [i for i, p in enumerate(points) if filt is None or p.payload["modality"] in filt]
            exact = sorted(keep, key=lambda i: -float(matrix[i] @ q))[:10]
            assert [h.id for h in a] == [points[i].id for i in exact]
    assert edge.count("c") == memory.count("c") == 300
    assert edge.count("c", ["image"]) == memory.count("c", ["image"]) == 75
    edge.close()
    memory.close()


def test_points_round_trip(store):
    points = make_points(60, seed=1)
    store.create_collection("c", CollectionMeta(dim=DIM, fingerprint=FP))
    store.upsert("c", points, batch_size=16)
    store.upsert("c", points[:10])  # idempotent by id
    assert store.count("c") == 60
    scrolled = list(store.scroll("c", page_size=7))
    assert sorted(p.id for p in scrolled) == sorted(p.id for p in points)
    assert all(p.vector is None for p in scrolled)
    got = store.retrieve("c", [points[3].id, str(uuid.uuid4())], with_vectors=True)
    assert [p.id for p in got] == [points[3].id]
    np.testing.assert_allclose(got[0].vector, points[3].vector, atol=1e-6)
    assert got[0].payload == points[3].payload
    store.set_payload("c", [points[3].id], {"mtime": 12.5})
    assert store.retrieve("c", [points[3].id])[0].payload["mtime"] == 12.5
    store.delete("c", [points[0].id, points[1].id])
    store.delete_by_source("c", ["/data/f5.bin", "/data/f6.bin"])
    gone = {points[0].id, points[1].id} | {p.id for p in points if p.payload["source"] in ("/data/f5.bin", "/data/f6.bin")}
    assert store.count("c") == 60 - len(gone)
    assert {p.id for p in store.scroll("c")} == {p.id for p in points} - gone


def test_metadata_is_recorded_and_survives_reopening(tmp_path):
    for spec in (str(tmp_path / "edge"), f"local:{tmp_path / 'local'}"):
        with open_store(spec) as s:
            meta = ensure_collection(s, "docs", dim=DIM, fingerprint=FP, model_path=tmp_path)
            assert meta.model_path == str(tmp_path.resolve()) and meta.omnisdk_version
            assert s.list_collections() == ["docs"]
        with open_store(spec) as s:
            again = s.get_meta("docs")
            assert again.fingerprint == FP and again.dim == DIM and again.distance == "cosine"
            assert again.created_at == meta.created_at
            with pytest.raises(CollectionNotFoundError, match="no collection 'nope'.*collections: docs"):
                s.get_meta("nope")
            s.delete_collection("docs")
            assert s.list_collections() == []


def test_another_model_is_refused_naming_both_fingerprints(store):
    ensure_collection(store, "c", dim=DIM, fingerprint=FP)
    other = "b2" * 32
    with pytest.raises(FingerprintMismatchError) as info:
        ensure_collection(store, "c", dim=DIM, fingerprint=other)
    assert FP[:12] in str(info.value) and other[:12] in str(info.value)
    assert ensure_collection(store, "c", dim=DIM, fingerprint=FP).fingerprint == FP


def test_collection_names_are_checked(store):
    for bad in ("", "../x", ".hidden", "a/b", "x" * 200):
        with pytest.raises(StoreError, match="not allowed"):
            ensure_collection(store, bad, dim=DIM, fingerprint=FP)


def test_edge_refuses_a_second_handle_before_edge_is_asked(tmp_path):
    first = open_store(str(tmp_path))
    first.create_collection("c", CollectionMeta(dim=DIM, fingerprint=FP))
    first.upsert("c", make_points(20))
    second = open_store(str(tmp_path))
    with pytest.raises(StoreLockedError, match="open in another process"):
        second.count("c")
    # Edge 0.9's own refusal would have damaged the first handle's payload index; ours does not.
    first.upsert("c", make_points(5, seed=3))
    first.close()
    assert second.count("c") == 25
    second.close()


def test_edge_writes_survive_a_kill_without_flush(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
        from test_store import make_points, DIM, FP
        from omnisdk.store import open_store, CollectionMeta
        s = open_store({str(tmp_path)!r})
        s.create_collection("c", CollectionMeta(dim=DIM, fingerprint=FP))
        s.upsert("c", make_points(50), batch_size=10)
        s.delete("c", [p.id for p in make_points(50)[:5]])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    with open_store(str(tmp_path)) as s:
        assert s.count("c") == 45


def test_server_without_collection_metadata_uses_the_sidecar(monkeypatch):
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    monkeypatch.setattr(ClientStore, "_collection_metadata", lambda self, name: None)
    ClientStore(client, "test", remote=False).create_collection("c", CollectionMeta(dim=DIM, fingerprint=FP))
    fresh = ClientStore(client, "test", remote=False)
    assert fresh.get_meta("c").fingerprint == FP
    assert fresh.list_collections() == ["c"]  # the sidecar is not listed
    fresh.delete_collection("c")
    assert fresh.list_collections() == []


def test_unreachable_server_is_one_clear_error():
    from qdrant_client import QdrantClient

    # discard port: nothing listens (no version check: its warning would come from a thread, late)
    store = ClientStore(QdrantClient(url="http://127.0.0.1:9", check_compatibility=False), "http://127.0.0.1:9")
    try:
        with pytest.raises(StoreError, match="cannot check a collection in http://127.0.0.1:9"):
            store.collection_exists("c")
    finally:
        store.close()


def test_edge_count_is_exact_through_updates_deletes_and_optimize(tmp_path):
    """EdgeStore.count reads the shard's tally (not an exact walk): it must still count every live point."""
    rng = np.random.default_rng(7)
    ids = [str(uuid.uuid4()) for _ in range(12_000)]
    live: set[str] = set()

    def put(rows) -> None:
        store.upsert("c", (StoredPoint(ids[i], rng.standard_normal(8).tolist(), {"modality": "text", "source": f"s{i % 50}"})
                           for i in rows), batch_size=500)
        live.update(ids[i] for i in rows)

    def exact() -> int:
        import qdrant_edge

        return int(store._shard("c").count(qdrant_edge.CountRequest(exact=True)))

    store = EdgeStore(tmp_path / "s")
    store.create_collection("c", CollectionMeta(dim=8, fingerprint=FP))
    put(range(8000))
    store.optimize("c")  # sealed segments: a re-upsert below moves points between segments
    put(range(4000, 12_000))
    store.delete("c", ids[1000:3000])
    live -= set(ids[1000:3000])
    assert store.count("c") == exact() == len(live)
    store.delete_by_source("c", ["s3", "s4"])
    live -= {ids[i] for i in range(12_000) if i % 50 in (3, 4)}
    put(range(0, 12_000, 7))
    store.optimize("c")
    assert store.count("c") == exact() == len(live)
    store.close()
    store = EdgeStore(tmp_path / "s")
    assert store.count("c") == exact() == len(live)
    assert store.count("c", ["text"]) == len(live) and store.count("c", ["image"]) == 0
    store.close()
