"""The dataset loader: what it reads, and the FILE:LINE errors it gives for what it cannot."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from omnisdk.datasets.format import DatasetError, load_dataset

ROOT = Path(__file__).resolve().parents[1]
KNOWN = {"text", "image", "video", "document", "audio"}


def write_dataset(root: Path, corpus=None, queries=None, qrels=None, meta=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(root / "img" / "a.png")
    Image.new("RGB", (8, 8), "blue").save(root / "img" / "b.png")
    corpus = corpus if corpus is not None else [
        {"_id": "a", "modality": "image", "path": "img/a.png"},
        {"_id": "b", "modality": "image", "path": "img/b.png"},
        {"_id": "cap-a", "modality": "text", "text": "a red square", "tasks": ["i2t"]},
    ]
    queries = queries if queries is not None else [
        {"_id": "q1", "modality": "text", "text": "red", "task": "t2i"},
        {"_id": "q2", "modality": "image", "path": "img/a.png", "task": "i2t"},
    ]
    qrels = qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\ta\t2\nq1\tb\t1\nq2\tcap-a\t1\n"
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(qrels)
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_a_valid_dataset_loads_with_graded_qrels_and_inferred_tasks(tmp_path):
    data = load_dataset(write_dataset(tmp_path / "d"), known_modalities=KNOWN)
    assert data.qrels["test"]["q1"] == {"a": 2, "b": 1}
    assert data.tasks["t2i"].corpus_modality == "image" and data.tasks["i2t"].credited_modality() == "image"
    assert [r.id for r in data.candidates("t2i")] == ["a", "b"]  # by modality
    assert [r.id for r in data.candidates("i2t")] == ["cap-a"]  # by the tasks field
    item = data.item(data.queries["q2"])
    assert item.path == tmp_path / "d" / "img" / "a.png" and item.modality == "image"


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"corpus": [{"_id": "a", "modality": "image", "path": "img/missing.png"}]}, r"corpus\.jsonl:1: file not found: img/missing\.png"),
        ({"corpus": [{"_id": "a", "modality": "image", "path": "img/a.png"}, {"_id": "z", "modality": "smell", "text": "x"}]},
         r"corpus\.jsonl:2: unknown modality 'smell'"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\ta\t1\nq9\ta\t1\n"}, r"qrels/test\.tsv:3: unknown query id 'q9'"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\tnope\t1\n"}, r"qrels/test\.tsv:2: unknown corpus id 'nope'"),
        ({"qrels": "query-id\tcorpus-id\tscore\nq1\ta\thigh\n"}, r"qrels/test\.tsv:2: score 'high' is not an integer"),
        ({"corpus": [{"_id": "a", "modality": "image", "path": "../outside.png"}]}, r"corpus\.jsonl:1: path '\.\./outside\.png' points outside"),
        ({"corpus": [{"_id": "a", "modality": "image", "path": "img/a.png"}, {"_id": "a", "modality": "image", "path": "img/b.png"}]},
         r"corpus\.jsonl:2: duplicate _id 'a' \(first at .*corpus\.jsonl:1\)"),
        ({"queries": [{"_id": "q1", "modality": "text", "text": "red"}]}, r"queries\.jsonl:1: query 'q1' has no \"task\""),
        ({"queries": [{"_id": "q1", "modality": "image", "task": "t2i"}]}, r"queries\.jsonl:1: an item needs \"text\" or \"path\""),
        ({"meta": {"tasks": {"t2i": {"query_modality": "text", "corpus_modality": "image"}}}},
         r"queries\.jsonl:2: task 'i2t' is not declared in dataset\.json"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, change, pattern):
    root = write_dataset(tmp_path / "d", **change)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(root, known_modalities=KNOWN)


def test_broken_json_names_the_line(tmp_path):
    root = write_dataset(tmp_path / "d")
    with open(root / "queries.jsonl", "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(DatasetError, match=r"queries\.jsonl:3: not valid JSON"):
        load_dataset(root, known_modalities=KNOWN)


def test_the_docs_recipe_converts_a_captioned_folder(tmp_path):
    """The conversion script in docs/data-format.md runs as printed and yields a valid dataset."""
    doc = (ROOT / "docs" / "data-format.md").read_text()
    code = re.search(r"<!-- recipe: captioned-folder -->\n```python\n(.*?)```", doc, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "data-format.md", "exec"), namespace)
    photos = tmp_path / "photos"
    photos.mkdir()
    lines = []
    for i, colour in enumerate(["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray", "pink"]):
        Image.new("RGB", (16, 16), colour).save(photos / f"{colour}.png")
        lines.append(f"{colour}.png\ta plain {colour} square")
    (photos / "captions.tsv").write_text("\n".join(lines) + "\n")
    namespace["convert"](photos, tmp_path / "my-photos")
    data = load_dataset(tmp_path / "my-photos", known_modalities=KNOWN)
    assert set(data.splits) == {"dev", "test"} and len(data.task_queries("t2i", "test")) == 2
    assert len(list(data.train_examples())) == 6


@pytest.mark.parametrize(
    "meta, pattern",
    [
        ({"tasks": ["t2i"]}, r"dataset\.json: field 'tasks': expected an object mapping each task name to its spec.*got a list"),
        ({"tasks": {"t2i": "text to image"}}, r"dataset\.json: field 'tasks\.t2i': expected an object with \"query_modality\""),
        ({"tasks": {"t2i": {"query_modality": "text"}}}, r"dataset\.json: field 'tasks\.t2i\.corpus_modality' is missing"),
        ({"tasks": {"t2i": {"query_modality": "text", "corpus_modality": "image", "kind": "rank"}}},
         r"dataset\.json: field 'tasks\.t2i\.kind': expected 'retrieval' or 'classification', got a string \"rank\""),
        ({"seed": "0"}, r"dataset\.json: field 'seed': expected a valid integer, got a string \"0\""),
        ({"name": 3}, r"dataset\.json: field 'name': expected a valid string, got a number 3"),
        ({"files": ["img/a.png"]}, r"dataset\.json: field 'files': expected an object mapping each file to its sha256"),
        (["t2i"], r"dataset\.json: expected a JSON object, got a list"),
    ],
)
def test_dataset_json_fields_of_the_wrong_type_name_the_file_and_field(tmp_path, meta, pattern):
    root = write_dataset(tmp_path / "d", meta=meta)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(root, known_modalities=KNOWN)


@pytest.mark.parametrize(
    "row, pattern",
    [
        ({"tasks": "i2t"}, r"corpus\.jsonl:3: field \"tasks\" must be a list of task names, got a string \"i2t\""),
        ({"tasks": [1]}, r"corpus\.jsonl:3: field \"tasks\" must be a list of task names \(strings\)"),
        ({"text": ["a", "b"]}, r"corpus\.jsonl:3: field \"text\" must be a string, got a list"),
        ({"locator": 2}, r"corpus\.jsonl:3: field \"locator\" must be an object"),
    ],
)
def test_corpus_fields_of_the_wrong_type_name_the_line_and_field(tmp_path, row, pattern):
    corpus = [{"_id": "a", "modality": "image", "path": "img/a.png"}, {"_id": "b", "modality": "image", "path": "img/b.png"},
              {"_id": "cap-a", "modality": "text", "text": "a red square", "tasks": ["i2t"]} | row]
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(write_dataset(tmp_path / "d", corpus=corpus), known_modalities=KNOWN)


def test_datasets_check_on_a_list_of_tasks_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    root = write_dataset(tmp_path / "d", meta={"name": "mine", "tasks": ["t2i", "i2t"]})
    result = subprocess.run([sys.executable, "-m", "omnisdk", "datasets", "check", str(root)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "AttributeError" not in result.stderr
    assert f"{root / 'dataset.json'}: field 'tasks'" in result.stderr
