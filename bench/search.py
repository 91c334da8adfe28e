"""Vector search backends side by side: Qdrant Edge, qdrant-client local mode, numpy brute force.

For each size (default 10k and 100k random 384-d unit vectors, payloads as the indexer writes
them), in one run: upsert throughput through omnisdk's Store (batches of 512; Edge then runs its
optimizer, timed apart), p50/p99 latency of 1,000 single queries without and with a modality
filter (one of four modalities, so a quarter of the points), and recall@10 against exact numpy
search. Qdrant Edge, the default store, is the baseline of the ratio columns ("x Edge": above 1
means more upserts per second, or a slower query). numpy's "upsert" only stacks the rows in memory
(no payloads, nothing persisted): its upsert figure is a floor, not a store. Not run by CI.

    python bench/search.py [--sizes 10000,100000] [--queries 1000] [--client-queries N]
                           [--backends edge,edge-exact,client,numpy] [--json out.json]

"Qdrant Edge" queries walk the HNSW graph Edge builds in `optimize` (default settings); "Qdrant
Edge exact" asks the same store for exact search (SearchParams(exact=True)), what omnisdk's
Searcher does by default up to 100k points. "searcher" times omnisdk's `Searcher.search_vector` on
one Edge store (exact, as it searches up to 100k points), without and with the per-modality
calibration (issue 16), the two interleaved query by query so machine noise hits both alike:
unfiltered, the calibrated search runs one filtered query per modality and merges them; with a
one-modality filter both run the same single query. The time to compute the calibration
statistics (`refresh_calibration`, what the indexer adds to a run that changed the collection) is
the "optimize s" column of the calibrated row.

qdrant-client's local mode (on disk, `local:PATH`) is brute force in Python and warns above 20k
points: its upserts run at a few hundred points a second and a filtered query scans every payload
in Python, so at 100k expect tens of minutes; `--client-queries 100` times fewer of its queries.

Indexing real files (decode, encode, upsert and bookkeeping time on the OmniWorld corpus) is
bench/index_omniworld.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
import warnings

import numpy as np

DIM = 384
MODALITIES = ("text", "image", "document", "audio")
K = 10
BACKENDS = {"edge": "Qdrant Edge", "edge-exact": "Qdrant Edge exact", "client": "qdrant-client local", "numpy": "numpy exact",
            "searcher": "Searcher (Edge exact)"}
CALIBRATED = "Searcher calibrated (Edge exact)"
#: --calibration: the method the calibrated searcher ranks by ("platt" with made-up slopes and biases:
#: its cost does not depend on their values).
CALIBRATION = {"method": "zscore"}


def dataset(n: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = rng.standard_normal((queries, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    modality = np.array([MODALITIES[i % 4] for i in range(n)])
    ids = [str(uuid.UUID(int=int(rng.integers(1, 2**62)) << 64 | i)) for i in range(n)]
    filters = [MODALITIES[i % 4] for i in range(queries)]
    return vectors, q, modality, ids, filters


def payload(i: int, modality: str) -> dict:
    return {"modality": modality, "source": f"/data/folder{i % 97}/file{i}.pdf", "locator": {"page": i % 9 + 1},
            "sha256": f"{i:064x}", "size": 1000 + i, "mtime": 1.7e9 + i, "chunks": 9, "indexed_at": "2026-01-01T00:00:00+00:00"}


def exact_top_k(vectors, queries, modality, filters):
    """Exact top-k ids (as row numbers), without and with each query's filter."""
    plain = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    filtered = []
    for q, m in zip(queries, filters):
        rows = np.flatnonzero(modality == m)
        filtered.append(rows[np.argsort(-(vectors[rows] @ q))[:K]])
    return plain, np.array(filtered)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def timed_queries(search, queries, filters):
    """Latencies (ms) and results of single queries, without then with filters."""
    out = {}
    for label, flt in (("plain", [None] * len(queries)), ("filtered", filters)):
        search(queries[0], flt[0])  # warm-up
        lat, found = [], []
        for q, f in zip(queries, flt):
            t0 = time.perf_counter()
            found.append(search(q, f))
            lat.append((time.perf_counter() - t0) * 1000)
        out[label] = (lat, found)
    return out


def bench_store(kind: str, vectors, queries, modality, ids, filters, n_queries: int | None = None, exact: bool = False,
                searcher: bool = False):
    from omnisdk.store import CollectionMeta, StoredPoint, open_store

    tmp = tempfile.mkdtemp(prefix="omnisdk-bench-")
    store = open_store(f"{tmp}/edge" if kind == "edge" else f"local:{tmp}/client")
    row_of = {pid: i for i, pid in enumerate(ids)}
    try:
        store.create_collection("bench", CollectionMeta(dim=DIM, fingerprint="0" * 64))
        points = (StoredPoint(ids[i], vectors[i], payload(i, modality[i])) for i in range(len(ids)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # qdrant-client's "local mode is not for >20k points"
            t0 = time.perf_counter()
            store.upsert("bench", points, batch_size=512)
            store.flush("bench")
            upsert_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            store.optimize("bench")
            optimize_s = time.perf_counter() - t0
        assert store.count("bench") == len(ids)
        if searcher:
            return (upsert_s, *_bench_searcher(store, queries[: n_queries or len(queries)], filters, row_of))

        def search(q, m):
            return [row_of[h.id] for h in store.query("bench", q, K, [m] if m else None, exact=exact)]

        n_queries = n_queries or len(queries)
        return upsert_s, optimize_s, timed_queries(search, queries[:n_queries], filters[:n_queries])
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _bench_searcher(store, queries, filters, row_of):
    """(refresh seconds, {"raw": results, "calibrated": results}), raw and calibrated queries interleaved."""
    from types import SimpleNamespace

    from omnisdk.search import Searcher
    from omnisdk.search.calibration import refresh_calibration

    from omnisdk.search.platt import PlattParams

    platt = None
    if CALIBRATION["method"] == "platt":
        platt = PlattParams(per_query={"text": {m: (10.0 + i, -3.0 - i) for i, m in enumerate(MODALITIES)}},
                            pooled={"text": (10.0, -3.0)})
    t0 = time.perf_counter()
    refresh_calibration(store, "bench", method=CALIBRATION["method"], platt=platt)
    refresh_s = time.perf_counter() - t0
    # search_vector needs no encoder: a stand-in with the collection's fingerprint and no plugins
    model = SimpleNamespace(fingerprint="0" * 64, plugins={}, embedding_kind="single", aspect_count=0)
    searchers = {"raw": Searcher(store, "bench", model, calibrate=False), "calibrated": Searcher(store, "bench", model)}
    out = {name: {} for name in searchers}
    for label, flt in (("plain", [None] * len(queries)), ("filtered", filters)):
        for searcher in searchers.values():
            searcher.search_vector(queries[0], limit=K, modalities=flt[0])  # warm-up
        runs = {name: ([], [], []) for name in searchers}
        for q, f in zip(queries, flt):
            for name, searcher in searchers.items():
                c0, t0 = time.process_time(), time.perf_counter()
                hits = searcher.search_vector(q, limit=K, modalities=[f] if f else None)
                runs[name][0].append((time.perf_counter() - t0) * 1000)
                runs[name][2].append((time.process_time() - c0) * 1000)  # CPU: less hostage to a shared machine
                runs[name][1].append([row_of[h.id] for h in hits])
        for name in searchers:
            out[name][label] = runs[name]
    return refresh_s, out


def bench_numpy(vectors, queries, modality, ids, filters):
    t0 = time.perf_counter()
    matrix = np.ascontiguousarray(np.concatenate([vectors[s : s + 512] for s in range(0, len(vectors), 512)]))
    by_modality = {m: np.flatnonzero(modality == m) for m in MODALITIES}  # what a payload index holds
    upsert_s = time.perf_counter() - t0

    def search(q, m):
        rows = by_modality[m] if m else None
        scores = matrix @ q if rows is None else matrix[rows] @ q
        top = np.argpartition(-scores, K)[:K]
        top = top[np.argsort(-scores[top])]
        return (top if rows is None else rows[top]).tolist()

    return upsert_s, 0.0, timed_queries(search, queries, filters)


def run(sizes: list[int], n_queries: int, backends: list[str], client_queries: int | None = None) -> list[dict]:
    rows = []
    for n in sizes:
        vectors, queries, modality, ids, filters = dataset(n, n_queries)
        truth_plain, truth_filtered = exact_top_k(vectors, queries, modality, filters)
        for kind in backends:
            fn = bench_numpy if kind == "numpy" else (
                lambda *a, kind=kind: bench_store(
                    "edge" if kind == "searcher" else kind.removesuffix("-exact"), *a, exact=kind.endswith("-exact"),
                    n_queries=client_queries if kind == "client" else None, searcher=kind == "searcher"))
            upsert_s, optimize_s, results = fn(vectors, queries, modality, ids, filters)
            named = ({BACKENDS[kind]: (results["raw"], 0.0), CALIBRATED: (results["calibrated"], optimize_s)}
                     if kind == "searcher" else {BACKENDS[kind]: (results, optimize_s)})
            for backend, (measured, seconds) in named.items():
                row = {"size": n, "backend": backend, "upsert_per_s": n / upsert_s, "optimize_s": seconds}
                for label, truth in (("plain", truth_plain), ("filtered", truth_filtered)):
                    lat, found, *cpu = measured[label]
                    if cpu:
                        row[f"{label}_cpu_p50_ms"] = statistics.median(cpu[0])
                    row["queries"] = len(lat)
                    row[f"{label}_p50_ms"] = statistics.median(lat)
                    row[f"{label}_p99_ms"] = float(np.percentile(lat, 99))
                    row[f"{label}_recall"] = recall(found, truth[: len(found)])
                rows.append(row)
                print(f"done: {n} {row['backend']}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    from omnisdk.tables import markdown_table

    base = {r["size"]: r for r in rows if r["backend"] == "Qdrant Edge"}
    out = []
    for r in rows:
        b = base.get(r["size"])
        def ratio(key: str, b=b, r=r) -> str:
            return f"{r[key] / b[key]:.2f}x" if b else ""

        out.append([
            f"{r['size']:,}", r["backend"], r["queries"], f"{r['upsert_per_s']:,.0f}", ratio("upsert_per_s"), f"{r['optimize_s']:.2f}",
            f"{r['plain_p50_ms']:.2f}", f"{r['plain_p99_ms']:.2f}", ratio("plain_p50_ms"), f"{r['plain_recall']:.3f}",
            f"{r['filtered_p50_ms']:.2f}", f"{r['filtered_p99_ms']:.2f}", ratio("filtered_p50_ms"), f"{r['filtered_recall']:.3f}",
        ])
    return markdown_table(
        ["points", "backend", "queries", "upserts/s", "x Edge", "optimize s", "p50 ms", "p99 ms", "p50 x Edge", "recall@10",
         "filtered p50 ms", "filtered p99 ms", "filtered p50 x Edge", "filtered recall@10"], out)


def calibration_cost(rows: list[dict]) -> list[str]:
    """Calibrated over raw Searcher, per size: the ratios issue 16 budgets (at most 1.20 at 100k)."""
    lines = []
    for n in sorted({r["size"] for r in rows}):
        by = {r["backend"]: r for r in rows if r["size"] == n}
        raw, cal = by.get(BACKENDS["searcher"]), by.get(CALIBRATED)
        if raw and cal:
            ratios = ", ".join(f"{key.replace('_ms', '')} {cal[key] / raw[key]:.3f}x ({raw[key]:.2f} -> {cal[key]:.2f} ms)"
                               for key in ("plain_p50_ms", "plain_p99_ms", "plain_cpu_p50_ms", "filtered_p50_ms"))
            lines.append(f"calibrated / raw Searcher at {n:,} points: {ratios}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--client-queries", type=int, help="queries timed on qdrant-client local mode (default: --queries)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of: {', '.join(BACKENDS)}")
    parser.add_argument("--calibration", choices=("zscore", "center", "platt"), default="zscore",
                        help="the calibrated searcher's method (default zscore)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()
    CALIBRATION["method"] = args.calibration
    rows = run([int(s) for s in args.sizes.split(",")], args.queries, args.backends.split(","), args.client_queries)
    print(table(rows))
    print("\n".join(calibration_cost(rows)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
