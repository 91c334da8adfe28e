"""Cutting a prepared batch into per-item rows and putting rows back together.

The prepared-input cache stores one row per item, so that any later batch can be assembled from
rows prepared at different times. A batch here is what plugins' `preprocess` return: a dict whose
values are tensors (one row per item along dim 0), lists (one element per item) or such dicts again
(a row names a nested field `outer::inner`). A plugin whose
rows need more than zero-padding overrides `ModalityPlugin.split_rows` / `collate_rows`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

Row = dict[str, Any]
NEST = "::"


def is_splittable(batch: Any) -> bool:
    """True for a dict of tensors, lists and such dicts, the batches that can be cut into rows and cached."""
    return isinstance(batch, dict) and bool(batch) and all(
        isinstance(v, (torch.Tensor, list)) or is_splittable(v) for v in batch.values())


def split_rows(batch: dict[str, Any], count: int) -> list[Row]:
    """One row per item: tensor fields sliced along dim 0 (the leading dim dropped), list fields per element."""
    rows: list[Row] = [{} for _ in range(count)]
    for field, value in _flat(batch):
        if len(value) != count:
            raise ValueError(f"batch field '{field}' has {len(value)} rows for {count} items")
        for i in range(count):
            rows[i][field] = value[i].clone() if isinstance(value, torch.Tensor) else value[i]
    return rows


def _flat(batch: dict[str, Any], prefix: str = ""):
    for field, value in batch.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{field}{NEST}")
        else:
            yield f"{prefix}{field}", value


def collate_rows(rows: Sequence[Row]) -> dict[str, Any]:
    """Stack rows back into a batch; tensors of unequal shapes are zero-padded at the end of every dim."""
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    batch: dict[str, Any] = {}
    for field in rows[0]:
        values = [row[field] for row in rows]
        *outer, name = field.split(NEST)
        target = batch
        for part in outer:
            target = target.setdefault(part, {})
        if isinstance(values[0], torch.Tensor):
            target[name] = _pad_stack(values)
        else:
            target[name] = list(values)
    return batch


def _pad_stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    shape = tensors[0].shape
    if all(t.shape == shape for t in tensors):
        return torch.stack(list(tensors))
    if any(t.dim() != len(shape) for t in tensors):
        raise ValueError(f"rows of one field have different ranks: {sorted({t.dim() for t in tensors})}")
    widest = [max(t.size(d) for t in tensors) for d in range(len(shape))]
    out = torch.zeros((len(tensors), *widest), dtype=tensors[0].dtype)
    for i, t in enumerate(tensors):
        out[(i, *[slice(0, s) for s in t.shape])] = t
    return out
