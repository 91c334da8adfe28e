"""`omnisdk index --engine ray` on a local Ray cluster this module starts (2 CPUs): the local indexer's contract.

The collection equals the local indexer's (ids, payloads, vectors within 1e-5, error log), re-runs
skip, copy and prune as it does, and an embedding actor killed with a batch in flight (SIGKILL of its
own process) is restarted by Ray with nothing lost or written twice.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_index import assert_same_points, snapshot, write_folder  # noqa: E402

from omnisdk.cli import main as cli_main  # noqa: E402
from omnisdk.search import Indexer  # noqa: E402
from omnisdk.search.ray_engine import RayIndexer, RayOptions  # noqa: E402
from omnisdk.store import open_store  # noqa: E402

COLLECTION = "files"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a loaded machine can miss that
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory) -> Path:
    directory = tmp_path_factory.mktemp("model") / "tiny"
    tiny_model_factory(modalities=["text", "image", "document", "audio"]).save(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    from omnisdk.model import OmniModel

    return OmniModel.load(model_dir)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, model, model_dir):
    """A folder (left unchanged) and the local indexer's report, points and error log on it."""
    root = tmp_path_factory.mktemp("baseline")
    data = write_folder(root / "data")
    report, points = run("local", model, model_dir, root / "local", [data])
    return data, report, points, logged(root / "local")


def run(engine: str, model, model_dir, store_dir: Path, roots, prune: bool = False, **options):
    with open_store(str(store_dir)) as store:
        if engine == "ray":
            indexer = RayIndexer(store, COLLECTION, model, model_dir=model_dir, progress=False, batch_size=2,
                                 ray=RayOptions(files_per_task=2, **options))
        else:
            indexer = Indexer(store, COLLECTION, model, model_dir=model_dir, progress=False)
        report = indexer.index(roots, prune=prune)
        return report, snapshot(store)


def logged(store_dir: Path) -> list[tuple[str, str, str]]:
    lines = (store_dir / COLLECTION / "errors.jsonl").read_text().splitlines()
    return sorted((r["path"], r["stage"], r["cause"]) for r in map(json.loads, lines))


def counts(report) -> tuple:
    return (report.files, report.indexed, report.copied, report.unchanged, report.failed, report.partial,
            report.chunks_embedded, report.points_written, report.points_deleted, report.pruned_files,
            report.points_total)


def test_import_omnisdk_does_not_import_ray():
    code = ("import sys, omnisdk, omnisdk.search, omnisdk.search.ray_engine, omnisdk.search.ray_workers, omnisdk.cli; "
            "omnisdk.cli.build_parser(); assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ray_engine_builds_the_local_indexers_collection_and_reruns_alike(model, model_dir, tmp_path):
    data = write_folder(tmp_path / "data")  # PNG, PDF (3 pages), WAV, text; a corrupt PNG and a cut PDF
    local_report, local = run("local", model, model_dir, tmp_path / "local", [data])
    code = cli_main(["index", str(data), "--collection", COLLECTION, "--model", str(model_dir), "--store",
                     str(tmp_path / "ray"), "--engine", "ray", "--batch-size", "2", "--no-progress"])
    assert code == 3  # some files failed, as locally
    with open_store(str(tmp_path / "ray")) as store:
        distributed = snapshot(store)
    assert len(local) == local_report.points_total == 7
    assert_same_points(local, distributed)
    assert logged(tmp_path / "ray") == logged(tmp_path / "local")
    assert {Path(p).name: stage for p, stage, _ in logged(tmp_path / "ray")} == {"broken.png": "embed", "cut.pdf": "chunk"}

    # A re-run skips everything; then a touched, a moved, a changed and a deleted file, with prune.
    report, again = run("ray", model, model_dir, tmp_path / "ray", [data])
    assert (report.unchanged, report.indexed, report.points_written, report.points_deleted) == (5, 0, 0, 0)
    assert_same_points(distributed, again)
    later = time.time() + 100
    os.utime(data / "red.png", (later, later))
    shutil.move(data / "report.pdf", data / "sub" / "renamed.pdf")
    (data / "notes.txt").write_text("container cranes at the quay")
    (data / "beep.wav").unlink()
    local_report, local = run("local", model, model_dir, tmp_path / "local", [data], prune=True)
    report, distributed = run("ray", model, model_dir, tmp_path / "ray", [data], prune=True)
    assert (report.copied, report.unchanged, report.indexed, report.pruned_files) == (1, 2, 1, 2)  # report.pdf moved, beep.wav gone
    assert counts(report) == counts(local_report)
    assert_same_points(local, distributed)
    assert logged(tmp_path / "ray") == logged(tmp_path / "local")


def test_a_killed_embedding_actor_is_restarted_and_nothing_is_lost_or_duplicated(model, model_dir, baseline, tmp_path):
    data, local_report, local, local_log = baseline
    fault = tmp_path / "kill-me"
    fault.write_text("the first embedding actor to claim this file SIGKILLs itself before its second batch")
    events = []
    with open_store(str(tmp_path / "ray")) as store:
        indexer = RayIndexer(store, COLLECTION, model, model_dir=model_dir, progress=False, batch_size=2,
                             ray=RayOptions(files_per_task=2, fault_file=str(fault)),
                             on_event=lambda name, info: events.append((name, info)))
        report = indexer.index([data])
        distributed = snapshot(store)
    assert not fault.exists() and Path(str(fault) + ".claimed").exists()  # an actor really died mid-run
    assert_same_points(local, distributed)
    assert counts(report) == counts(local_report)
    written = [info["path"] for name, info in events if name == "file"]
    assert len(written) == len(set(written)) == local_report.indexed  # every file written once
    assert logged(tmp_path / "ray") == local_log


def test_the_ray_engine_refuses_watch_and_an_unsaved_model(tmp_path, tiny_model_factory, model_dir):
    code = cli_main(["index", str(tmp_path), "--collection", COLLECTION, "--model", str(model_dir), "--store",
                     str(tmp_path / "s"), "--engine", "ray", "--watch"])
    assert code != 0
    unsaved = tiny_model_factory(modalities=["text"])
    with open_store(str(tmp_path / "s2")) as store, pytest.raises(Exception, match="save the model"):
        RayIndexer(store, COLLECTION, unsaved)
