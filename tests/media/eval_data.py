"""A tiny evaluation dataset written by hand: text and image items, three tasks, graded qrels.

Tasks on the test split:
    t2i   6 captions -> 6 colour squares (+ optionally a corrupt PNG); one query has a second,
          lower-graded relevant image; one qrels row has score 0 (not relevant)
    i2t   6 squares -> 6 captions; one more query whose relevant caption is outside the pool (skipped)
    t2t   N_T2T word queries -> N_T2T_DOCS texts, one relevant each (for chance-level checks)

`corrupt_image=True` adds a broken PNG twice: as a t2i candidate (the only relevant item of one
more t2i query) and as an i2t query (relevant: the red caption). `shared_captions=True` puts the
captions in t2t's candidate pool as well as i2t's.
"""
from __future__ import annotations

import json
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220),
           "yellow": (235, 220, 40), "black": (10, 10, 10), "white": (245, 245, 245)}
N_T2T = 120
N_T2T_DOCS = 20


def write_eval_dataset(root: Path, *, corrupt_image: bool = False, shared_captions: bool = False) -> Path:
    """Write the dataset under `root` and return it (see the module docstring for the options)."""
    from PIL import Image

    (root / "img").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        Image.new("RGB", (24, 24), rgb).save(root / "img" / f"{name}.png")
        corpus.append({"_id": f"img_{name}", "modality": "image", "path": f"img/{name}.png", "tasks": ["t2i"]})
        corpus.append({"_id": f"cap_{name}", "modality": "text", "text": f"a plain {name} square",
                       "tasks": ["i2t", "t2t"] if shared_captions else ["i2t"]})
        queries.append({"_id": f"q_t2i_{name}", "modality": "text", "text": f"a {name} square", "task": "t2i"})
        queries.append({"_id": f"q_i2t_{name}", "modality": "image", "path": f"img/{name}.png", "task": "i2t"})
        qrels.append((f"q_t2i_{name}", f"img_{name}", 2 if name == "red" else 1))
        qrels.append((f"q_i2t_{name}", f"cap_{name}", 1))
    qrels.append(("q_t2i_red", "img_yellow", 1))  # a second, lower-graded relevant image
    qrels.append(("q_t2i_blue", "img_black", 0))  # score 0: judged, not relevant
    # Its only relevant item belongs to t2t's pool, not i2t's: the query is skipped and counted.
    queries.append({"_id": "q_i2t_orphan", "modality": "image", "path": "img/white.png", "task": "i2t"})
    qrels.append(("q_i2t_orphan", "doc_0", 1))
    if corrupt_image:
        (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        corpus.append({"_id": "img_broken", "modality": "image", "path": "img/broken.png", "tasks": ["t2i"]})
        queries.append({"_id": "q_t2i_broken", "modality": "text", "text": "a broken square", "task": "t2i"})
        queries.append({"_id": "q_i2t_broken", "modality": "image", "path": "img/broken.png", "task": "i2t"})
        qrels += [("q_t2i_broken", "img_broken", 1), ("q_i2t_broken", "cap_red", 1)]
    for d in range(N_T2T_DOCS):
        corpus.append({"_id": f"doc_{d}", "modality": "text", "text": f"document number {d} about topic {d * 7 % 11}",
                       "tasks": ["t2t"]})
    for q in range(N_T2T):
        queries.append({"_id": f"q_t2t_{q}", "modality": "text", "text": f"query {q} on topic {q % N_T2T_DOCS}", "task": "t2t"})
        qrels.append((f"q_t2t_{q}", f"doc_{q % N_T2T_DOCS}", 1))
    _write_jsonl(root / "corpus.jsonl", corpus)
    _write_jsonl(root / "queries.jsonl", queries)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{c}\t{s}\n" for q, c, s in qrels))
    tasks = {
        "t2i": {"query_modality": "text", "corpus_modality": "image"},
        "i2t": {"query_modality": "image", "corpus_modality": "text", "modality": "image"},
        "t2t": {"query_modality": "text", "corpus_modality": "text"},
    }
    (root / "dataset.json").write_text(json.dumps({"name": "tiny-eval", "version": "1", "tasks": tasks}, indent=2))
    return root


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


#: The squares of the VQA dataset: an image with a question retrieves its colour's name.
VQA_COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}


def write_vqa_dataset(root: Path) -> Path:
    """MMEB-style: an image with a question retrieves the answer text."""
    from PIL import Image

    (root / "img").mkdir(parents=True)
    corpus, queries = [], []
    for colour, rgb in VQA_COLOURS.items():
        Image.new("RGB", (24, 24), rgb).save(root / "img" / f"{colour}.png")
        corpus.append({"_id": f"a_{colour}", "modality": "text", "text": colour})
        queries.append({"_id": f"q_{colour}", "modality": "image", "path": f"img/{colour}.png",
                        "text": "What colour is the square?", "task": "vqa"})
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q_{c}\ta_{c}\t1\n" for c in VQA_COLOURS))
    tasks = {"vqa": {"query_modality": "image", "corpus_modality": "text", "description": "image + question -> answer"}}
    (root / "dataset.json").write_text(json.dumps({"name": "vqa", "tasks": tasks}))
    return root
