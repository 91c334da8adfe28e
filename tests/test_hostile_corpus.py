"""Every file of the hostile corpus (tests/hostile) gives a unit vector or a one-line error naming it.

Run through `OmniModel.encode` one file at a time (a per-file time limit) and through one
`omnisdk embed` over the whole corpus (a subprocess, as a user runs it; its peak RSS is measured).
Images, audio, videos, PDFs, text and special files.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from hostile.measure import cli_env, omnisdk, run_measured
from omnisdk.items import printable

PER_FILE_LIMIT_S = 20.0  # far above the slowest file (a 1 MB word, about 3 s under load): catches hangs


@pytest.fixture(scope="module")
def corpus(hostile):
    return hostile


def _outcome(vector: np.ndarray, failures) -> str:
    if failures:
        return "error"
    if np.isfinite(vector).all() and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4:
        return "vector"
    return "bad"  # neither a unit vector nor an error: the one outcome that must never happen


def test_encode_gives_each_file_a_unit_vector_or_a_one_line_error(corpus, monkeypatch):
    root, model, cases = corpus
    monkeypatch.setenv("OMNISDK_PIPE_TIMEOUT_S", "0.5")  # the FIFO nobody writes to
    assert len(cases) >= 60
    assert {c.path.parent.name for c in cases} == {"image", "audio", "video", "pdf", "text", "special"}
    rows, wrong = [], []
    for case in cases:
        start = time.monotonic()
        vectors, failures = model.encode([case.path], errors="ignore", return_errors=True, show_progress=False)
        seconds = time.monotonic() - start
        got = _outcome(vectors[0], failures)
        message = str(failures[0]) if failures else ""
        rows.append(f"| {printable(str(case.path.relative_to(root / 'corpus')))} | {case.what} | {got} | {seconds:.2f} | {message[:90]} |")
        if got == "bad" or (case.expect != "either" and got != case.expect):
            wrong.append(f"{case.path.name!r}: expected {case.expect}, got {got} {message}")
        if failures and ("\n" in message or printable(case.path.name) not in message):
            wrong.append(f"{case.path.name!r}: the error is not one line naming the file: {message!r}")
        if seconds > PER_FILE_LIMIT_S:
            wrong.append(f"{case.path.name!r}: took {seconds:.1f} s")
    print("\n| file | hostile because | outcome | s | error |\n|---|---|---|---|---|\n" + "\n".join(rows))
    assert wrong == []


def test_cli_embed_over_the_corpus_answers_every_file(corpus):
    root, _, cases = corpus
    done = run_measured(omnisdk("embed", "--model", str(root / "model"), "--json", *[str(c.path) for c in cases]),
                        timeout=900, env=cli_env())  # a loaded 2-core machine takes minutes; a hang is killed
    assert not done.timed_out, done.stderr[-3000:]
    peak_mb = done.peak_mb
    assert done.returncode == 3, done.stderr[-3000:]
    items = json.loads(done.stdout)["items"]
    assert len(items) == len(cases)
    failed_lines = [line for line in done.stderr.splitlines() if line.startswith("omnisdk: failed: ")]
    errors = 0
    for case, row in zip(cases, items):
        assert row["input"] == printable(str(case.path))
        if "error" in row:
            errors += 1
            assert case.expect != "vector", (case.path.name, row["error"])
            assert f"omnisdk: failed: {printable(str(case.path))}: " in done.stderr
        else:
            vector = np.asarray(row["embedding"])
            assert case.expect != "error", case.path.name
            assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-5, case.path.name
    assert len(failed_lines) == errors and 0 < errors < len(cases)
    # what decoders print goes into the causes (quoted in the 'failed' lines, as "[decoder log: ...]"), not
    # raw onto the terminal (FFmpeg in the isolated child, mpg123 in-process)
    assert any("[decoder log: moov atom not found" in line for line in failed_lines)  # a corrupt MP4's cause quotes it
    raw = [line for line in done.stderr.splitlines() if not line.startswith("omnisdk: failed: ")]
    assert not any("moov atom" in line or "libmpg123" in line for line in raw), raw
    print(f"\nomnisdk embed over {len(cases)} hostile files: {len(cases) - errors} vectors, {errors} errors, "
          f"peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 3000  # the tiny model and torch take about 1 GB; a decoded bomb would take tens
