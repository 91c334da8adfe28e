"""Per-modality score calibration: the query-time correction of the modality gap in a mixed collection.

A mixed index sorts by modality before meaning when same-modality similarities sit on a higher
scale than cross-modal ones. The correction standardises a query's score against each modality's
items by that modality's own similarity distribution TO THIS QUERY:

    z(q, x) = (q.x - q.mu_m) / sqrt(q' C_m q)          x of modality m

`q.mu_m` and `q' C_m q` are the exact mean and variance of q's scores over modality m's items,
computed from the modality's centroid `mu_m` and covariance `C_m` (kept as its top `rank`
principal directions plus an isotropic residual, so q' C_m q costs a (rank x dim) product). The
statistics come from the collection itself (a sample of its vectors), are stored in its metadata,
and are refreshed by the indexer when the collection changes.

Method "center" keeps only the mean (z = q.x - q.mu_m, i.e. every item minus its modality's
centroid); "zscore" (the default) also divides by the spread. "platt" maps the raw score to the
log-odds of relevance with a slope and bias per (query modality, item modality), fitted on judged
queries (omnisdk.search.platt) and recorded beside the statistics. All are, for a given query, an
increasing affine map per modality, so:

- a ranking within one modality is unchanged (a --modality filter of one modality gives the same hits);
- the calibrated top k of several modalities is exactly the merge of each modality's raw top k
  after mapping, so search stays exact: one filtered query per modality, then a merge.

Which method: chosen on the OmniWorld dev split's mixed tasks (docs/results.md, issue 16): "platt"
when the model carries fitted parameters, else "zscore".
"""
from __future__ import annotations

import base64
from functools import cached_property
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from omnisdk.search.platt import PlattParams

METHODS = ("zscore", "center", "platt")
Method = Literal["zscore", "center", "platt"]
#: The query modality a bare vector is taken to have (search_vector without query_modality).
DEFAULT_QUERY_MODALITY = "text"
#: Vectors per modality the statistics are estimated from (the centroid's error shrinks as 1/sqrt(n)).
DEFAULT_SAMPLE = 4096
#: Principal directions kept per modality; the rest of the variance is spread evenly (isotropic).
DEFAULT_RANK = 16
#: Pseudo-items of the pooled statistics mixed into each modality's (see fit_calibration).
DEFAULT_PRIOR = 32.0
#: A spread below this (cosine units) is treated as this: a modality of identical vectors stays finite.
MIN_SPREAD = 1e-4


def _pack(array: np.ndarray) -> str:
    """float32 little-endian, base64: compact in JSON metadata, and never pickle."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _unpack(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float32)


class ModalityStats(BaseModel):
    """One modality's first and (low-rank) second moments; arrays base64 float32."""

    count: int  # vectors the statistics were estimated from
    mean: str  # [dim]
    components: str  # [rank, dim] principal directions of the centred vectors
    variances: str  # [rank] variance along each direction
    residual: float  # variance per remaining direction

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        variances = _unpack(self.variances, (-1,))
        return _unpack(self.mean, (dim,)), _unpack(self.components, (len(variances), dim)), variances


class Calibration(BaseModel):
    """The statistics of a collection (or an eval pool) and how they are applied."""

    method: Method = "zscore"
    dim: int
    modalities: dict[str, ModalityStats]
    points: int = 0  # the collection's size when computed: Searcher ignores statistics of another size (stale)
    computed_at: str = ""
    platt: PlattParams | None = None  # method "platt": the fitted slopes and biases

    def affine(self, queries: np.ndarray, query_modality: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """modality -> (offset [n], scale [n]) so that calibrated = (raw - offset) / scale.

        `query_modality` (default DEFAULT_QUERY_MODALITY) picks the "platt" parameters; a query
        modality they do not cover is calibrated by zscore.
        """
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        names, means, components, variances, residual = self._stacked
        if self.method == "platt" and self.platt is not None:
            coefficients = self.platt.coefficients(query_modality or DEFAULT_QUERY_MODALITY, names)
            if coefficients is not None:  # slope * raw + bias == (raw - (-bias / slope)) / (1 / slope)
                offset = np.broadcast_to(-coefficients[:, 1] / coefficients[:, 0], (len(q), len(names)))
                scale = np.broadcast_to(1.0 / coefficients[:, 0], (len(q), len(names)))
                return {name: (offset[:, i], scale[:, i]) for i, name in enumerate(names)}
        offset = q @ means.T  # [n, modalities]
        if self.method == "center":
            scale = np.ones_like(offset)
        else:
            # every modality's directions in one product: per-modality products on arrays this small
            # cost more in numpy's call overhead than in arithmetic (search calls this on every query)
            along = ((q @ components.T) ** 2).reshape(len(q), len(names), -1)  # [n, modalities, rank]
            rest = np.maximum((q * q).sum(axis=1)[:, None] - along.sum(axis=2), 0.0)
            variance = (along * variances).sum(axis=2) + residual * rest
            scale = np.maximum(np.sqrt(np.maximum(variance, 0.0)), MIN_SPREAD)
        return {name: (offset[:, i], scale[:, i]) for i, name in enumerate(names)}

    @cached_property
    def _stacked(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Decoded once per object, every modality stacked: names, means [m, dim], components
        [m * rank, dim], variances [m, rank], residuals [m]. A modality of lower rank is padded
        with zero directions of zero variance, which add nothing."""
        names = list(self.modalities)
        arrays = [stats.arrays(self.dim) for stats in self.modalities.values()]
        rank = max((len(v) for _, _, v in arrays), default=0)
        components = np.zeros((len(names), rank, self.dim), np.float32)
        variances = np.zeros((len(names), rank), np.float32)
        for i, (_, comps, var) in enumerate(arrays):
            components[i, : len(var)], variances[i, : len(var)] = comps, var
        means = np.stack([mean for mean, _, _ in arrays]) if names else np.zeros((0, self.dim), np.float32)
        residual = np.array([stats.residual for stats in self.modalities.values()], np.float32)
        return names, means, components.reshape(-1, self.dim), variances, residual

    def apply(self, queries: np.ndarray, scores: np.ndarray, modalities: Sequence[str],
              query_modality: str | None = None) -> np.ndarray:
        """Calibrated [n, m] scores of `queries` [n, dim] against items of `modalities` (raw `scores` [n, m]).

        An item of a modality without statistics keeps its raw score.
        """
        scores = np.array(scores, dtype=np.float32, copy=True)
        labels = np.asarray(modalities)
        for name, (offset, scale) in self.affine(queries, query_modality).items():
            columns = labels == name
            if columns.any():
                scores[:, columns] = (scores[:, columns] - offset[:, None]) / scale[:, None]
        return scores


def fit_calibration(vectors: np.ndarray, modalities: Sequence[str], *, method: Method = "zscore",
                    rank: int = DEFAULT_RANK, prior: float = DEFAULT_PRIOR, points: int = 0,
                    computed_at: str = "", platt: PlattParams | None = None) -> Calibration:
    """Statistics per modality from item vectors [n, dim] (non-finite rows, failed items, are ignored).

    Each modality's moments are shrunk toward the pooled ones by `prior` pseudo-items, so a
    modality of one or a few items (whose spread says nothing) is scored almost as the rest.
    Method "platt" needs the fitted `platt` parameters (omnisdk.search.platt.fit_platt).
    """
    if method == "platt" and platt is None:
        raise ValueError("calibration method 'platt' needs fitted parameters: fit them with "
                         "omnisdk.search.platt.fit_platt (or `omnisdk eval --calibrate platt --save-calibration`)")
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(modalities)
    good = np.isfinite(vectors).all(axis=1)
    pooled = _moments(vectors[good])
    stats = {}
    for name in sorted(set(labels[good].tolist())):
        rows = vectors[good & (labels == name)]
        weight = len(rows) / (len(rows) + prior)
        mean, second = _moments(rows)
        stats[name] = modality_stats(weight * mean + (1 - weight) * pooled[0], weight * second + (1 - weight) * pooled[1],
                                     len(rows), rank)
    return Calibration(method=method, dim=vectors.shape[1], modalities=stats, points=points or len(vectors),
                       computed_at=computed_at, platt=platt if method == "platt" else None)


def _moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [dim] and second moment E[x x'] [dim, dim], in float64."""
    rows = np.asarray(rows, dtype=np.float64)
    return rows.mean(axis=0), rows.T @ rows / max(len(rows), 1)


def modality_stats(mean: np.ndarray, second: np.ndarray, count: int, rank: int = DEFAULT_RANK) -> ModalityStats:
    """Centroid and top-`rank` principal directions of the covariance `second - mean mean'`."""
    dim = len(mean)
    eigen, vectors = np.linalg.eigh(second - np.outer(mean, mean))  # ascending
    eigen, vectors = np.maximum(eigen[::-1], 0.0), vectors[:, ::-1]
    keep = min(rank, dim)
    residual = float(eigen[keep:].sum() / max(dim - keep, 1))
    return ModalityStats(count=count, mean=_pack(mean), components=_pack(vectors[:, :keep].T),
                         variances=_pack(eigen[:keep]), residual=residual)


def merge_top(per_modality: Mapping[str, Sequence[tuple[float, object]]], queries: np.ndarray,
              calibration: Calibration, limit: int, affine: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
              ) -> list[tuple[float, float, object]]:
    """(calibrated, raw, hit) best first, from each modality's raw top list [(raw score, hit), ...].

    `affine`: the query's `calibration.affine`, when the caller has it already.
    """
    if affine is None:
        affine = calibration.affine(np.asarray(queries, dtype=np.float32).reshape(1, -1))
    merged = []
    for order, (name, hits) in enumerate(per_modality.items()):
        offset, scale = affine.get(name, (np.zeros(1), np.ones(1)))
        offset, scale = float(offset[0]), float(scale[0])
        for rank, (raw, hit) in enumerate(hits):
            merged.append(((raw - offset) / scale, raw, order, rank, hit))
    merged.sort(key=lambda row: (-row[0], row[2], row[3]))
    return [(calibrated, raw, hit) for calibrated, raw, _, _, hit in merged[:limit]]


def sample_by_modality(points: Iterable[tuple[np.ndarray, str]], per_modality: int = DEFAULT_SAMPLE
                       ) -> tuple[np.ndarray, list[str]]:
    """The first `per_modality` vectors of each modality from (vector, modality) pairs.

    Points come in id order, and ids are uuid5 hashes, so the first ones are a fair sample.
    """
    kept: dict[str, list[np.ndarray]] = {}
    for vector, modality in points:
        rows = kept.setdefault(modality, [])
        if len(rows) < per_modality:
            rows.append(np.asarray(vector, dtype=np.float32))
    labels = [m for m, rows in kept.items() for _ in rows]
    matrix = np.stack([v for rows in kept.values() for v in rows]) if labels else np.zeros((0, 0), np.float32)
    return matrix, labels


# -- with a store -------------------------------------------------------------------------------------
def refresh_calibration(store, collection: str, *, method: Method | None = None, per_modality: int = DEFAULT_SAMPLE,
                        rank: int = DEFAULT_RANK, platt: PlattParams | None = None) -> Calibration | None:
    """Recompute the collection's statistics from its vectors and record them in its metadata.

    Called by the indexer after every run that changed the collection; None (and no statistics
    recorded) for an empty collection. `platt`: fitted parameters to record (default: those already
    recorded, if any); `method` defaults to "platt" when there are some, else "zscore".
    """
    from omnisdk.store.base import now_iso

    points = ((p.vector, p.payload.get("modality", "")) for p in store.scroll(collection, with_vectors=True))
    vectors, labels = sample_by_modality(points, per_modality)
    meta = store.get_meta(collection)
    if platt is None and method in (None, "platt"):
        previous = stored_calibration(meta)
        platt = previous.platt if previous is not None else None
    method = method or ("platt" if platt is not None else "zscore")
    calibration = None
    if labels:
        calibration = fit_calibration(vectors, labels, method=method, rank=rank, points=store.count(collection),
                                      computed_at=now_iso(), platt=platt)
    data = calibration.model_dump() if calibration else None
    store.update_meta(collection, meta.model_copy(update={"calibration": data}))
    return calibration


def stored_calibration(meta) -> Calibration | None:
    """The statistics recorded in a collection's metadata, or None (never indexed since they existed)."""
    data = getattr(meta, "calibration", None)
    return Calibration.model_validate(data) if data else None


def calibrated_top(query: np.ndarray, first: Sequence[tuple[float, str, object]], pool: int, calibration: Calibration,
                   limit: int, fetch, modalities: Sequence[str] | None = None,
                   query_modality: str | None = None) -> list[tuple[float, float, object]]:
    """The exact calibrated top `limit`, from one unfiltered raw top list and as few filtered queries as possible.

    `first`: the raw top `pool` of every modality, as (raw score, modality, hit), best first. A
    modality with at least `limit` items there has its own top `limit` there (the correction keeps
    each modality's order). Any other modality's unseen items score at most the last raw score of
    `first`, so at most that score calibrated: only when that bound reaches the current k-th
    calibrated score is the modality's own top fetched (`fetch(modality)` -> [(raw, hit), ...]).
    `modalities`: those searched (default: every modality with statistics). `query_modality`: see
    Calibration.affine.
    """
    names = list(modalities or calibration.modalities)
    per: dict[str, list[tuple[float, object]]] = {m: [] for m in names}
    for raw, modality, hit in first:
        per.setdefault(modality, []).append((raw, hit))
    per = {m: hits[:limit] for m, hits in per.items()}
    affine = calibration.affine(np.asarray(query, dtype=np.float32).reshape(1, -1), query_modality)  # once per query
    merged = merge_top(per, query, calibration, limit, affine)
    if len(first) < pool:  # the whole collection came back: nothing is unseen
        return merged
    kth = merged[-1][0] if len(merged) >= limit else -np.inf
    floor = first[-1][0]
    short = [m for m in names if m in affine and len(per.get(m, ())) < limit]
    refetch = [m for m in short if (floor - float(affine[m][0][0])) / float(affine[m][1][0]) >= kth]
    if not refetch:
        return merged
    for modality in refetch:
        per[modality] = list(fetch(modality))
    return merge_top(per, query, calibration, limit, affine)
