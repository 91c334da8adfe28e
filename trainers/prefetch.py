"""Prepare the next micro-batch in a background thread while the current one trains.

At most one batch waits ahead of the one in use, so memory stays bounded whatever the data size.
Decoding (on a cache miss) and collating release the GIL for most of their time, and video and PDF
decoders run in child processes, so the model's step and the preparation overlap.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class Prefetcher:
    """`get(n)` returns `prepare(n)`, having already started `prepare(n + 1)` (while n + 1 < `end`)."""

    def __init__(self, prepare: Callable[[int], Any], end: int):
        self.prepare, self.end = prepare, end
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnisdk-prefetch")
        self._ahead: dict[int, Future] = {}

    def get(self, number: int) -> Any:
        future = self._ahead.pop(number, None) or self._pool.submit(self.prepare, number)
        for stale in [n for n in self._ahead if n < number]:  # a caller that skipped ahead
            self._ahead.pop(stale).cancel()
        if number + 1 < self.end and number + 1 not in self._ahead:
            self._ahead[number + 1] = self._pool.submit(self.prepare, number + 1)
        return future.result()

    def close(self) -> None:
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
