"""Indexing throughput on the OmniWorld corpus, with the wall time split into decode, encode and upsert.

For each OmniWorld media folder (scenes, digits, clips, documents, sounds, spoken), in one run:

1. the peer, a hand-written loop (what one writes without omnisdk's Indexer): walk the folder,
   chunk each file with its plugin, `model.encode` every chunk, one upsert of all points, flush;
2. `Indexer.index([folder])` into a Qdrant Edge collection, with its own split of the wall time:
   decode (the plugins' chunking and preprocessing: reading, decoding, resampling, tokenising),
   encode (the model), upsert (store writes, deletes, flush, optimize) and bookkeeping (the rest:
   walking, detection, sha256, the stored state, payloads, the error log);
3. the same `Indexer.index` again, when every file is unchanged (the cost of a no-op re-run);
4. `Indexer.index` with `decode_workers=0`: decoding and the model in turn, the sequential path
   (decoding overlapped with encoding is the default: `--decode-workers`).

Prints a Markdown table and the target check: upsert plus bookkeeping under 10% of the indexer's
total. Both sides use the same model, batch size and torch threads; the peer runs first so that
neither gets a colder page cache. Not run by CI.

    python bench/index_omniworld.py [--data DIR | --size small] [--model DIR] [--batch-size 32]
                                    [--folders scenes,clips,...] [--json out.json]

Without --data, OmniWorld of --size (default small) is generated into a temporary folder first;
without --model, the `small` preset's base model (pretrained MiniLM backbone, fresh towers) is
built: its throughput is what a trained model of that size has.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FOLDERS = ("scenes", "digits", "clips", "documents", "sounds", "spoken")
SPLIT = ("decode", "encode", "upsert", "bookkeeping")


def hand_loop(model, store, collection: str, folder: Path, batch_size: int) -> dict:
    """The peer: chunk, encode, upsert once, flush; no skip logic, no hashing, no error log."""
    import uuid

    from omnisdk.items import Item
    from omnisdk.store.base import StoredPoint, ensure_collection

    started = time.perf_counter()
    ensure_collection(store, collection, dim=model.dim, fingerprint=model.fingerprint)
    chunks: list[Item] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        item = Item.of_file(path)
        modality = model.detect(item)
        if modality in model.plugins:
            chunks += model.plugins[modality].chunk(item.with_modality(modality))
    vectors = model.encode(chunks, batch_size=batch_size, role="document", errors="ignore", show_progress=False)
    points = [
        StoredPoint(str(uuid.uuid4()), vectors[i], {"modality": chunks[i].modality, "source": str(chunks[i].path)})
        for i in range(len(chunks))
    ]
    store.upsert(collection, points, batch_size=256)
    store.flush(collection)
    return {"seconds": time.perf_counter() - started, "chunks": len(chunks)}


def indexer_run(model, store, collection: str, folder: Path, batch_size: int, decode_workers: int | None = None) -> dict:
    from omnisdk.search import Indexer

    report = Indexer(store, collection, model, batch_size=batch_size, progress=False,
                     decode_workers=decode_workers).index([folder])
    if report.failed:
        raise SystemExit(f"{report.failed} files failed to index in {folder}: {report.errors[:3]}")
    return {"seconds": report.seconds, "files": report.files, "chunks": report.chunks_embedded,
            "unchanged": report.unchanged, "timings": report.timings}


def run(data: Path, model, folders: list[str], batch_size: int, store_dir: Path, workers: int | None = None) -> list[dict]:
    from omnisdk.store import open_store

    rows = []
    with open_store(f"edge:{store_dir}") as store:
        for name in folders:
            folder = data / name
            peer = hand_loop(model, store, "peer", folder, batch_size)
            first = indexer_run(model, store, "indexed", folder, batch_size, workers)
            again = indexer_run(model, store, "indexed", folder, batch_size, workers)
            sequential = indexer_run(model, store, "sequential", folder, batch_size, 0)
            rows.append({"folder": name, "files": first["files"], "chunks": first["chunks"], "peer_s": peer["seconds"],
                         "peer_chunks": peer["chunks"], "index_s": first["seconds"], "timings": first["timings"],
                         "rerun_s": again["seconds"], "rerun_unchanged": again["unchanged"],
                         "sequential_s": sequential["seconds"]})
            print(f"done: {name} ({first['files']} files, {first['chunks']} chunks, {first['seconds']:.1f} s)", flush=True)
    total = {"folder": "all", "timings": {k: sum(r["timings"][k] for r in rows) for k in SPLIT}}
    for key in ("files", "chunks", "peer_s", "peer_chunks", "index_s", "rerun_s", "rerun_unchanged", "sequential_s"):
        total[key] = sum(r[key] for r in rows)
    return rows + [total]


def table(rows: list[dict]) -> str:
    from omnisdk.tables import markdown_table

    def share(row: dict, key: str) -> str:
        return f"{100 * row['timings'][key] / row['index_s']:.1f}%"

    out = [[
        r["folder"], r["files"], r["chunks"], f"{r['chunks'] / r['index_s']:.1f}", f"{r['index_s']:.1f}", f"{r['peer_s']:.1f}",
        f"{r['index_s'] / r['peer_s']:.2f}x", *(share(r, k) for k in SPLIT),
        f"{100 * (r['timings']['upsert'] + r['timings']['bookkeeping']) / r['index_s']:.1f}%", f"{r['rerun_s']:.2f}",
        f"{r['sequential_s']:.1f}", f"{r['sequential_s'] / r['index_s']:.2f}x",
    ] for r in rows]
    return markdown_table(
        ["folder", "files", "chunks", "chunks/s", "indexer s", "hand loop s", "indexer / hand loop", "decode", "encode",
         "upsert", "bookkeeping", "upsert + bookkeeping", "unchanged re-run s", "sequential decode s",
         "speed-up over sequential"], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an OmniWorld dataset folder (default: generate one)")
    parser.add_argument("--size", default="small", help="OmniWorld size to generate without --data (default small)")
    parser.add_argument("--model", type=Path, help="a checkpoint (default: the small preset's base model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode-workers", type=int, help="the indexer's decoding threads (default: its own)")
    parser.add_argument("--folders", default=",".join(FOLDERS))
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()

    from omnisdk.model import OmniModel
    from omnisdk.presets import build_base

    with tempfile.TemporaryDirectory(prefix="omnisdk-index-bench-") as tmp:
        data = args.data
        if data is None:
            from omnisdk.datasets.omniworld.build import make_omniworld

            started = time.perf_counter()
            data = Path(tmp) / "omniworld"
            make_omniworld(data, size=args.size)
            print(f"generated OmniWorld {args.size} in {time.perf_counter() - started:.0f} s", flush=True)
        model = OmniModel.load(args.model) if args.model else build_base("small")
        model.eval()
        rows = run(data, model, args.folders.split(","), args.batch_size, Path(tmp) / "store", args.decode_workers)
    print(table(rows))
    total = rows[-1]
    overhead = (total["timings"]["upsert"] + total["timings"]["bookkeeping"]) / total["index_s"]
    print(f"\nupsert + bookkeeping: {100 * overhead:.1f}% of the indexer's {total['index_s']:.1f} s "
          f"(target < 10%: {'met' if overhead < 0.10 else 'NOT met'}); indexer / hand loop: {total['index_s'] / total['peer_s']:.2f}x; "
          f"chunks/s over the sequential path (decode_workers=0): {total['sequential_s'] / total['index_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
