"""Per-worker throughput of `omnisdk index --engine ray`, and what it projects for 1M files.

One Ray worker pair here: one decode task slot and one embedding actor (`ray.init(num_cpus=2)`),
against the local engine on the same files, model and batch size, each into a fresh Qdrant Edge
collection. Prints files/s and chunks/s of both, and the hours to index 1M files of the same mix
with W worker pairs, assuming throughput scales with W (the driver's writes and Qdrant are far from
saturated at these rates: see docs/scale.md). Not run by CI.

    python bench/index_ray.py [--data DIR] [--files 120] [--preset small] [--model DIR] [--batch-size 32]

Without --data, a mixed corpus is written to a temporary folder: PNG images, short text notes,
3-page PDFs and 1-second WAVs in the proportions 6:6:1:1 (--files in all).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/media writes real PDFs and WAVs


def write_corpus(root: Path, files: int) -> Path:
    import numpy as np
    from PIL import Image

    from media.audio import write_wav
    from media.pdf import write_pdf

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        kind = i % 14
        if kind < 6:
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / f"img{i:05d}.png")
        elif kind < 12:
            (root / f"note{i:05d}.txt").write_text(f"note {i}: " + " ".join(rng.choice(["harbour", "crane", "solar",
                                                   "roof", "red", "circle", "quay"], 40)))
        elif kind == 12:
            write_pdf(root / f"doc{i:05d}.pdf")
        else:
            write_wav(root / f"beep{i:05d}.wav", seconds=1.0)
    return root


def run(engine: str, model, model_dir: Path, data: Path, store_dir: Path, batch_size: int) -> tuple[float, object]:
    from omnisdk.search import Indexer
    from omnisdk.search.ray_engine import RayIndexer, RayOptions
    from omnisdk.store import open_store

    with open_store(str(store_dir)) as store:
        if engine == "ray":
            indexer = RayIndexer(store, "bench", model, model_dir=model_dir, batch_size=batch_size, progress=False,
                                 ray=RayOptions(actors=1, files_per_task=8))
        else:
            indexer = Indexer(store, "bench", model, model_dir=model_dir, batch_size=batch_size, progress=False)
        started = time.perf_counter()
        report = indexer.index([data])
        return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import ray

    from omnisdk.model import OmniModel
    from omnisdk.presets import build_base

    work = Path(tempfile.mkdtemp(prefix="omnisdk-bench-ray-"))
    data = args.data or write_corpus(work / "data", args.files)
    model_dir = args.model
    if model_dir is None:
        model_dir = work / "model"
        build_base(args.preset, modalities=["text", "image", "document", "audio"]).save(model_dir)
    model = OmniModel.load(model_dir, device="cpu")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    for engine in ("local", "ray"):
        seconds, report = run(engine, model, model_dir, data, work / f"store-{engine}", args.batch_size)
        rows.append((engine, report.files, report.chunks_embedded, seconds))
    ray.shutdown()
    print(f"| engine | files | chunks | seconds | files/s | chunks/s | 1M files, 1 worker | 1M files, 32 workers |\n"
          f"|---|---|---|---|---|---|---|---|")
    for engine, files, chunks, seconds in rows:
        rate = files / seconds
        print(f"| {engine} | {files} | {chunks} | {seconds:.1f} | {rate:.2f} | {chunks / seconds:.2f} | "
              f"{1e6 / rate / 3600:.0f} h | {1e6 / rate / 32 / 3600:.1f} h |")


if __name__ == "__main__":
    main()
