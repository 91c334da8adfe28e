"""Embedding a list of items of mixed modalities with gradients, for training."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from omnisdk.items import Item


def embed_with_grad(model, items: Sequence[Item], role: str | None) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """(embeddings (N, D), ok mask (N,), position -> cause) for items whose modality is set.

    Items are grouped by modality (one forward per group); an item that fails preprocessing gets a
    zero row, False in the mask and its cause, and the others train on.
    """
    out = torch.zeros(len(items), model.dim, device=model.device)
    ok = torch.zeros(len(items), dtype=torch.bool, device=model.device)
    errors: dict[int, str] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if item.modality not in model.plugins:
            errors[i] = f"modality '{item.modality}' is not part of this model"
        else:
            groups[item.modality].append(i)
    rows: list[torch.Tensor] = []
    positions: list[int] = []
    for modality, indices in groups.items():
        prepared = model.prepare(modality, [items[i] for i in indices], role)
        for local, cause in prepared.errors.items():
            errors[indices[local]] = cause
        if prepared.ok:
            rows.append(model.forward_batch(modality, prepared.batch, role))
            positions += [indices[j] for j in prepared.ok]
    if rows:
        index = torch.tensor(positions, device=model.device)
        # index_put keeps the graph; rows are float32 whatever autocast computed inside.
        out = out.index_put((index,), torch.cat(rows).float())
        ok[index] = True
    return out, ok, errors
