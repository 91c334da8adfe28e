"""Builds an OmniWorld dataset: runs each domain generator, then writes the index files.

Tasks (each with its own queries and qrels, on the dev and test splits):
    t2i, i2t        scenes          a caption finds its picture, a picture its caption
    t2v, v2t        clips           the same for moving objects
    t2d             documents       a question or key sentence finds its PDF page
    t2a, a2t        sounds          the same for beeps and tones
    digit_cls       digits          a handwritten digit finds its label among the ten
    sound_cls       sounds          a sound finds its class label
    a2i             spoken, digits  a spoken digit finds the handwritten images of that digit
    t2x, a2x        all             a text or a spoken digit ranks the whole corpus, every modality (mixed.py)
Training pairs come from the train split only; the test split holds attribute combinations never
seen in training (compositional generalisation).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from omnisdk.datasets.format import CORPUS, DATASET_JSON, QRELS_DIR, QUERIES, TRAIN
from omnisdk.datasets.omniworld.common import DomainSettings, Sample
from omnisdk.datasets.omniworld.mixed import TASKS as MIXED_TASKS
from omnisdk.datasets.omniworld.mixed import add_mixed_tasks
from omnisdk.errors import OmniError

VERSION = "1"
EVAL_SPLITS = ("dev", "test")
DOMAINS = ("scenes", "digits", "clips", "documents", "sounds", "spoken")
# Items per domain and split. tiny: CI; demo: `omnisdk demo` (enough to learn from in minutes, a
# small test corpus to index); small: the small pipeline; full: a GPU.
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {
        "scenes": {"train": 64, "dev": 16, "test": 24},
        "digits": {"train": 60, "dev": 20, "test": 30},
        "clips": {"train": 24, "dev": 8, "test": 12},
        "documents": {"train": 12, "dev": 4, "test": 8},
        "sounds": {"train": 48, "dev": 12, "test": 24},
        "spoken": {"train": 30, "dev": 10, "test": 20},
    },
    "demo": {
        "scenes": {"train": 600, "dev": 40, "test": 40},
        "digits": {"train": 400, "dev": 30, "test": 30},
        "clips": {"train": 160, "dev": 16, "test": 16},
        "documents": {"train": 80, "dev": 10, "test": 10},
        "sounds": {"train": 300, "dev": 30, "test": 30},
        "spoken": {"train": 150, "dev": 20, "test": 20},
    },
    "small": {
        "scenes": {"train": 1200, "dev": 100, "test": 200},
        "digits": {"train": 1000, "dev": 100, "test": 200},
        "clips": {"train": 400, "dev": 50, "test": 100},
        "documents": {"train": 300, "dev": 30, "test": 60},
        "sounds": {"train": 800, "dev": 100, "test": 200},
        "spoken": {"train": 400, "dev": 50, "test": 100},
    },
    "full": {
        "scenes": {"train": 12000, "dev": 500, "test": 1000},
        "digits": {"train": 1397, "dev": 150, "test": 250},  # load_digits holds 1,797 images
        "clips": {"train": 4000, "dev": 250, "test": 500},
        "documents": {"train": 900, "dev": 80, "test": 160},  # pages; 1,363 vendored paragraphs
        "sounds": {"train": 8000, "dev": 500, "test": 1000},
        "spoken": {"train": 3000, "dev": 250, "test": 500},
    },
}
TASKS: dict[str, dict[str, Any]] = {
    "t2i": {"query_modality": "text", "corpus_modality": "image", "description": "caption -> scene picture"},
    "i2t": {"query_modality": "image", "corpus_modality": "text", "modality": "image", "description": "scene picture -> caption"},
    "t2v": {"query_modality": "text", "corpus_modality": "video", "description": "caption -> clip"},
    "v2t": {"query_modality": "video", "corpus_modality": "text", "modality": "video", "description": "clip -> caption"},
    "t2d": {"query_modality": "text", "corpus_modality": "document", "description": "question or key sentence -> PDF page"},
    "t2a": {"query_modality": "text", "corpus_modality": "audio", "description": "caption -> sound"},
    "a2t": {"query_modality": "audio", "corpus_modality": "text", "modality": "audio", "description": "sound -> caption"},
    "digit_cls": {"query_modality": "image", "corpus_modality": "text", "kind": "classification", "modality": "image",
                  "description": "handwritten digit -> its label among ten"},
    "sound_cls": {"query_modality": "audio", "corpus_modality": "text", "kind": "classification", "modality": "audio",
                  "description": "sound -> its class label"},
    "a2i": {"query_modality": "audio", "corpus_modality": "image", "modality": "audio",
            "description": "spoken digit -> handwritten images of that digit"},
    **MIXED_TASKS,
}
HARD_NEGATIVES = 3


def make_omniworld(out: str | Path, *, seed: int = 0, size: str = "tiny", overwrite: bool = False,
                   domains: Iterable[str] = DOMAINS) -> dict[str, Any]:
    """Generate OmniWorld into `out`; returns dataset.json's content plus generation timings.

    `out` must be empty or missing; with `overwrite`, an earlier OmniWorld there is replaced (only
    the files OmniWorld writes are removed, so stale files never leak into the new file hashes).
    """
    if size not in SIZES:
        raise OmniError(f"unknown OmniWorld size '{size}'; choose one of: {', '.join(SIZES)}")
    root = Path(out)
    _prepare_output(root, overwrite)
    samples: dict[str, list[Sample]] = {}
    timings: dict[str, float] = {}
    for domain in domains:
        start = time.perf_counter()
        generate = _generator(domain)
        samples[domain] = generate(root, DomainSettings(counts=SIZES[size][domain], seed=seed))
        timings[domain] = round(time.perf_counter() - start, 2)
    corpus, queries, qrels = build_eval_sets(samples)
    train = build_train_pairs(samples, seed)
    _write_jsonl(root / CORPUS, corpus)
    _write_jsonl(root / QUERIES, queries)
    _write_jsonl(root / TRAIN, train)
    (root / QRELS_DIR).mkdir(exist_ok=True)
    for split, rows in qrels.items():
        text = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{c}\t{s}\n" for q, c, s in rows)
        (root / QRELS_DIR / f"{split}.tsv").write_text(text)
    tasks = {t: spec for t, spec in TASKS.items() if any(q["task"] == t for q in queries)}
    files = _file_hashes(root)
    meta = {
        "name": "omniworld",
        "version": VERSION,
        "seed": seed,
        "size": size,
        "tasks": tasks,
        "generator": {"counts": {d: SIZES[size][d] for d in samples}, "hard_negatives": HARD_NEGATIVES},
        "files": files,
        "hash": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
    }
    (root / DATASET_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {**meta, "timings_s": timings}


def _prepare_output(root: Path, overwrite: bool) -> None:
    import shutil

    if root.exists() and not root.is_dir():
        raise OmniError(f"{root} is a file; --out needs a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise OmniError(f"{root} is not empty; choose a new directory or pass --overwrite")
        if not (root / DATASET_JSON).is_file():
            raise OmniError(f"{root} is not empty and holds no {DATASET_JSON}: refusing to overwrite what may not "
                            "be a dataset; choose a new directory")
        for name in (*DOMAINS, QRELS_DIR):
            shutil.rmtree(root / name, ignore_errors=True)
        for name in (CORPUS, QUERIES, TRAIN, DATASET_JSON):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _generator(domain: str) -> Callable[[Path, DomainSettings], list[Sample]]:
    if domain not in DOMAINS:
        raise OmniError(f"unknown OmniWorld domain '{domain}'; choose from: {', '.join(DOMAINS)}")
    return importlib.import_module(f"omnisdk.datasets.omniworld.{domain}").generate


def build_eval_sets(samples: dict[str, list[Sample]]):
    """Corpus records, query records and qrels (split -> rows) for every task."""
    corpus: dict[str, dict[str, Any]] = {}
    queries: list[dict[str, Any]] = []
    qrels: dict[str, list[tuple[str, str, int]]] = defaultdict(list)

    def add_corpus(record_id: str, task: str, **fields: Any) -> str:
        record = corpus.setdefault(record_id, {"_id": record_id, "tasks": [], **fields})
        if task not in record["tasks"]:
            record["tasks"].append(task)
        return record_id

    per_sample: dict[str, int] = defaultdict(int)

    def add_query(task: str, sample: Sample, relevant: Iterable[str] | dict[str, int], **fields: Any) -> None:
        """`relevant`: ids (grade 1) or {id: grade}."""
        key = f"{task}-{sample.id}"
        qid = f"{key}-{per_sample[key]}"
        per_sample[key] += 1
        queries.append({"_id": qid, "task": task, **fields})
        grades = relevant if isinstance(relevant, dict) else dict.fromkeys(relevant, 1)
        qrels[sample.split].extend((qid, cid, grades[cid]) for cid in sorted(grades))

    evaluated = {d: [s for s in ss if s.split in EVAL_SPLITS] for d, ss in samples.items()}
    for domain, (t2x, x2t) in {"scenes": ("t2i", "i2t"), "clips": ("t2v", "v2t"), "sounds": ("t2a", "a2t")}.items():
        _paired_tasks(evaluated.get(domain, []), t2x, x2t, add_corpus, add_query)
    for page in evaluated.get("documents", []):
        cid = add_corpus(page.id, "t2d", modality="document", path=page.path, locator=page.locator)
        for text in page.queries or page.captions[:1]:
            add_query("t2d", page, [cid], modality="text", text=text)
    _classification_task(evaluated.get("digits", []), "digit_cls", "a handwritten digit {}", add_corpus, add_query)
    _classification_task(evaluated.get("sounds", []), "sound_cls", "{}", add_corpus, add_query)
    digits_by_label: dict[str, list[str]] = defaultdict(list)
    for digit in evaluated.get("digits", []):
        digits_by_label[digit.label].append(add_corpus(digit.id, "a2i", modality="image", path=digit.path))
    for spoken in evaluated.get("spoken", []):
        if digits_by_label.get(spoken.label):
            add_query("a2i", spoken, digits_by_label[spoken.label], modality="audio", path=spoken.path)
    add_mixed_tasks(evaluated, corpus, add_query)  # last: the single-modality tasks' rows keep their place
    return sorted(corpus.values(), key=lambda r: r["_id"]), queries, dict(qrels)


def _paired_tasks(items: list[Sample], t2x: str, x2t: str, add_corpus, add_query) -> None:
    """Caption -> item and item -> caption. Items sharing a canonical caption are equally right answers."""
    if not items:
        return
    modality = items[0].modality
    by_caption: dict[str, list[Sample]] = defaultdict(list)
    for s in items:
        by_caption[s.captions[0]].append(s)
    caption_ids = {}
    for caption, group in by_caption.items():
        caption_ids[caption] = add_corpus(f"caption-{group[0].id}", x2t, modality="text", text=caption)
        for s in group:
            add_corpus(s.id, t2x, modality=modality, path=s.path, locator=s.locator)
    for s in items:
        twins = [t.id for t in by_caption[s.captions[0]]]
        query_text = s.captions[1] if len(s.captions) > 1 else s.captions[0]  # a paraphrase, not the indexed text
        add_query(t2x, s, twins, modality="text", text=query_text)
        add_query(x2t, s, [caption_ids[s.captions[0]]], modality=modality, path=s.path, locator=s.locator)


def _classification_task(items: list[Sample], task: str, template: str, add_corpus, add_query) -> None:
    labels = sorted({s.label for s in items if s.label})
    label_ids = {label: add_corpus(f"label-{task}-{label.replace(' ', '-')}", task, modality="text", text=template.format(label))
                 for label in labels}
    for s in items:
        if s.label:
            add_query(task, s, [label_ids[s.label]], modality=s.modality, path=s.path, locator=s.locator)


def build_train_pairs(samples: dict[str, list[Sample]], seed: int) -> list[dict[str, Any]]:
    """One pair per training item: a caption (or query text) and the item, with hard negatives."""
    task_of = {"scenes": "t2i", "digits": "digit_cls", "clips": "t2v", "documents": "t2d", "sounds": "t2a", "spoken": "t2a"}
    rng = np.random.default_rng(seed)
    pairs = []
    for domain in sorted(samples):
        train = [s for s in samples[domain] if s.split == "train"]
        features = [_attribute_set(s.attributes) for s in train]
        for i, sample in enumerate(train):
            texts = sample.queries or sample.captions
            text = texts[int(rng.integers(len(texts)))]
            negatives = [_item(train[j]) for j in _hard_negatives(i, train, features, rng)]
            pairs.append({"query": {"modality": "text", "text": text}, "positive": _item(sample),
                          "negatives": negatives, "task": task_of.get(domain, domain)})
    return pairs


def _item(sample: Sample) -> dict[str, Any]:
    item = {"modality": sample.modality, "path": sample.path}
    if sample.locator:
        item["locator"] = sample.locator
    return item


def _attribute_set(attributes: dict[str, Any], prefix: str = "") -> frozenset[str]:
    """Flatten nested attributes into 'path=value' strings, so any two samples can be compared."""
    out: set[str] = set()
    for key, value in attributes.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _attribute_set(value, f"{path}.")
        elif isinstance(value, list):
            for k, v in enumerate(value):
                out |= _attribute_set(v, f"{path}[{k}].") if isinstance(v, dict) else {f"{path}[{k}]={v}"}
        else:
            out.add(f"{path}={value}")
    return frozenset(out)


def _hard_negatives(i: int, train: list[Sample], features: list[frozenset[str]], rng: np.random.Generator) -> list[int]:
    """The most similar items (by shared attributes) that a different caption describes."""
    pool = np.arange(len(train))
    if len(pool) > 256:  # bounded work per item on large splits
        pool = rng.choice(pool, size=256, replace=False)
    own, caption = features[i], train[i].captions[0]
    scored = [(len(own & features[j]) / max(1, len(own | features[j])), int(j)) for j in pool
              if j != i and train[j].captions[0] != caption]
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [j for _, j in scored[:HARD_NEGATIVES]]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def _file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file but dataset.json, by POSIX path relative to the root."""
    hashes = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != DATASET_JSON):
        hashes[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
