"""Kill points: named places between the writes of the indexer and the trainer where the fault suite
(tests/test_kill_points.py) kills the process, to prove that a re-run repairs whatever a kill left.

With the environment variable OMNISDK_KILL_AT=NAME or NAME:K, the process sends itself SIGKILL on
its K-th pass (default 1) through `kill_point(NAME)`: a test reaches an exact point without timing
or patching, in a process started once. Unset (always, outside tests), a kill point costs one
environment lookup.

Names (each is documented where it stands):
    atomic.rename           a temporary file of an atomic write complete, not yet renamed into place
    index.roots             the collection's roots recorded, nothing else written
    index.error_log         a failed file's line in the error log
    index.upsert.before     a batch of a file's points about to be written
    index.upsert.after      that batch written (a file half written when it has more batches)
    index.delete.before     a file's new points written, its stale ones not yet deleted
    index.delete.after      its stale points deleted
    index.touch             a touched file's size and mtime about to be rewritten
    index.prune.before      the points of files that are gone about to be deleted
    index.prune.after       deleted
    index.flush             every point written, the store not yet flushed
    index.optimize          flushed, not yet optimised
    index.calibration       optimised, the score calibration not yet refreshed
    index.done              the whole run written
    ckpt.trainable          a training checkpoint's weights written to its temporary directory
    ckpt.optimizer          its optimiser moments written
    ckpt.state              every file written, the directory not yet renamed into place
    ckpt.renamed            the checkpoint in place, older ones not yet pruned
    ckpt.prune              one older checkpoint moved aside for deletion, not yet deleted
    save.weights            a model's weights written, its manifest (which marks it complete) not yet
"""
from __future__ import annotations

import os
import signal

ENV = "OMNISDK_KILL_AT"
_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process on its K-th pass here when OMNISDK_KILL_AT is `name` or `name:K`."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, k = wanted.partition(":")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(k or 1):
        os.kill(os.getpid(), signal.SIGKILL)
