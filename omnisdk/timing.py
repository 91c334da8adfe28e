"""Wall time per named phase of a long operation (decode, encode, upsert...), for reports and benchmarks."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class PhaseTimer:
    """Accumulates wall seconds per phase name.

    Phases must not nest: a phase timed inside another is counted in both. Timing costs two
    `perf_counter` calls per phase, so it stays on in production code paths.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def split(self, total: float, phases: tuple[str, ...], rest: str) -> dict[str, float]:
        """Seconds of each named phase, and `rest` = total minus them (never below zero)."""
        out = {name: round(self.seconds.get(name, 0.0), 3) for name in phases}
        out[rest] = round(max(total - sum(self.seconds.get(name, 0.0) for name in phases), 0.0), 3)
        return out
