"""Embedding a stream of item windows, decoding later batches while the model embeds earlier ones.

`OmniModel.encode` is one window; the Indexer streams its chunks window by window, writing each
file's points as soon as its last chunk is embedded. Within a window, items are grouped by
modality and sorted longest first (similar lengths share a batch, so little padding is computed),
then cut into batches; every batch is prepared through `decode_ahead` (omnisdk/decode_ahead.py)
and embedded in the caller's thread, in order. Windows come out in order, each as soon as its last
batch is embedded, so the results are those of the sequential path (`decode_workers=0`) exactly.

The timer's "decode" phase is the time the model waited for a prepared batch (with a pool, the
decoding that did not overlap the model), "encode" the model's own time.
"""
from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from omnisdk.decode_ahead import decode_ahead
from omnisdk.errors import ItemError, ModalityDetectionError
from omnisdk.items import Item, as_item
from omnisdk.plugin_manager import modality_classes
from omnisdk.special_files import PipeSpool, SpecialFileError
from omnisdk.timing import PhaseTimer

if TYPE_CHECKING:
    from omnisdk.model import OmniModel


@dataclass
class _Window:
    out: np.ndarray
    failures: list[ItemError] = field(default_factory=list)
    batches_left: int = 0


@dataclass
class _Batch:
    window: _Window
    modality: str
    items: list[Item]
    positions: list[int]


def encode_windows(model: OmniModel, windows: Iterable[Sequence[Any]], *, batch_size: int = 32, aspects: bool = False,
                   role: str | None = None, timer: PhaseTimer | None = None, decode_workers: int | None = None,
                   contain_errors: bool = False, on_batch: Callable[[int], None] | None = None,
                   ) -> Iterator[tuple[np.ndarray, list[ItemError]]]:
    """For each window of items, in order: (vectors, failures sorted by position), as
    `model.encode(window, return_errors=True, errors="ignore")` gives them.

    `decode_workers`: threads preparing batches ahead (None: omnisdk.decode_ahead.default_workers();
    0: sequential). `contain_errors`: an exception of the model on a batch fails that batch's items
    (with its cause) instead of ending the stream. `on_batch(n)` follows progress, in items."""
    timer = timer if timer is not None else PhaseTimer()
    spool = PipeSpool()  # a pipe named as a file is read once into it; other special files are refused
    pending: deque[_Window] = deque()

    def prepare(batch: _Batch):
        return model.prepare(batch.modality, batch.items, role)

    try:
        batches = _plan(model, windows, spool, batch_size, aspects, pending)
        stream = decode_ahead(prepare, batches, workers=decode_workers)
        while True:
            with timer.phase("decode"):
                step = next(stream, None)
            if step is None:
                break
            batch, prepared, error = step
            _embed(model, batch, prepared, error, role, aspects, timer, contain_errors)
            batch.window.batches_left -= 1
            if on_batch is not None:
                on_batch(len(batch.items))
            yield from _finished(pending)
        yield from _finished(pending)
    finally:
        spool.close()


def _plan(model: OmniModel, windows: Iterable[Sequence[Any]], spool: PipeSpool, batch_size: int, aspects: bool,
          pending: deque[_Window]) -> Iterator[_Batch]:
    """Each window's batches (a window is queued in `pending` before its first batch is handed out)."""
    classes = modality_classes()
    for raw in windows:
        items = [as_item(x) for x in raw]
        shape = (len(items), model.aspect_count, model.dim) if aspects else (len(items), model.dim)
        window = _Window(np.full(shape, np.nan, dtype=np.float32))
        groups: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            try:
                item = spool.resolve(item)
                modality = model.detect(item, classes)
            except (ModalityDetectionError, SpecialFileError) as exc:
                window.failures.append(ItemError(i, item, str(exc)))
                continue
            if modality not in model.plugins:
                window.failures.append(ItemError(i, item, f"modality '{modality}' is not part of this model "
                                                          f"(it has: {', '.join(model.plugins)})"))
                continue
            items[i] = item.with_modality(modality)
            groups[modality].append(i)
        batches = []
        for modality, indices in groups.items():
            # Longest first: similar lengths share a batch, so there is little padding to compute.
            try:
                hints = model.plugins[modality].length_hints([items[i] for i in indices], model.runtime)
            except Exception:  # a hint only saves padding: a plugin that cannot give one keeps the input order
                hints = [0] * len(indices)
            indices = [i for _, i in sorted(zip(hints, indices), key=lambda pair: -pair[0])]
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batches.append(_Batch(window, modality, [items[i] for i in chunk], chunk))
        window.batches_left = len(batches)
        pending.append(window)
        yield from batches


def _embed(model: OmniModel, batch: _Batch, prepared, error: Exception | None, role: str | None, aspects: bool,
           timer: PhaseTimer, contain_errors: bool) -> None:
    """One prepared batch into its window's rows; its failures into the window's list."""
    failures = batch.window.failures
    if error is not None:  # a plugin bug must still cost only this batch
        failures.extend(ItemError(p, it, f"preprocessing failed: {error}") for p, it in zip(batch.positions, batch.items))
        return
    for local, cause in prepared.errors.items():
        failures.append(ItemError(batch.positions[local], batch.items[local], cause))
    if not prepared.ok:
        return
    try:
        with timer.phase("encode"), torch.inference_mode(), model.inference_precision():
            forward = model.forward_aspects if aspects else model.forward_batch
            vectors = forward(batch.modality, prepared.batch, role).cpu().numpy()
    except Exception as exc:
        if not contain_errors:
            raise
        failures.extend(ItemError(batch.positions[j], batch.items[j], f"{type(exc).__name__}: {exc}") for j in prepared.ok)
        return
    finite = np.isfinite(vectors.reshape(len(vectors), -1)).all(axis=1)
    for j, row_ok in zip(prepared.ok, finite):  # extreme input (1e30 samples) can overflow to NaN
        if not row_ok:
            failures.append(ItemError(batch.positions[j], batch.items[j], "the model gave a non-finite vector (NaN or "
                                      "Inf): the input's values are out of range"))
    batch.window.out[[batch.positions[j] for j, row_ok in zip(prepared.ok, finite) if row_ok]] = vectors[finite]


def _finished(pending: deque[_Window]) -> Iterator[tuple[np.ndarray, list[ItemError]]]:
    """The windows at the front whose every batch is embedded, in order."""
    while pending and pending[0].batches_left == 0:
        window = pending.popleft()
        window.failures.sort(key=lambda e: e.index)
        yield window.out, window.failures
