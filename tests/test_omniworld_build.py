"""`omnisdk datasets make omniworld`: byte-identical by seed, ten tasks (plus two mixed-corpus ones), valid files, honest splits."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from omnisdk.cli import main
from omnisdk.datasets.format import load_dataset
from omnisdk.datasets.omniworld.build import TASKS

TEN_TASKS = {"t2i", "i2t", "t2v", "v2t", "t2d", "t2a", "a2t", "digit_cls", "sound_cls", "a2i"}
MIXED_TASKS = {"t2x", "a2x"}  # rank the whole corpus: tests/test_modality_gap.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniworld")
    assert main(["datasets", "make", "omniworld", "--out", str(root / "a"), "--seed", "0", "--size", "tiny"]) == 0
    return root / "a"


def test_the_same_seed_twice_gives_identical_hashes_and_another_seed_does_not(tiny, tmp_path, capsys):
    assert main(["datasets", "make", "omniworld", "--out", str(tmp_path / "b"), "--seed", "0", "--size", "tiny", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    first = json.loads((tiny / "dataset.json").read_text())
    assert again["hash"] == first["hash"]
    assert json.loads((tmp_path / "b" / "dataset.json").read_text())["files"] == first["files"]
    assert main(["datasets", "make", "omniworld", "--out", str(tmp_path / "c"), "--seed", "1", "--size", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hash"] != first["hash"]


def test_tiny_holds_all_ten_tasks_with_queries_in_dev_and_test(tiny):
    assert set(TASKS) == TEN_TASKS | MIXED_TASKS
    data = load_dataset(tiny, known_modalities={"text", "image", "video", "document", "audio"})
    assert set(data.tasks) == TEN_TASKS | MIXED_TASKS
    for task in TEN_TASKS:
        for split in ("dev", "test"):
            queries = data.task_queries(task, split)
            assert queries, (task, split)
            assert all(q.modality == data.tasks[task].query_modality for q in queries)
        assert all(c.modality == data.tasks[task].corpus_modality for c in data.candidates(task))
    # every qrel points into its task's candidate pool: no query is unanswerable
    for split, judged in data.qrels.items():
        for qid, relevant in judged.items():
            pool = {c.id for c in data.candidates(data.queries[qid].task)}
            assert set(relevant) <= pool, qid


def test_training_pairs_come_from_the_train_split_only_and_have_hard_negatives(tiny):
    data = load_dataset(tiny)
    evaluated = {str(tiny / r.path) for r in [*data.corpus.values(), *data.queries.values()] if r.path}
    examples = list(data.train_examples())
    assert len(examples) > 100
    for ex in examples:
        assert str(ex.positive.path) not in evaluated
        assert "/train/" in ex.positive.path.as_posix()
        assert all(str(n.path) not in evaluated for n in ex.negatives)
    with_negatives = [ex for ex in examples if ex.negatives]
    assert len(with_negatives) / len(examples) > 0.9
    assert Counter(ex.task for ex in examples).keys() >= {"t2i", "t2v", "t2d", "t2a", "digit_cls"}


def test_the_test_split_holds_combinations_never_seen_in_training(tiny):
    """Scenes: every test picture holds a (colour, shape) pair that no training scene shows."""
    from omnisdk.datasets.omniworld.draw import COLOURS, SHAPES

    data = load_dataset(tiny)
    pairs = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    train_text = " | ".join(ex.query.text for ex in data.train_examples() if ex.task == "t2i")
    seen = {p for p in pairs if p in train_text}
    assert 0 < len(seen) < len(pairs)
    test_images = data.task_queries("i2t", "test")
    assert test_images
    for query in test_images:
        caption = data.corpus[next(iter(data.qrels["test"][query.id]))].text
        assert {p for p in pairs if p in caption} - seen, caption


def test_existing_output_is_refused_unless_overwrite(tiny, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["datasets", "make", "omniworld", "--out", str(tmp_path / "mine")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["datasets", "make", "omniworld", "--out", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
