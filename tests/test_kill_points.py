"""kill -9 at every named write point of indexing and of training checkpoints (issue 18).

Each kill point (omnisdk/faults.py) is reached exactly: the child is forked from a server that
imported torch once (tests/fork_server.py) and SIGKILLs itself at the point OMNISDK_KILL_AT names.
After the kill, the next run must repair everything: the collection holds exactly a clean run's
ids, vectors and payloads (no duplicates, no orphans); training resumes from the last complete
checkpoint and ends with a straight run's weights, bit for bit.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from fork_server import ForkServer
from media.pdf import SAMPLE_PAGES, write_pdf
from omnisdk import checkpoint as ckpt
from omnisdk.trainers import state as run_state

COLLECTION = "files"


@pytest.fixture(scope="module")
def server():
    forks = ForkServer(["torch", "omnisdk.model", "omnisdk.search", "omnisdk.store", "omnisdk.trainers.stages", "fault_jobs"])
    yield forks
    forks.close()


# -- indexing -------------------------------------------------------------------------------------------
def _folder_a(root: Path) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    Image.new("RGB", (24, 24), (220, 30, 30)).save(root / "red.png")
    Image.new("RGB", (24, 24), (30, 30, 220)).save(root / "blue.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    write_pdf(root / "report.pdf", SAMPLE_PAGES[:2])
    (root / "notes.txt").write_text("solar panels on a harbour roof")
    (root / "gone.txt").write_text("a file deleted before the second run")
    return root


def _to_b(root: Path) -> None:
    """Every kind of write the indexer makes: a touch, a copy, a changed file of 3 chunks in 2 upserts
    with stale points to delete, a changed text, a new one, a deleted one (prune), a broken one (error log)."""
    later = time.time() + 100
    os.utime(root / "red.png", (later, later))
    shutil.copy(root / "blue.png", root / "copy.png")
    write_pdf(root / "report.pdf", SAMPLE_PAGES[::-1])
    (root / "notes.txt").write_text("container cranes at the quay")
    (root / "new.txt").write_text("a lighthouse at dusk")
    (root / "gone.txt").unlink()


def _index(model, model_dir: Path, store_dir: Path, data: Path) -> tuple[dict, list]:
    """Index in this process (the repairing run) and return the points and the error log."""
    from omnisdk.search import Indexer
    from omnisdk.store import open_store

    with open_store(str(store_dir)) as store:
        Indexer(store, COLLECTION, model, model_dir=model_dir, batch_size=2, upsert_batch_size=2,
                progress=False).index([data], prune=True)
        points = {p.id: (p.vector, p.payload) for p in store.scroll(COLLECTION, with_vectors=True)}
        roots = sorted(store.get_meta(COLLECTION).roots)
    log = sorted((r["path"], r["stage"]) for r in map(json.loads, (store_dir / COLLECTION / "errors.jsonl").open()))
    return points, [roots, log]


@pytest.fixture(scope="module")
def indexing(tmp_path_factory, tiny_model_factory):
    """(model, model_dir, data, store A, clean points and bookkeeping of the run that takes A to B)."""
    root = tmp_path_factory.mktemp("kill-index")
    model = tiny_model_factory(["text", "image", "document"])
    model.save(root / "model")
    data = _folder_a(root / "data")
    _index(model, root / "model", root / "store-a", data)
    _to_b(data)
    shutil.copytree(root / "store-a", root / "clean")
    clean = _index(model, root / "model", root / "clean", data)
    return model, root / "model", data, root / "store-a", clean


#: Every write point of a run that takes store A to folder B, in the order the run passes them (upserts:
#: the copy, the PDF's 2 + 1 points, the new text, the changed text; deletes: the PDF's and the text's stale points).
INDEX_POINTS = [
    "atomic.rename:1",  # the roots half recorded in the collection's metadata
    "index.roots", "index.touch",
    "index.upsert.before:1", "index.upsert.after:1", "index.upsert.before:2",
    "index.upsert.after:2",  # a file half written
    "index.upsert.after:3", "index.delete.before:1", "index.delete.after:1", "index.error_log:1",
    "index.upsert.before:4", "index.upsert.after:5", "index.delete.before:2", "index.delete.after:2",
    "index.prune.before", "index.prune.after", "index.flush", "index.optimize", "index.calibration",
    "atomic.rename:2",  # the calibration half recorded
    "index.done",
]


def _same(points: dict, clean: dict) -> None:
    assert sorted(points) == sorted(clean), "ids differ from a clean run's (a duplicate or an orphan)"
    for key, (vector, payload) in points.items():
        assert torch.allclose(torch.tensor(vector), torch.tensor(clean[key][0]), atol=1e-5), payload["source"]
        drop = lambda p: {k: v for k, v in p.items() if k != "indexed_at"}  # noqa: E731
        assert drop(payload) == drop(clean[key][1])
    chunks = [(p["source"], json.dumps(p["locator"])) for _, p in points.values()]
    assert len(chunks) == len(set(chunks))


@pytest.mark.parametrize("point", INDEX_POINTS)
def test_indexing_killed_at_a_write_point_is_repaired_by_the_next_run(point, server, indexing, tmp_path):
    model, model_dir, data, store_a, (clean, clean_books) = indexing
    store = tmp_path / "store"
    shutil.copytree(store_a, store)
    code, output = server.run("fault_jobs.index", model_dir, store, data, env={"OMNISDK_KILL_AT": point})
    assert code == -9, f"kill point {point} was not reached (exit {code}): {output[-2000:]}"
    points, books = _index(model, model_dir, store, data)
    _same(points, clean)
    assert books == clean_books  # the roots and the error log, as a clean run leaves them


# -- training checkpoints ---------------------------------------------------------------------------------
from test_trainer import FAST, world  # noqa: E402,F401  (the tiny base and dataset)

#: 8 steps, a checkpoint every 2 (at 2, 4, 6), 2 kept: the save at 6 prunes step 2.
TRAIN = {**FAST, "steps": 8, "checkpoint_every": 2, "keep_checkpoints": 2}
#: kill point -> the step the next run resumes from (None: from the start)
TRAIN_POINTS = {
    "ckpt.trainable:1": None,  # the first checkpoint half written: nothing to trust
    "ckpt.trainable:2": 2, "ckpt.optimizer:2": 2,
    "ckpt.state:2": 2,  # complete, but not yet renamed into place
    "ckpt.renamed:2": 4,
    "ckpt.prune:1": 6,  # step 2 moved aside for deletion
    "ckpt.renamed:3": 6,  # step 6 in place, step 2 not yet pruned
    "save.weights": 6,  # the final weights written, not the manifest that marks them complete
}


@pytest.fixture(scope="module")
def one_thread():
    """The killed runs are forked children, where PyTorch's fork handler leaves one intra-op thread;
    the runs compared with them here use one too, or float sums differ in their last bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(world, tmp_path_factory, one_thread):
    from omnisdk.trainers.stages import train_specialist

    out = tmp_path_factory.mktemp("kill-train") / "straight"
    train_specialist(world["base"], "image", world["data"], out, TRAIN, show_progress=False)
    return ckpt.load_weights(out)


@pytest.mark.parametrize("point", list(TRAIN_POINTS))
def test_training_killed_while_checkpointing_resumes_from_the_last_complete_one(point, server, world, straight, one_thread,
                                                                               tmp_path):
    from omnisdk.trainers.stages import train_specialist

    out = tmp_path / "run"
    code, output = server.run("fault_jobs.train", world["base"], world["data"], out, json.dumps(TRAIN),
                              env={"OMNISDK_KILL_AT": point})
    assert code == -9, f"kill point {point} was not reached (exit {code}): {output[-2000:]}"
    assert not (out / ckpt.MANIFEST).exists()
    latest = run_state.latest_checkpoint(out / "run")
    expected = TRAIN_POINTS[point]
    assert (latest and int(latest.name.split("-")[1])) == expected, f"after a kill at {point}: {latest}"
    result = train_specialist(world["base"], "image", world["data"], out, TRAIN, show_progress=False)
    assert result.resumed_from == expected
    weights = ckpt.load_weights(out)
    assert all(torch.equal(weights[k], straight[k]) for k in straight), f"resumed after {point}: weights differ"
    assert not (out / "run").exists()
