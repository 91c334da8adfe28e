"""The Indexer on real files: chunks, errors, re-runs, changes, prune, refusals, isolation, and kill -9."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from media.audio import write_wav
from media.pdf import SAMPLE_PAGES, write_pdf, write_truncated_pdf
from media.video import truncated_copy, write_mp4
from omnisdk.isolation import IsolatedRunner, IsolationError
from omnisdk.items import Locator
from omnisdk.search import Indexer, point_id
from omnisdk.search.indexer import stored_mtime
from omnisdk.search.walk import file_sha256
from omnisdk.store import FingerprintMismatchError, open_store

COLLECTION = "files"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory) -> Path:
    directory = tmp_path_factory.mktemp("model") / "tiny"
    tiny_model_factory(modalities=["text", "image", "document", "audio", "video"]).save(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    from omnisdk.model import OmniModel

    return OmniModel.load(model_dir)


def write_folder(root: Path) -> Path:
    """Five good files (7 chunks), two broken ones, one unsupported, one hidden, one symlink out."""
    from PIL import Image

    (root / "sub").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), (220, 30, 30)).save(root / "red.png")
    Image.new("RGB", (24, 24), (30, 30, 220)).save(root / "sub" / "blue.png")
    write_pdf(root / "report.pdf")  # 3 pages
    write_wav(root / "beep.wav", seconds=1.0)
    (root / "notes.txt").write_text("solar panels on a harbour roof")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    write_truncated_pdf(root / "cut.pdf", root / "report.pdf", 0.5)
    (root / "data.bin").write_bytes(bytes(range(16)))
    (root / ".secret.png").write_bytes((root / "red.png").read_bytes())
    outside = root.parent / f"{root.name}-outside.png"
    shutil.copy(root / "red.png", outside)
    (root / "link.png").symlink_to(outside)
    return root


def snapshot(store, collection: str = COLLECTION) -> dict[str, tuple[np.ndarray, dict]]:
    return {p.id: (np.asarray(p.vector), p.payload) for p in store.scroll(collection, with_vectors=True)}


def assert_same_points(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key, (vector, payload) in a.items():
        np.testing.assert_allclose(vector, b[key][0], atol=1e-5)
        drop = ("indexed_at",)
        assert {k: v for k, v in payload.items() if k not in drop} == {k: v for k, v in b[key][1].items() if k not in drop}


def run_index(model, model_dir, store_dir, roots, **kwargs):
    with open_store(str(store_dir)) as store:
        indexer = Indexer(store, COLLECTION, model, model_dir=model_dir, progress=False,
                          **{k: v for k, v in kwargs.items() if k not in ("prune",)})
        report = indexer.index(roots, prune=kwargs.get("prune", False))
        return report, snapshot(store)


def test_index_a_folder(model, model_dir, tmp_path):
    data = write_folder(tmp_path / "data")
    report, points = run_index(model, model_dir, tmp_path / "store", [data])
    assert (report.files, report.indexed, report.failed, report.unchanged) == (8, 5, 2, 0)
    assert report.skipped == {"unsupported": 1, "hidden": 1, "symlink": 1}
    assert report.chunks_embedded == report.points_written == report.points_total == 7
    failed = {Path(e.path).name: e for e in report.errors}
    assert set(failed) == {"broken.png", "cut.pdf"}
    assert failed["cut.pdf"].stage == "chunk" and "damaged PDF" in failed["cut.pdf"].cause
    assert failed["broken.png"].stage == "embed"
    logged = [json.loads(line) for line in (tmp_path / "store" / COLLECTION / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in logged) == ["broken.png", "cut.pdf"] and all(r["cause"] for r in logged)
    by_source: dict[str, list] = {}
    for pid, (vector, payload) in points.items():
        by_source.setdefault(Path(payload["source"]).name, []).append(payload)
        assert pid == point_id(payload["sha256"], payload["source"], payload["locator"])
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        keys = {"modality", "source", "locator", "sha256", "size", "mtime", "chunks", "indexed_at"}
        assert set(payload) == keys | ({"text"} if payload["modality"] == "text" else set())
        assert Path(payload["source"]).is_absolute()
    assert sorted(by_source) == ["beep.wav", "blue.png", "notes.txt", "red.png", "report.pdf"]
    assert sorted(p["locator"]["page"] for p in by_source["report.pdf"]) == [1, 2, 3]
    assert {p["modality"] for p in by_source["report.pdf"]} == {"document"}
    assert by_source["red.png"][0]["locator"] is None and by_source["red.png"][0]["chunks"] == 1
    assert by_source["notes.txt"][0]["locator"] == {"line0": 1, "line1": 1}
    assert by_source["notes.txt"][0]["text"] == "solar panels on a harbour roof"
    timings = report.timings
    assert set(timings) == {"decode", "encode", "upsert", "bookkeeping"}
    assert all(timings[name] > 0 for name in ("decode", "encode", "upsert")), timings
    assert sum(timings.values()) == pytest.approx(report.seconds, abs=0.01)
    assert "seconds in encode" in report.markdown()


def test_rerun_skips_unchanged_files_and_touch_only_refreshes_mtime(model, model_dir, tmp_path, monkeypatch):
    data = write_folder(tmp_path / "data")
    _, first = run_index(model, model_dir, tmp_path / "store", [data])
    import omnisdk.search.indexer as indexer_module

    hashed = []
    monkeypatch.setattr(indexer_module, "file_sha256", lambda p: hashed.append(p.name) or file_sha256(p))
    report, second = run_index(model, model_dir, tmp_path / "store", [data])
    assert sorted(hashed) == ["broken.png", "cut.pdf"]  # size + mtime spare the stored files a hash
    assert (report.indexed, report.unchanged, report.points_written, report.points_deleted) == (0, 5, 0, 0)
    assert report.failed == 2
    assert report.timings["upsert"] == 0  # nothing was written  # broken files are tried (and logged) again
    assert_same_points(first, second)
    os.utime(data / "notes.txt", (time.time() + 100, time.time() + 100))
    report, third = run_index(model, model_dir, tmp_path / "store", [data])
    assert (report.indexed, report.unchanged, report.points_written) == (0, 5, 0)
    notes = [p for _, p in third.values() if p["source"].endswith("notes.txt")]
    assert notes[0]["mtime"] == stored_mtime((data / "notes.txt").stat().st_mtime)


def test_changed_file_replaces_its_chunks_and_prune_drops_deleted_files(model, model_dir, tmp_path):
    data = write_folder(tmp_path / "data")
    _, before = run_index(model, model_dir, tmp_path / "store", [data])
    write_pdf(data / "report.pdf", SAMPLE_PAGES[:2])  # 3 pages -> 2
    (data / "notes.txt").write_text("container cranes at the quay")
    (data / "sub" / "blue.png").unlink()
    report, after = run_index(model, model_dir, tmp_path / "store", [data])
    assert report.indexed == 2 and report.points_written == 3 and report.points_deleted == 4
    sources = sorted(Path(p["source"]).name for _, p in after.values())
    assert sources.count("report.pdf") == 2 and sources.count("notes.txt") == 1
    assert "blue.png" in sources  # not pruned without --prune
    assert not set(before) - set(after) - {i for i, (_, p) in before.items() if Path(p["source"]).name in ("report.pdf", "notes.txt")}
    report, pruned = run_index(model, model_dir, tmp_path / "store", [data], prune=True)
    assert report.pruned_files == 1 and report.points_deleted == 1
    assert "blue.png" not in {Path(p["source"]).name for _, p in pruned.values()}
    # prune only looks under the given roots: indexing another folder leaves these points alone
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    report, both = run_index(model, model_dir, tmp_path / "store", [other], prune=True)
    assert report.pruned_files == 0 and len(both) == len(pruned) + 1


def test_a_moved_file_reuses_its_vectors(model, model_dir, tmp_path):
    data = write_folder(tmp_path / "data")
    _, before = run_index(model, model_dir, tmp_path / "store", [data])
    shutil.move(data / "report.pdf", data / "sub" / "renamed.pdf")
    report, after = run_index(model, model_dir, tmp_path / "store", [data], prune=True)
    assert (report.copied, report.indexed, report.chunks_embedded, report.pruned_files) == (1, 0, 0, 1)
    old = {p["locator"]["page"]: v for v, p in before.values() if p["source"].endswith("report.pdf")}
    new = {p["locator"]["page"]: v for v, p in after.values() if p["source"].endswith("renamed.pdf")}
    assert sorted(new) == [1, 2, 3]
    for page in new:
        np.testing.assert_array_equal(old[page], new[page])


def test_another_model_is_refused(model, model_dir, tmp_path, tiny_model_factory):
    data = write_folder(tmp_path / "data")
    run_index(model, model_dir, tmp_path / "store", [data])
    other = tiny_model_factory(modalities=["text", "image"], seed=1)
    with open_store(str(tmp_path / "store")) as store:
        with pytest.raises(FingerprintMismatchError) as info:
            Indexer(store, COLLECTION, other)
    assert model.fingerprint[:12] in str(info.value) and other.fingerprint[:12] in str(info.value)


def test_long_audio_and_video_are_chunked_and_bad_videos_cost_one_file(model, model_dir, tmp_path):
    data = tmp_path / "media"
    data.mkdir()
    write_wav(data / "long.wav", seconds=25.0)  # tiny preset: 10 s windows
    clip = write_mp4(data / "clip.mp4")
    truncated_copy(clip, data / "half.mp4", 200)
    report, points = run_index(model, model_dir, tmp_path / "store", [data])
    assert report.indexed == 2 and report.failed == 1 and Path(report.errors[0].path).name == "half.mp4"
    windows = sorted((p["locator"]["t0"], p["locator"]["t1"]) for _, p in points.values() if p["modality"] == "audio")
    assert windows == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert [p["modality"] for _, p in points.values()].count("video") == 1


_real_read_frames = None


def _crash_on_bomb(path, locator, config):
    if Path(path).name.startswith("bomb"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return _real_read_frames(path, locator, config)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork isolation is Linux-only")
def test_a_video_decoder_crash_costs_that_file_only(model, model_dir, tmp_path, monkeypatch):
    import omnisdk.plugins.video as video

    global _real_read_frames
    _real_read_frames = video.read_frames
    monkeypatch.setattr(video, "read_frames", _crash_on_bomb)
    data = tmp_path / "media"
    data.mkdir()
    write_mp4(data / "bomb.mp4")
    write_mp4(data / "clip.mp4")
    report, points = run_index(model, model_dir, tmp_path / "store", [data])
    assert report.indexed == 1 and report.failed == 1
    assert "the video decoder crashed (killed by SIGSEGV)" in report.errors[0].cause
    assert [Path(p["source"]).name for _, p in points.values()] == ["clip.mp4"]


def _raise_value_error():
    raise ValueError("bad frame")


def _hang():
    time.sleep(60)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork isolation is Linux-only")
def test_isolated_runner_keeps_exception_types_and_stops_hangs():
    with IsolatedRunner(timeout_s=0.5, what="the decoder") as runner:
        with pytest.raises(ValueError, match="bad frame"):
            runner.run(_raise_value_error)
        start = time.monotonic()
        with pytest.raises(IsolationError, match="the decoder took over 0.5 s"):
            runner.run(_hang)
        assert time.monotonic() - start < 5
        assert runner.run(len, [1, 2, 3]) == 3  # a fresh child takes the next job


# -- crash safety -----------------------------------------------------------------------------------------
KILLER = textwrap.dedent("""
    import os, signal, sys
    from omnisdk.model import OmniModel
    from omnisdk.search import Indexer
    from omnisdk.store import open_store

    model_dir, store_dir, data, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    writes = 0

    def on_event(name, info):
        global writes
        if name in ("upsert", "delete", "prune"):
            writes += 1
            if writes == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # right after a store write returned

    store = open_store(store_dir)
    Indexer(store, "files", OmniModel.load(model_dir), model_dir=model_dir, batch_size=2, upsert_batch_size=2,
            progress=False, on_event=on_event).index([data], prune=True)
    store.close()
""")


def kill_run(model_dir: Path, store_dir: Path, data: Path, kill_at: int) -> int:
    done = subprocess.run([sys.executable, "-c", KILLER, str(model_dir), str(store_dir), str(data), str(kill_at)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-2000:]
    return done.returncode


def kill_cli_when_logged(model_dir: Path, store_dir: Path, data: Path) -> None:
    """Run `omnisdk index` and SIGKILL it as soon as its error log shows a failure (mid-run)."""
    log = store_dir / COLLECTION / "errors.jsonl"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "omnisdk", "index", str(data), "--model", str(model_dir), "--collection",
                             COLLECTION, "--store", str(store_dir), "--prune", "--batch-size", "1", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and log.stat().st_size > 0:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)


def count_points(store_dir: Path) -> int:
    with open_store(str(store_dir)) as store:
        return store.count(COLLECTION)


@pytest.mark.slow
def test_kill_at_any_write_then_rerun_gives_exactly_a_clean_runs_points(model, model_dir, tmp_path):
    data = write_folder(tmp_path / "data")
    _, clean = run_index(model, model_dir, tmp_path / "clean", [data], prune=True)
    store = tmp_path / "killed"
    # A chain of kills, each resumed by the next run: after the 1st write (the first file, the WAV),
    # after the 1st write of the resumed run (pages 1-2 of the 3-page PDF: a file half written), then
    # the CLI killed from outside as soon as its error log shows a failure.
    assert kill_run(model_dir, store, data, 1) == -signal.SIGKILL
    assert kill_run(model_dir, store, data, 1) == -signal.SIGKILL
    assert count_points(store) == 3
    kill_cli_when_logged(model_dir, store, data)
    _, resumed = run_index(model, model_dir, store, [data], prune=True)
    assert_same_points(resumed, clean)

    # Changes: a new PDF content (fewer pages), a new text, a deleted image. The first kill falls
    # between the PDF's new points and the deletion of its stale ones, the second between the
    # text's new point and its stale one's deletion, before the prune.
    write_pdf(data / "report.pdf", SAMPLE_PAGES[1:])
    (data / "notes.txt").write_text("container cranes at the quay")
    (data / "red.png").unlink()
    _, clean2 = run_index(model, model_dir, tmp_path / "clean2", [data], prune=True)
    assert kill_run(model_dir, store, data, 1) == -signal.SIGKILL
    assert count_points(store) == len(clean) + 2  # the PDF's new pages and its old ones
    assert kill_run(model_dir, store, data, 2) == -signal.SIGKILL
    _, resumed2 = run_index(model, model_dir, store, [data], prune=True)
    assert_same_points(resumed2, clean2)
    keys = [(p["source"], json.dumps(p["locator"])) for _, p in resumed2.values()]
    assert len(keys) == len(set(keys))  # no duplicates per chunk
