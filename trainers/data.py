"""Training pairs and the order they are drawn in.

The order is a pure function of (seed, batch number, rank): a resumed run draws exactly the batches
an uninterrupted run would have, and data-parallel ranks draw disjoint slices of one global stream.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from omnisdk.datasets.format import Dataset, TrainExample
from omnisdk.items import Item
from omnisdk.errors import OmniError


def pair_modality(example: TrainExample) -> str:
    """The modality a pair trains: its non-text side (text-to-text pairs train text)."""
    for item in (example.positive, example.query):
        if item.modality and item.modality != "text":
            return item.modality
    return "text"


@dataclass
class PairPool:
    """Training pairs grouped by the modality they train."""

    by_modality: dict[str, list[TrainExample]]

    @classmethod
    def from_dataset(cls, dataset: Dataset, *, tasks: Iterable[str] | None = None,
                     modalities: Iterable[str] | None = None) -> "PairPool":
        tasks = set(tasks) if tasks is not None else None
        modalities = set(modalities) if modalities is not None else None
        grouped: dict[str, list[TrainExample]] = {}
        for example in dataset.train_examples():
            modality = pair_modality(example)
            if (tasks is None or example.task in tasks) and (modalities is None or modality in modalities):
                grouped.setdefault(modality, []).append(example)
        if not grouped:
            raise OmniError(f"{dataset.root} has no training pairs for tasks {sorted(tasks or [])} "
                            f"and modalities {sorted(modalities or [])}")
        return cls(dict(sorted(grouped.items())))

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_modality.values())

    @property
    def modalities(self) -> list[str]:
        return list(self.by_modality)


class BatchSchedule:
    """Which pairs make batch number `b` on rank `r`.

    Without quotas, all pairs form one stream: a fresh seeded permutation per epoch, cut into
    consecutive slices. With quotas (modality -> share), each modality has its own such stream and
    every batch takes round(share x batch size) pairs from each, the largest remainders breaking ties,
    so a batch holds each modality at its quota whatever the modalities' pool sizes.

    With `by_modality`, each batch holds a single modality and the modalities take turns (in
    proportion to their quotas, equal by default): every in-batch negative is then of the query's
    own modality, where a mixed batch spends most of its negatives on pairs that the modality alone
    tells apart.
    """

    def __init__(self, pool: PairPool, batch_size: int, seed: int, quotas: dict[str, float] | None = None,
                 world_size: int = 1, by_modality: bool = False):
        self.pool, self.batch_size, self.seed, self.world_size = pool, batch_size, seed, world_size
        if quotas is not None:
            unknown = set(quotas) - set(pool.modalities)
            if unknown:
                raise OmniError(f"quotas name modalities with no training pairs: {sorted(unknown)} "
                                f"(pairs exist for: {', '.join(pool.modalities)})")
        self.turns = turn_order(quotas or {m: 1.0 for m in pool.modalities}) if by_modality else None
        self.counts = per_batch_counts(quotas, batch_size) if quotas and not by_modality else None
        self._flat = [ex for group in pool.by_modality.values() for ex in group]

    def batch(self, number: int, rank: int = 0) -> list[TrainExample]:
        """Global batch `number` is split over ranks; each rank gets its own `batch_size` pairs."""
        slot = number * self.world_size + rank
        if self.turns is not None:
            cycle, at = divmod(slot, len(self.turns))
            modality = self.turns[at]
            # This modality's own stream continues where its previous turn stopped.
            turn = cycle * self.turns.count(modality) + self.turns[:at].count(modality)
            group = self.pool.by_modality[modality]
            return [group[i] for i in _stream_slice(len(group), self.seed, modality, turn, self.batch_size)]
        if self.counts is None:
            return [self._flat[i] for i in _stream_slice(len(self._flat), self.seed, "all", slot, self.batch_size)]
        out: list[TrainExample] = []
        for modality, count in self.counts.items():
            group = self.pool.by_modality[modality]
            out += [group[i] for i in _stream_slice(len(group), self.seed, modality, slot, count)]
        return out


def per_batch_counts(quotas: dict[str, float], batch_size: int) -> dict[str, int]:
    """Pairs per modality in one batch: shares scaled to batch_size, largest remainders rounded up."""
    positive = {m: float(q) for m, q in quotas.items() if q > 0}
    if not positive:
        raise OmniError(f"quotas {quotas} give no modality a positive share")
    total = sum(positive.values())
    exact = {m: batch_size * q / total for m, q in sorted(positive.items())}
    counts = {m: int(np.floor(v)) for m, v in exact.items()}
    for m in sorted(exact, key=lambda m: (-(exact[m] - counts[m]), m))[: batch_size - sum(counts.values())]:
        counts[m] += 1
    return {m: c for m, c in counts.items() if c > 0}


def turn_order(quotas: dict[str, float], length: int = 20) -> list[str]:
    """A repeating order of modalities in which each appears in proportion to its quota (smooth
    weighted round robin): equal quotas give a plain rotation."""
    weights = {m: float(q) for m, q in sorted(quotas.items()) if q > 0}
    if not weights:
        raise OmniError(f"quotas {quotas} give no modality a positive share")
    if len(set(weights.values())) == 1:
        return list(weights)
    total, credit, order = sum(weights.values()), {m: 0.0 for m in weights}, []
    for _ in range(length):
        for m in credit:
            credit[m] += weights[m]
        chosen = max(credit, key=lambda m: (credit[m], m))
        credit[chosen] -= total
        order.append(chosen)
    return order


def _stream_slice(size: int, seed: int, name: str, slot: int, count: int) -> list[int]:
    """Positions slot*count .. slot*count+count-1 of an endless stream of seeded permutations of range(size)."""
    start = slot * count
    out: list[int] = []
    while len(out) < count:
        epoch, offset = divmod(start + len(out), size)
        permutation = _permutation(size, seed, name, epoch)
        out += permutation[offset: offset + count - len(out)].tolist()
    return out


@lru_cache(maxsize=16)
def _permutation(size: int, seed: int, name: str, epoch: int) -> np.ndarray:
    digest = hashlib.sha256(f"{seed}:{name}:{epoch}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(size)


def modality_mix(batch: Sequence[TrainExample]) -> dict[str, int]:
    """How many pairs of each modality a batch holds (for logs and the quota test)."""
    mix: dict[str, int] = {}
    for example in batch:
        mix[pair_modality(example)] = mix.get(pair_modality(example), 0) + 1
    return mix


def _item_key(item: Item) -> tuple:
    """What makes two items the same input (Item is unhashable; `data` and `meta` never name a file)."""
    return item.modality, item.text, str(item.path) if item.path else None, repr(item.locator)


class CrossModalNegatives:
    """Hard negatives of other modalities than each pair's positive (issue 16: the modality gap).

    The candidates are the pool's positives (and, with `queries`, its queries, read as documents)
    grouped by modality: a text -> image pair draws audio, video, document items (and text, with
    `queries`), so the loss sees items the pair's positive must outrank although they are of
    another modality, where in-batch and mined negatives are of the positive's own. The draw is a
    pure function of (seed, micro-batch number, rank, position in the batch); items equal to the
    pair's own query or positive are never drawn.
    """

    def __init__(self, pool: PairPool, count: int, seed: int, queries: bool = False):
        self.count, self.seed = count, seed
        seen: set[tuple] = set()
        self.by_modality: dict[str, list[Item]] = {}
        sides = ("positive", "query") if queries else ("positive",)
        for examples in pool.by_modality.values():
            for ex in examples:
                for item in (getattr(ex, side) for side in sides):
                    key = _item_key(item)
                    if key not in seen:
                        seen.add(key)
                        self.by_modality.setdefault(item.modality or "", []).append(item)

    def items(self) -> list[Item]:
        """Every item a draw can return (to prepare them all before training)."""
        return [item for group in self.by_modality.values() for item in group]

    def draw(self, batch: Sequence[TrainExample], number: int, rank: int = 0) -> list[list[Item]]:
        """`count` (or as many as exist) other-modality items per pair of micro-batch `number`."""
        digest = hashlib.sha256(f"{self.seed}:cross-modal:{number}:{rank}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        out = []
        for ex in batch:
            candidates = self._candidates(ex.positive.modality or "")
            excluded = {_item_key(ex.query), _item_key(ex.positive)}
            picked: list[Item] = []
            for index in rng.permutation(len(candidates)) if candidates else ():
                if _item_key(candidates[index]) not in excluded:
                    picked.append(candidates[index])
                    if len(picked) == self.count:
                        break
            out.append(picked)
        return out

    def _candidates(self, own: str) -> list[Item]:
        """Every item of a modality other than `own`, in pool order (built once per modality)."""
        cache = self.__dict__.setdefault("_by_own", {})
        if own not in cache:
            cache[own] = [item for m, group in self.by_modality.items() if m != own for item in group]
        return cache[own]
