"""Indexing cost per token: one long Markdown file vs many short files (issue 17's target).

Writes a Markdown file of `--mb` MB (headings, paragraphs, lists, code fences; the text of the
standard library's docstrings) and measures, with the `small` preset (the real all-MiniLM-L6-v2
backbone, text only):

1. chunking alone over the whole file (TextPlugin.chunk: reading, splitting, token counting,
   windows): seconds per million tokens at --mb and at a tenth of it, so a non-linear step shows;
2. indexing (Indexer into an in-memory Qdrant: chunk, embed, upsert) of a `--index-mb` prefix of
   the file as one file vs the same text split into short files of one paragraph group each:
   milliseconds per 1,000 tokens embedded.

    python bench/index_long_text.py [--mb 20] [--index-mb 0.5] [--json out.json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import pydoc
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def paragraphs() -> list[str]:
    pool = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}:
            continue
        try:
            module = pydoc.safeimport(name)
        except pydoc.ErrorDuringImport:
            continue
        doc = inspect.getdoc(module) if module else None
        if doc:
            pool += [p.strip() for p in doc.split("\n\n") if len(p.split()) >= 5]
    return pool


def markdown(target_bytes: int) -> str:
    pool = paragraphs()
    parts, size, i = [], 0, 0
    while size < target_bytes:
        block = pool[i % len(pool)]
        if i % 40 == 0:
            block = f"# Part {i // 40}\n\n{block}"
        elif i % 8 == 0:
            block = f"## Section {i // 8}\n\n{block}"
        elif i % 13 == 0:
            block = f"```\n{block}\n```"
        parts.append(block)
        size += len(block) + 2
        i += 1
    return "\n\n".join(parts) + "\n"


def tokens_of(model, texts) -> int:
    return sum(len(ids) for ids in model.tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def time_chunking(model, path: Path) -> dict:
    from omnisdk.items import Item

    start = time.perf_counter()
    chunks = model.plugins["text"].chunk(Item.of_file(path, "text"))
    seconds = time.perf_counter() - start
    tokens = tokens_of(model, [path.read_text()])
    return {"mb": path.stat().st_size / 1e6, "tokens": tokens, "chunks": len(chunks), "seconds": seconds,
            "s_per_mtoken": seconds / tokens * 1e6}


def time_indexing(model, folder: Path) -> dict:
    from omnisdk.search import Indexer
    from omnisdk.store import open_store

    with open_store(":memory:") as store:
        start = time.perf_counter()
        report = Indexer(store, "bench", model, progress=False).index([folder])
        seconds = time.perf_counter() - start
        texts = [p.payload["text"] for p in store.scroll("bench")]
    tokens = tokens_of(model, texts)
    return {"files": report.indexed, "chunks": report.chunks_embedded, "tokens_embedded": tokens, "seconds": seconds,
            "ms_per_ktoken": seconds / tokens * 1e6, "timings": report.timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--index-mb", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from omnisdk.presets import build_base

    model = build_base("small", modalities=["text"])
    out: dict = {"window": model.plugins["text"].window()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = markdown(int(args.mb * 1e6))
        for label, size in (("tenth", len(text) // 10), ("full", len(text))):
            path = tmp / f"{label}.md"
            path.write_text(text[:size])
            out[f"chunk_{label}"] = time_chunking(model, path)
            print(label, json.dumps(out[f"chunk_{label}"]), flush=True)
        prefix = text[: int(args.index_mb * 1e6)]
        (tmp / "long").mkdir()
        (tmp / "long" / "long.md").write_text(prefix)
        (tmp / "short").mkdir()
        for k, piece in enumerate(prefix.split("\n\n")):
            if piece.strip():
                (tmp / "short" / f"{k:06d}.md").write_text(piece + "\n")
        (tmp / "warm").mkdir()
        for k, piece in enumerate(prefix.split("\n\n")[:50]):
            (tmp / "warm" / f"{k:06d}.md").write_text(piece + "\n")
        time_indexing(model, tmp / "warm")  # warm-up: first-call costs out of the way
        for label in ("short", "long"):
            out[f"index_{label}"] = time_indexing(model, tmp / label)
            print(label, json.dumps(out[f"index_{label}"]), flush=True)
    ratio = out["index_long"]["ms_per_ktoken"] / out["index_short"]["ms_per_ktoken"]
    print(f"long/short cost per token embedded: {ratio:.2f} (target <= 1.0); chunking "
          f"{out['chunk_full']['s_per_mtoken']:.2f} s per million tokens at {out['chunk_full']['mb']:.1f} MB, "
          f"{out['chunk_tenth']['s_per_mtoken']:.2f} at {out['chunk_tenth']['mb']:.1f} MB")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
