"""Watch mode on real files: creates, edits, moves, deletes, ignore-file edits, half-written files,
a busy store, Ctrl-C of the CLI, and a resume that catches up with what changed while stopped.

The watcher is driven step by step (`Watcher.step`) until the collection shows the change, with a
deadline: no fixed sleeps, so a slow machine only makes a test slower, not flaky.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("watchdog")

from omnisdk.search import Indexer  # noqa: E402
from omnisdk.search.rules import WalkRules  # noqa: E402
from omnisdk.search.walk import walk, walk_paths  # noqa: E402
from omnisdk.search.watch import ChangeQueue, Watcher  # noqa: E402
from omnisdk.store import StoreLockedError, open_store  # noqa: E402

COLLECTION = "watched"
DEADLINE = 60.0  # seconds a change may take to show: generous, only reached when something is broken


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory) -> Path:
    directory = tmp_path_factory.mktemp("model") / "tiny"
    tiny_model_factory(modalities=["text", "image"]).save(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    from omnisdk.model import OmniModel

    return OmniModel.load(model_dir)


def png(path: Path, color=(200, 40, 40)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)
    return path


def sources(store) -> dict[str, int]:
    """source -> number of points."""
    out: dict[str, int] = {}
    for point in store.scroll(COLLECTION):
        out[point.payload["source"]] = out.get(point.payload["source"], 0) + 1
    return out


def until(watcher: Watcher, condition, deadline: float = DEADLINE) -> None:
    """Step the watcher until `condition(store)` holds; fail after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        watcher.step()
        if condition(watcher.indexer.store):
            return
        assert time.monotonic() < end, f"no sync within {deadline} s; collection holds {sources(watcher.indexer.store)}"
        time.sleep(0.02)


def make_watcher(model, store_dir: Path, roots, **kwargs) -> Watcher:
    store = open_store(str(store_dir))
    indexer = Indexer(store, COLLECTION, model, progress=False)
    return Watcher(indexer, roots, debounce=kwargs.pop("debounce", 0.05), **kwargs)


# -- the debounce rules, with explicit times --------------------------------------------------------------
def test_queue_waits_for_quiet_and_for_a_stable_file(tmp_path):
    queue = ChangeQueue(debounce=1.0, max_wait=10.0)
    path = tmp_path / "big.txt"
    path.write_text("first half ")
    queue.add(path, now=0.0)
    queue.add(path, now=0.5)  # a second event restarts the quiet period
    assert queue.due(1.2) == []
    with open(path, "a") as fh:  # written again without an event reaching the queue
        fh.write("second half, longer than the first")
    assert queue.due(1.6) == []  # quiet, but its size changed since its last event: not taken
    assert len(queue) == 1
    assert queue.due(2.0) == []
    assert queue.due(2.6) == [path]  # stable for a debounce since it was last seen changed
    assert len(queue) == 0


def test_queue_takes_a_file_that_never_goes_quiet_after_max_wait(tmp_path):
    queue = ChangeQueue(debounce=1.0, max_wait=5.0)
    log = tmp_path / "app.log"
    for t in range(6):
        log.write_text("x" * (t + 1))
        queue.add(log, now=float(t))
        taken = queue.due(float(t) + 0.1)
        assert taken == ([log] if t == 5 else [])
    gone = tmp_path / "gone.txt"
    queue.add(gone, now=10.0)  # a deleted path is stable: due after the debounce
    assert queue.due(11.0) == [gone]


def test_queue_refuses_bad_settings():
    with pytest.raises(Exception, match="debounce"):
        ChangeQueue(debounce=2.0, max_wait=1.0)


# -- walk_paths selects what walk selects -----------------------------------------------------------------
def test_walk_paths_agrees_with_walk_on_changed_paths(tmp_path):
    root = tmp_path / "root"
    for rel in ("a.txt", "keep/b.txt", "keep/deep/c.md", "drafts/d.txt", "keep/e.log", "keep/.hidden/f.txt",
                "notes/g.txt", "notes/sub/h.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / ".gitignore").write_text("*.log\n")
    (root / "notes" / ".omnisdkignore").write_text("sub/\n")
    rules = WalkRules(exclude=["drafts/"])
    full = set(walk([root], rules).files)
    for changed in (["keep"], ["keep/deep/c.md"], ["drafts/d.txt"], ["keep/e.log"], ["keep/.hidden/f.txt"],
                    ["notes"], ["notes/sub/h.txt"], ["a.txt", "keep/b.txt"], ["missing.txt"], ["."]):
        paths = [root / c for c in changed]
        expected = {f for f in full if any(f == p.resolve() or f.is_relative_to(p.resolve()) for p in paths)}
        assert set(walk_paths(paths, [root], rules).files) == expected, changed
    assert walk_paths([tmp_path / "elsewhere.txt"], [root], rules).files == []


# -- a live watcher ---------------------------------------------------------------------------------------
def test_watch_follows_creates_edits_moves_deletes_and_ignore_files(model, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    png(data / "red.png")
    (data / "notes.txt").write_text("harbour cranes at dawn")
    store_dir = data / ".omnisdk"  # the store inside the watched folder: its own writes must not loop
    with make_watcher(model, store_dir, [data]) as watcher:
        first = watcher.start()
        assert (first.indexed, first.points_total) == (2, 2)
        red, notes = str(data / "red.png"), str(data / "notes.txt")

        (data / "new.txt").write_text("a new note about solar panels")  # create
        until(watcher, lambda s: str(data / "new.txt") in sources(s))

        before = {p.id for p in watcher.indexer.store.scroll(COLLECTION) if p.payload["source"] == notes}
        (data / "notes.txt").write_text("the cranes moved to another quay")  # edit
        until(watcher, lambda s: {p.id for p in s.scroll(COLLECTION) if p.payload["source"] == notes} - before != set())
        assert sources(watcher.indexer.store)[notes] == 1  # replaced, not added

        (data / "pics").mkdir()
        seen = len(watcher.reports)
        os.rename(red, data / "pics" / "moved.png")  # move: the vectors are reused, not embedded again
        until(watcher, lambda s: red not in sources(s) and str(data / "pics" / "moved.png") in sources(s))
        assert sum(r.copied for r in watcher.reports[seen:]) == 1
        assert sum(r.chunks_embedded for r in watcher.reports[seen:]) == 0

        shutil.move(str(data / "pics"), str(data / "photos"))  # a folder moved
        until(watcher, lambda s: str(data / "photos" / "moved.png") in sources(s)
              and not any(k.startswith(str(data / "pics")) for k in sources(s)))

        (data / "new.txt").unlink()  # delete
        until(watcher, lambda s: str(data / "new.txt") not in sources(s))

        (data / ".omnisdkignore").write_text("photos/\n")  # rules changed: the folder's points go
        until(watcher, lambda s: not any(k.startswith(str(data / "photos")) for k in sources(s)))
        (data / ".omnisdkignore").unlink()  # and come back
        until(watcher, lambda s: str(data / "photos" / "moved.png") in sources(s))

        # Hidden files (editor swap files) and the store's own writes never make a batch.
        (data / ".notes.txt.swp").write_text("swap")
        for _ in range(10):
            watcher.step()
        assert all("swp" not in str(p) for p in watcher.queue.due(time.monotonic() + 10))
        assert sorted(sources(watcher.indexer.store)) == [notes, str(data / "photos" / "moved.png")]


def test_a_half_written_file_is_indexed_once_complete(model, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    with make_watcher(model, tmp_path / "store", [data], debounce=1.0) as watcher:
        watcher.start()
        target = data / "long.txt"
        with open(target, "w") as fh:  # written in pieces, each well inside the debounce
            for k in range(5):
                fh.write(f"paragraph {k} about tidal energy.\n\n")
                fh.flush()
                watcher.step()
                time.sleep(0.02)
        until(watcher, lambda s: str(target) in sources(s))
        assert sum(r.indexed for r in watcher.reports[1:]) == 1  # once, when complete
        text = [p.payload.get("text", "") for p in watcher.indexer.store.scroll(COLLECTION)]
        assert any("paragraph 4" in t for t in text)  # the complete file, not a prefix


def test_a_busy_store_delays_a_batch_and_it_is_retried(model, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    busy = []
    with make_watcher(model, tmp_path / "store", [data], on_busy=busy.append) as watcher:
        watcher.start()
        other = open_store(str(tmp_path / "store"))
        other.count(COLLECTION)  # another handle holds the collection (the app, a search)
        (data / "a.txt").write_text("written while the collection was held")
        end = time.monotonic() + DEADLINE
        while not busy:
            watcher.step()
            assert time.monotonic() < end
            time.sleep(0.02)
        assert isinstance(busy[0], StoreLockedError) and len(watcher.queue) == 1  # put back, for later
        other.close()
        until(watcher, lambda s: str(data / "a.txt") in sources(s))


def test_run_stops_on_the_event_and_a_restart_catches_up(model, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    (data / "a.txt").write_text("first note")
    store_dir = tmp_path / "store"
    watcher = make_watcher(model, store_dir, [data])
    stop = threading.Event()
    stop.set()  # stopped before the first tick: the catch-up run only, then a clean close
    reports = watcher.run(stop)
    assert len(reports) == 1 and reports[0].indexed == 1
    # While nothing watches: one file deleted, one added. The next start catches up (prune included).
    (data / "a.txt").unlink()
    (data / "b.txt").write_text("second note")
    watcher = make_watcher(model, store_dir, [data])
    reports = watcher.run(threading.Event(), cycles=2)  # a bounded run: catch-up and two ticks
    assert reports[0].pruned_files == 1 and reports[0].indexed == 1
    with open_store(str(store_dir)) as store:  # closed on the way out: another handle opens it
        assert sorted(sources(store)) == [str(data / "b.txt")]


def test_polling_fallback_sees_changes(model, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    with make_watcher(model, tmp_path / "store", [data], poll=0.1) as watcher:
        watcher.start()
        (data / "polled.txt").write_text("seen by polling")
        until(watcher, lambda s: str(data / "polled.txt") in sources(s))
        (data / "polled.txt").unlink()
        until(watcher, lambda s: not sources(s))


def test_cli_watch_stops_cleanly_on_ctrl_c(model_dir, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    (data / "a.txt").write_text("indexed by the catch-up run")
    store_dir = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "omnisdk", "index", str(data), "--model", str(model_dir), "--collection", COLLECTION,
         "--store", str(store_dir), "--watch", "--debounce", "0.05", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # the summary table, then "watching ..."
            lines.append(line)
            if line.startswith("watching"):
                break
        assert lines and lines[-1].startswith("watching"), "".join(lines) + proc.stderr.read()
        (data / "b.txt").write_text("indexed while watching")
        for line in proc.stdout:  # one line per batch
            if "1 indexed" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped; collection 'watched' is consistent" in out
    with open_store(str(store_dir)) as store:  # the lock was released
        assert sorted(sources(store)) == [str(data / "a.txt"), str(data / "b.txt")]


KILLED_WATCHER = """
import os, signal, sys, time
from omnisdk.model import OmniModel
from omnisdk.search import Indexer
from omnisdk.search.watch import Watcher
from omnisdk.store import open_store

model_dir, store_dir, data = sys.argv[1:4]
armed = False

def on_event(name, info):
    if armed and name in ("upsert", "delete", "prune"):
        os.kill(os.getpid(), signal.SIGKILL)  # right after the first store write of a watch batch

indexer = Indexer(open_store(store_dir), "watched", OmniModel.load(model_dir), progress=False, on_event=on_event)
watcher = Watcher(indexer, [data], debounce=0.05)
watcher.start()
armed = True
print("ready", flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    watcher.step()
    time.sleep(0.02)
sys.exit(1)
"""


@pytest.mark.slow
def test_a_watcher_killed_mid_batch_is_repaired_by_the_next_start(model, model_dir, tmp_path):
    data = (tmp_path / "data").resolve()
    data.mkdir()
    (data / "notes.txt").write_text("harbour cranes at dawn")
    png(data / "red.png")
    png(data / "blue.png", (30, 30, 220))
    store_dir = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WATCHER, str(model_dir), str(store_dir), str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
    (data / "notes.txt").write_text("the cranes moved to another quay")  # new points, then stale ones deleted
    (data / "blue.png").unlink()
    (data / "new.txt").write_text("solar panels on the roof")
    assert proc.wait(timeout=180) == -signal.SIGKILL, proc.stderr.read()[-2000:]

    with make_watcher(model, store_dir, [data]) as watcher:  # the next start's catch-up
        watcher.start()
        resumed = {p.id: p.payload for p in watcher.indexer.store.scroll(COLLECTION)}
    with open_store(str(tmp_path / "clean")) as store:
        Indexer(store, COLLECTION, model, progress=False).index([data])
        clean = {p.id: p.payload for p in store.scroll(COLLECTION)}
    drop = ("indexed_at",)
    assert {k: {f: v for f, v in p.items() if f not in drop} for k, p in resumed.items()} == \
        {k: {f: v for f, v in p.items() if f not in drop} for k, p in clean.items()}
