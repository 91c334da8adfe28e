"""Decode ahead: a pool of threads prepares later jobs while the caller embeds earlier ones.

`OmniModel.encode_windows` (and through it `encode`, the Indexer and `evaluate`) feeds its batches
through `decode_ahead`: preparing a batch (reading, decoding, resampling, tokenising) runs in
`workers` threads, the model's forward pass in the caller's thread, so the model waits on a decoder
only when the next batch in order is not ready yet.

Memory stays bounded whatever the number of jobs: jobs are pulled from their iterable lazily, and
at most `depth` of them are submitted, running or done, without having been handed to the caller.
Results come back in the jobs' order, so the output does not depend on which thread finished first.

Isolation is the plugins' as before: PDF and video decoders run in child processes
(omnisdk.isolation), one per preparing thread, so a crash or a hang still costs one file. Threads
suffice for the rest: PIL, soundfile and torch release the GIL while they decode. Text is
tokenised under the model's tokenizer lock (one fast tokenizer is not safe in two threads).
"""
from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
ENV_WORKERS = "OMNISDK_DECODE_WORKERS"


def default_workers() -> int:
    """$OMNISDK_DECODE_WORKERS, else min(4, CPU count): decoding beside the model, not instead of it."""
    value = os.environ.get(ENV_WORKERS)
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            raise ValueError(f"{ENV_WORKERS}={value!r} is not a whole number; set it to 0 (decode in the "
                             "caller's thread) or a count of threads") from None
    return min(4, os.cpu_count() or 1)


def decode_ahead(prepare: Callable[[T], R], jobs: Iterable[T], *, workers: int | None = None,
                 depth: int | None = None) -> Iterator[tuple[T, R | None, Exception | None]]:
    """(job, prepare(job), None), or (job, None, the exception it raised), for every job in order.

    `workers` threads (None: `default_workers()`; 0: in the caller's thread, one job at a time, the
    sequential path) run `prepare`; at most `depth` (default 2 x workers) jobs are ahead of the one
    the caller holds. Closing the iterator early cancels the jobs not started yet."""
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"decode workers must be 0 or more (got {workers})")
    if workers == 0:
        yield from _in_order(prepare, jobs)
        return
    depth = depth or 2 * workers
    if depth < 1:
        raise ValueError(f"decode depth must be at least 1 (got {depth})")
    source = iter(jobs)
    ahead: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omnisdk-decode") as pool:
        try:
            for job in itertools.islice(source, depth):
                ahead.append((job, pool.submit(prepare, job)))
            while ahead:
                job, future = ahead.popleft()
                error = future.exception()  # waits for it
                # Refill before handing this one over: the pool works while the caller embeds it.
                for follower in itertools.islice(source, 1):
                    ahead.append((follower, pool.submit(prepare, follower)))
                if error is not None and not isinstance(error, Exception):
                    raise error  # KeyboardInterrupt, SystemExit: not a job's failure
                yield (job, None, error) if error is not None else (job, future.result(), None)
        finally:
            for _, future in ahead:
                future.cancel()


def _in_order(prepare: Callable[[T], R], jobs: Iterable[T]) -> Iterator[tuple[T, R | None, Exception | None]]:
    for job in jobs:
        try:
            result = prepare(job)
        except Exception as exc:  # a job's failure is the caller's to record, not the end of the run
            yield job, None, exc
        else:
            yield job, result, None
