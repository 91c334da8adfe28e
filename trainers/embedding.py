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
    items: Sequence[Item] = ()


class FrozenRows:
    """Embeddings of the modalities whose whole path (backbone, the plugin's adapter and those it uses)
    neither trains nor draws random numbers in this run: they cannot change from step to step, so each
    item is embedded once. Alignment and recovery freeze the backbone, so every caption and every
    text negative is a lookup after its first batch instead of a backbone forward pass."""

    def __init__(self, modalities: set[str], limit: int = 1_000_000):
        self.modalities, self.limit = modalities, limit
        self.rows: dict[tuple, torch.Tensor] = {}

    @classmethod
    def for_trainer(cls, model, trained: Sequence[str]) -> FrozenRows | None:
        """The memo for `model` when `trained` (parameter names) leaves some modality's path frozen."""
        from omnisdk.modality import dependencies_of

        if any(name.startswith("backbone.") for name in trained) or _training(model.backbone):
            return None
        frozen = set()
        for modality in model.plugins:
            path = dependencies_of(model.plugins, modality)
            adapters = [model.adapters[m] for m in path if m in model.adapters]
            if not any(name.startswith(tuple(f"adapters.{m}." for m in path)) for name in trained) \
                    and not any(_training(a) for a in adapters):
                frozen.add(modality)
        return cls(frozen) if frozen else None

    @staticmethod
    def key(item: Item, role: str | None) -> tuple:
        return role, item.modality, item.text, str(item.path) if item.path else None, repr(item.locator)

    def lookup(self, keys: list[tuple]) -> torch.Tensor | None:
        rows = [self.rows.get(k) for k in keys]
        return None if any(r is None for r in rows) else torch.stack(rows)

    def store(self, keys: list[tuple], rows: torch.Tensor) -> None:
        if len(self.rows) + len(keys) <= self.limit:  # bounded: past the limit, items are embedded every time
            self.rows.update(zip(keys, rows.detach().float()))


def _training(module: torch.nn.Module) -> bool:
    """Whether `module` would give an item a different embedding on another call: dropout (and timm's
    DropPath) in train mode draws random numbers, BatchNorm in train mode uses the batch's statistics."""
    varying = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    return any(m.training and (isinstance(m, varying) or type(m).__name__ == "DropPath") for m in module.modules())


def prepare_items(model, items: Sequence[Item], role: str | None) -> PreparedItems:
    """Group items (whose modality is set) by modality and prepare each group; failures keep their cause."""
    prepared = PreparedItems(count=len(items), items=items)
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


def embed_prepared(model, prepared: PreparedItems, role: str | None,
                   memo: FrozenRows | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """(embeddings (N, D), or (N, K, D) aspect vectors for an AGFF model; ok mask (N,); position -> cause).
    A failed item gets a zero row and False. With `memo`, a frozen modality's group is looked up when
    every item of it was embedded before."""
    shape = (prepared.count, model.aspect_count, model.dim) if model.aspect_count else (prepared.count, model.dim)
    out = torch.zeros(shape, device=model.device)
    ok = torch.zeros(prepared.count, dtype=torch.bool, device=model.device)
    rows: list[torch.Tensor] = []
    positions: list[int] = []
    for modality, indices, batch in prepared.groups:
        if memo is not None and modality in memo.modalities:
            keys = [memo.key(prepared.items[i], role) for i in indices]
            found = memo.lookup(keys)
            if found is None:
                found = model.forward_embeddings(modality, batch, role)
                memo.store(keys, found)
            rows.append(found.to(model.device))
        else:
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
