"""Embedding a list of items of mixed modalities with gradients, for training.

Preparing (decoding, or reading the prepared-input cache) and embedding are separate calls, so the
trainer can prepare the next batch in a background thread while this one runs forward and backward.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from omnisdk.items import Item


@dataclass
class PreparedItems:
    """A list of items made ready for the model: one prepared batch per modality, and the failures."""

    count: int
    groups: list[tuple[str, list[int], Any]] = field(default_factory=list)  # modality, positions, batch
    errors: dict[int, str] = field(default_factory=dict)  # position -> cause


def prepare_items(model, items: Sequence[Item], role: str | None) -> PreparedItems:
    """Group items (whose modality is set) by modality and prepare each group; failures keep their cause."""
    prepared = PreparedItems(count=len(items))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if item.modality not in model.plugins:
            prepared.errors[i] = f"modality '{item.modality}' is not part of this model"
        else:
            groups[item.modality].append(i)
    for modality, indices in groups.items():
        batch = model.prepare(modality, [items[i] for i in indices], role)
        for local, cause in batch.errors.items():
            prepared.errors[indices[local]] = cause
        if batch.ok:
            prepared.groups.append((modality, [indices[j] for j in batch.ok], batch.batch))
    return prepared


def embed_prepared(model, prepared: PreparedItems, role: str | None) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """(embeddings (N, D), or (N, K, D) aspect vectors for an AGFF model; ok mask (N,); position -> cause).
    A failed item gets a zero row and False."""
    shape = (prepared.count, model.aspect_count, model.dim) if model.aspect_count else (prepared.count, model.dim)
    out = torch.zeros(shape, device=model.device)
    ok = torch.zeros(prepared.count, dtype=torch.bool, device=model.device)
    rows: list[torch.Tensor] = []
    positions: list[int] = []
    for modality, indices, batch in prepared.groups:
        rows.append(model.forward_embeddings(modality, batch, role))
        positions += indices
    if rows:
        index = torch.tensor(positions, device=model.device)
        # index_put keeps the graph; rows are float32 whatever autocast computed inside.
        out = out.index_put((index,), torch.cat(rows).float())
        ok[index] = True
    return out, ok, dict(prepared.errors)


def embed_with_grad(model, items: Sequence[Item], role: str | None) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """Prepare and embed in one call; see `embed_prepared`."""
    return embed_prepared(model, prepare_items(model, items, role), role)
