"""Decoding overlapped with encoding (omnisdk/decode_ahead.py, omnisdk/encode_stream.py): order and
results equal to the sequential path, a bounded queue, and a bad file still costing one file."""
from __future__ import annotations

import itertools
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from media.audio import write_wav
from media.video import write_mp4
from omnisdk.decode_ahead import decode_ahead
from test_index import assert_same_points, run_index, write_folder


def test_results_come_in_job_order_whatever_finishes_first():
    import random
    import time

    delays = random.Random(0)
    waits = [delays.uniform(0, 0.01) for _ in range(40)]

    def prepare(job: int) -> int:
        time.sleep(waits[job])  # later jobs often finish first
        return job * job

    pooled = list(decode_ahead(prepare, range(40), workers=4))
    assert pooled == list(decode_ahead(prepare, range(40), workers=0))
    assert [r for _, r, _ in pooled] == [j * j for j in range(40)]


def test_at_most_depth_jobs_are_ahead_and_jobs_are_pulled_lazily():
    pulled, started, ahead = [], [], []
    lock = threading.Lock()

    def jobs():
        for n in itertools.count():  # endless: only a lazy, bounded reader can finish
            pulled.append(n)
            yield n

    def prepare(job: int) -> int:
        with lock:
            started.append(job)
        return job

    stream = decode_ahead(prepare, jobs(), workers=2, depth=3)
    for consumed, (job, _, _) in enumerate(stream):
        assert job == consumed
        ahead.append(len(pulled) - consumed - 1)  # pulled but not yet handed over, besides this one
        if consumed == 50:
            break
    stream.close()
    assert max(ahead) <= 3 and max(len(pulled) - 51, 0) <= 3
    assert max(started) <= 50 + 3


def test_the_pool_decodes_the_next_job_while_the_caller_holds_one():
    second_started = threading.Event()

    def prepare(job: int) -> int:
        if job == 1:
            second_started.set()
        return job

    for job, _, _ in decode_ahead(prepare, range(3), workers=1):
        if job == 0:  # the caller is still busy with job 0: job 1 must be under way already
            assert second_started.wait(10)
    overlapped = threading.Event()
    for job, _, _ in decode_ahead(lambda j: overlapped.set() if j == 1 else None, range(3), workers=0):
        if job == 0:  # the sequential path, for contrast: nothing runs meanwhile
            assert not overlapped.is_set()


def test_a_job_that_raises_fails_alone():
    def prepare(job: int) -> int:
        if job == 3:
            raise ValueError("corrupt input 3")
        return job

    for workers in (0, 2):
        out = list(decode_ahead(prepare, range(6), workers=workers))
        assert [j for j, _, _ in out] == list(range(6))
        assert [str(e) for _, _, e in out if e is not None] == ["corrupt input 3"]
        assert [r for _, r, e in out if e is None] == [0, 1, 2, 4, 5]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory) -> Path:
    directory = tmp_path_factory.mktemp("model") / "tiny"
    tiny_model_factory(modalities=["text", "image", "document", "audio", "video"]).save(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    from omnisdk.model import OmniModel

    return OmniModel.load(model_dir)


def test_encode_gives_the_sequential_vectors_and_failures(model, tmp_path):
    from PIL import Image

    folder = write_folder(tmp_path / "files")
    for i in range(6):  # more batches than workers: later ones are decoded while earlier ones embed
        Image.new("RGB", (20 + i, 24), (40 * i, 90, 200 - 30 * i)).save(folder / f"img{i}.png")
    items = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) + ["a text query"]
    sequential, seq_errors = model.encode(items, batch_size=2, role="document", errors="ignore", return_errors=True,
                                          decode_workers=0)
    pooled, pool_errors = model.encode(items, batch_size=2, role="document", errors="ignore", return_errors=True,
                                       decode_workers=3)
    np.testing.assert_array_equal(pooled, sequential)  # NaN rows (failures) in the same places
    assert [(e.index, e.cause) for e in pool_errors] == [(e.index, e.cause) for e in seq_errors]
    assert {Path(str(items[e.index])).name for e in seq_errors} >= {"broken.png", "cut.pdf"}
    assert np.isfinite(pooled).all(axis=1).sum() >= len(items) - len(seq_errors) > 10


def test_index_with_a_pool_writes_the_sequential_points_and_a_corrupt_file_costs_one_file(model, model_dir, tmp_path):
    folder = write_folder(tmp_path / "files")
    write_wav(folder / "long.wav", seconds=25.0)  # three windows
    seq_report, seq_points = run_index(model, model_dir, tmp_path / "seq", [folder], batch_size=2, decode_workers=0)
    report, points = run_index(model, model_dir, tmp_path / "pool", [folder], batch_size=2, decode_workers=3)
    assert_same_points(points, seq_points)
    for r in (report, seq_report):
        assert (r.indexed, r.failed, r.partial) == (6, 2, 0)
        assert sorted(Path(e.path).name for e in r.errors) == ["broken.png", "cut.pdf"]
    assert [(e.path, e.stage, e.cause) for e in report.errors] == [(e.path, e.stage, e.cause) for e in seq_report.errors]
    assert report.chunks_embedded == seq_report.chunks_embedded == 10


_real_read_frames = None


def _crash_on_bomb(path, locator, config):
    if Path(path).name.startswith("bomb"):
        os.kill(os.getpid(), 11)  # SIGSEGV in the decoder's child process
    return _real_read_frames(path, locator, config)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork isolation is Linux-only")
def test_a_decoder_crash_in_the_pool_costs_that_file_only(model, model_dir, tmp_path, monkeypatch):
    import omnisdk.plugins.video as video

    global _real_read_frames
    _real_read_frames = video.read_frames
    monkeypatch.setattr(video, "read_frames", _crash_on_bomb)
    data = tmp_path / "media"
    data.mkdir()
    for name in ("a.mp4", "bomb.mp4", "c.mp4", "d.mp4"):
        write_mp4(data / name)
    report, points = run_index(model, model_dir, tmp_path / "store", [data], batch_size=1, decode_workers=2)
    assert report.indexed == 3 and report.failed == 1
    assert "the video decoder crashed (killed by SIGSEGV)" in report.errors[0].cause
    assert sorted(Path(p["source"]).name for _, p in points.values()) == ["a.mp4", "c.mp4", "d.mp4"]
