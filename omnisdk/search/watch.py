"""Watch mode: keep a collection in sync with folders as files are created, changed, moved or deleted.

    from omnisdk.search import Indexer
    from omnisdk.search.watch import Watcher

    watcher = Watcher(Indexer(store, "notes", model), ["~/notes"])
    watcher.run(stop)            # until the threading.Event `stop` is set (the CLI sets it on Ctrl-C)

How it works:

1. The file-system watcher (watchdog: inotify, FSEvents or ReadDirectoryChangesW; or its polling
   observer with `poll=SECONDS`, for network and container mounts where native events do not
   arrive) starts first, then a normal run with prune (`Indexer.index`) catches up with what
   changed while nothing watched. Events during that run wait in the queue, so nothing falls
   between the two.
2. Each event marks paths dirty: a move marks its source and its destination, a change to a
   `.gitignore` or `.omnisdkignore` marks its folder. A dirty path is handled once it is quiet
   (no event for `debounce` seconds) and its size and mtime are what they were at its last event,
   so a file still being written is not indexed half-written; one that never goes quiet (a log
   being appended to) is handled after `max_wait` seconds, and again when it changes later.
3. Due paths go to `Indexer.update` in one batch: files indexed as a normal run would (unchanged
   ones skipped, moved or copied ones reuse their stored vectors), points of what is gone or now
   left out by the walk rules deleted. The crash-safe contract of `Indexer.index` holds for every
   write, so a kill at any moment is repaired by the next run's catch-up.
4. Between batches the embedded store (Qdrant Edge) is closed, so `omnisdk search` and the app can
   open the collection; a batch that finds it held elsewhere waits and is retried.
5. Setting `stop` ends the loop after the batch in progress: the collection is consistent and the
   store closed; changes still waiting are picked up by the next run's catch-up.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from omnisdk.errors import OmniError
from omnisdk.search.indexer import Indexer, IndexReport
from omnisdk.search.rules import IGNORE_FILES, WalkRules
from omnisdk.search.walk import under
from omnisdk.store.base import StoreLockedError

#: Called with each run's report: the catch-up run first, then each batch of changes.
OnReport = Callable[[IndexReport], None]
#: Called when a batch finds the collection held by another process (with the error).
OnBusy = Callable[[Exception], None]


def _signature(path: Path) -> tuple[int, int] | None:
    """Size and mtime (ns) of a path, None when it is gone: what tells a finished write from an ongoing one."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class ChangeQueue:
    """Dirty paths waiting to be quiet; thread-safe (the observer adds, the indexing loop takes).

    Time is passed in (`now`, seconds on any monotonic clock) so the debounce rules are testable
    without sleeping.
    """

    def __init__(self, debounce: float = 1.0, max_wait: float = 60.0):
        if debounce < 0 or max_wait < debounce:
            raise OmniError(f"debounce must be >= 0 and max_wait >= debounce (got {debounce} and {max_wait})")
        self.debounce = debounce
        self.max_wait = max_wait
        self._lock = threading.Lock()
        # path -> (time of its first event, time of its last event, signature at its last event)
        self._pending: dict[Path, tuple[float, float, tuple[int, int] | None]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def add(self, path: str | Path, now: float) -> None:
        path, sig = Path(path), _signature(Path(path))
        with self._lock:
            first = self._pending.get(path, (now, now, None))[0]
            self._pending[path] = (first, now, sig)

    def due(self, now: float) -> list[Path]:
        """Take the paths that are quiet and stable (or waited `max_wait`); the others stay."""
        taken = []
        with self._lock:
            for path, (first, last, sig) in list(self._pending.items()):
                overdue = now - first >= self.max_wait
                if now - last < self.debounce and not overdue:
                    continue
                current = _signature(path)
                if current != sig and not overdue:  # written since its last event (no event seen): wait again
                    self._pending[path] = (first, now, current)
                    continue
                taken.append(path)
                del self._pending[path]
        return sorted(taken)

    def put_back(self, paths: Iterable[Path], now: float) -> None:
        """Paths a batch could not handle (the store was busy): due again after the debounce."""
        for path in paths:
            self.add(path, now)


class _Handler:
    """watchdog's event handler protocol (dispatch) without subclassing, so watchdog stays an optional import."""

    def __init__(self, queue: ChangeQueue, roots: list[Path], skip: Callable[[Path], bool]):
        self.queue, self.roots, self.skip = queue, roots, skip

    def dispatch(self, event: Any) -> None:
        if event.event_type in ("opened", "closed_no_write"):  # reads change nothing
            return
        if event.is_directory and event.event_type in ("modified", "attrib", "closed"):
            return  # a folder's own mtime: its entries have their own events (and walking it costs the whole folder)
        now = time.monotonic()
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(os.fsdecode(raw))
            if path.name in IGNORE_FILES:  # the rules of its whole folder changed
                path = path.parent
            if under(path, self.roots) and not self.skip(path):
                self.queue.add(path, now)


class Watcher:
    """Keeps `indexer`'s collection in sync with `roots`; see the module docstring."""

    def __init__(
        self,
        indexer: Indexer,
        roots: Iterable[str | Path],
        *,
        rules: WalkRules | None = None,
        debounce: float = 1.0,
        max_wait: float = 60.0,
        poll: float | None = None,
        on_report: OnReport | None = None,
        on_busy: OnBusy | None = None,
    ):
        self.indexer = indexer
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        missing = [str(r) for r in self.roots if not r.exists()]
        if not self.roots or missing:
            raise OmniError(f"watch needs existing files or folders to watch (missing: {', '.join(missing) or 'none given'})")
        self.rules = rules or WalkRules()
        self.queue = ChangeQueue(debounce, max_wait)
        self.poll = poll
        self.on_report = on_report
        self.on_busy = on_busy
        self.reports: list[IndexReport] = []
        self._observer: Any = None
        self._busy = False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> IndexReport:
        """Start watching, then catch up with a full run (prune included); returns its report."""
        self._observer = self._make_observer()
        handler = _Handler(self.queue, self.roots, self._is_skipped)
        try:
            for target, recursive in self._targets():
                self._observer.schedule(handler, str(target), recursive=recursive)
            self._observer.start()
        except OSError as exc:  # inotify's per-user watch limit (ENOSPC, EMFILE) on a large tree
            raise OmniError(
                f"cannot watch {', '.join(map(str, self.roots))}: {exc.strerror or exc}. On Linux raise the limit "
                "(sysctl fs.inotify.max_user_watches=524288), or poll instead (--poll 5)"
            ) from exc
        report = self.indexer.index(self.roots, prune=True, rules=self.rules)
        self._done(report)
        return report

    def step(self, now: float | None = None) -> IndexReport | None:
        """Handle the paths that are due (see ChangeQueue); the batch's report, or None when none was."""
        now = time.monotonic() if now is None else now
        paths = self.queue.due(now)
        if not paths:
            return None
        try:
            report = self.indexer.update(paths, self.roots, rules=self.rules)
        except StoreLockedError as exc:  # another process has the collection open: retry after the debounce
            self.queue.put_back(paths, now)
            if not self._busy and self.on_busy is not None:
                self.on_busy(exc)
            self._busy = True
            return None
        self._busy = False
        self._done(report)
        return report

    def run(self, stop: threading.Event, *, tick: float = 0.2, cycles: int | None = None) -> list[IndexReport]:
        """Start, then handle changes every `tick` seconds until `stop` is set (or after `cycles` ticks).

        The batch in progress when `stop` is set is finished; the watcher and the store are closed
        on the way out, whatever happens. Returns every report (the catch-up run's first).
        """
        try:
            self.start()
            done = 0
            while not stop.is_set() and (cycles is None or done < cycles):
                stop.wait(tick)
                if not stop.is_set():
                    self.step()
                done += 1
        finally:
            self.close()
        return self.reports

    def close(self) -> None:
        """Stop the file-system watcher and close the store (releasing the collection's lock)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
        self.indexer.store.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------------------
    def _done(self, report: IndexReport) -> None:
        self.reports.append(report)
        self._release_store()
        if self.on_report is not None:
            self.on_report(report)

    def _release_store(self) -> None:
        # Edge serves one process at a time: closing it between batches lets search and the app in.
        # It reopens on the next batch. A server store (qdrant-client) is shared already.
        from omnisdk.store.edge import EdgeStore

        if isinstance(self.indexer.store, EdgeStore):
            self.indexer.store.close()

    def _targets(self) -> list[tuple[Path, bool]]:
        """What to schedule: each folder recursively; a file root through its folder (events filtered to it)."""
        targets: dict[Path, bool] = {}
        for root in self.roots:
            if root.is_dir():
                targets[root] = True
            else:
                targets.setdefault(root.parent, False)
        return list(targets.items())

    def _is_skipped(self, path: Path) -> bool:
        """Events that cannot change the collection: hidden names below a root (editor swap files,
        .git/, the store itself when it lives inside a root) and the error log."""
        if path == self.indexer.error_log.resolve():
            return True
        for root in self.roots:
            if path == root or path.is_relative_to(root):
                return any(part.startswith(".") for part in path.relative_to(root).parts)
        return True

    def _make_observer(self) -> Any:
        try:
            if self.poll is not None:
                from watchdog.observers.polling import PollingObserver

                return PollingObserver(timeout=self.poll)
            from watchdog.observers import Observer
        except ImportError as exc:
            raise OmniError("watch mode needs watchdog: pip install 'omnisdk[watch]'") from exc
        return Observer()
