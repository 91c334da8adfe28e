"""Retrieval metrics from the positions of each query's relevant items in its ranking.

Metrics (per query, then averaged over queries):

- ``hit@1``: 1 if the top item is relevant (MMEB's precision@1).
- ``recall@k`` (k = 1, 5, 10): the fraction of the query's relevant items in the top k.
- ``ndcg@10``: graded, linear gain (gain = the qrels score, as pytrec_eval and BEIR compute it),
  discount 1/log2(position + 1); the ideal DCG puts the grades in descending order.
- ``mrr``: 1 / position of the first relevant item in the FULL ranking (no cut-off).

Ties. Items with equal scores (within `TIE_TOLERANCE`) are ordered pessimistically: non-relevant
items first, and among relevant items the lower grade first. A model that scores everything alike
therefore ranks every relevant item behind every non-relevant one and scores about 0 (its metrics
fall below chance, never on a lucky value). Scores are compared exactly among relevant items.

Qrels with score 0 (or less) mean not relevant. A query with no relevant item in its candidate pool
is skipped by the caller (and counted as skipped); here it has no relevant slots at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from omnisdk.eval.search import TIE_TOLERANCE, count_at_least

METRICS = ("hit@1", "recall@1", "recall@5", "recall@10", "ndcg@10", "mrr")
RECALL_CUTOFFS = (1, 5, 10)
NDCG_CUTOFF = 10


@dataclass
class Judgements:
    """The relevant items of a list of queries as padded arrays (padding: index -1, grade 0)."""

    relevant: np.ndarray  # [n_queries, R] int64 candidate indices
    grades: np.ndarray  # [n_queries, R] int64 qrels scores, > 0 where relevant

    @classmethod
    def from_qrels(cls, qrels: Sequence[Mapping[int, int]]) -> Judgements:
        """Each query's {candidate index: score}; scores <= 0 are dropped (not relevant)."""
        kept = [sorted((int(c), int(g)) for c, g in row.items() if g > 0) for row in qrels]
        width = max((len(row) for row in kept), default=0)
        relevant = np.full((len(kept), width), -1, dtype=np.int64)
        grades = np.zeros((len(kept), width), dtype=np.int64)
        for i, row in enumerate(kept):  # one pass over queries to pad; the metrics are vectorised
            if row:
                relevant[i, : len(row)], grades[i, : len(row)] = zip(*row)
        return cls(relevant, grades)

    @property
    def n_relevant(self) -> np.ndarray:
        return (self.relevant >= 0).sum(axis=1)


def relevant_positions(rel_scores: np.ndarray, ahead: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """1-based positions [n_queries, R] of the relevant items under the pessimistic tie rule; 0 = padding.

    `ahead[q, r]` is the number of non-relevant items ranked before relevant item r (see
    `search.count_ahead`). Relevant items are ordered by score (descending), equal scores by grade
    (ascending), so the position of r is 1 + ahead[q, r] + the relevant items ordered before it.
    """
    valid = grades > 0
    # Padding sorts last; -inf scores (failed items) after every finite one.
    score_key = np.where(valid, -np.nan_to_num(rel_scores, nan=-np.inf), np.inf)
    grade_key = np.where(valid, grades, np.iinfo(np.int64).max)
    order = np.lexsort((grade_key, score_key), axis=1)
    before = np.empty_like(order)
    np.put_along_axis(before, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), axis=1)
    return np.where(valid, 1 + ahead + before, 0)


def metrics_from_positions(positions: np.ndarray, grades: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query arrays of every metric in METRICS from relevant positions (0 = padding)."""
    valid = positions > 0
    n_rel = valid.sum(axis=1)
    safe_n = np.maximum(n_rel, 1)
    first = np.where(valid, positions, np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max)
    out: dict[str, np.ndarray] = {"hit@1": (first == 1).astype(np.float64)}
    for k in RECALL_CUTOFFS:
        out[f"recall@{k}"] = (valid & (positions <= k)).sum(axis=1) / safe_n
    out["ndcg@10"] = _ndcg(positions, grades, valid, NDCG_CUTOFF)
    out["mrr"] = np.where(n_rel > 0, 1.0 / np.where(n_rel > 0, first, 1), 0.0)
    return out


def _ndcg(positions: np.ndarray, grades: np.ndarray, valid: np.ndarray, cutoff: int) -> np.ndarray:
    gains = np.where(valid, grades, 0).astype(np.float64)
    in_top = valid & (positions <= cutoff)
    dcg = (np.where(in_top, gains, 0.0) / np.log2(np.where(in_top, positions, 1) + 1.0)).sum(axis=1)
    ideal = -np.sort(-gains, axis=1)[:, :cutoff]
    idcg = (ideal / np.log2(np.arange(2, ideal.shape[1] + 2, dtype=np.float64))).sum(axis=1)
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


def metrics_from_scores(
    scores: np.ndarray, qrels: Sequence[Mapping[int, int]], *, tie_tolerance: float = TIE_TOLERANCE
) -> dict[str, np.ndarray]:
    """Per-query metrics from a dense score matrix [n_queries, n_candidates] and index-keyed qrels.

    For small problems and tests; `runner.evaluate` gets the same numbers from vectors in blocks.
    Non-finite scores count as -inf (the item can never be retrieved).
    """
    scores = np.asarray(scores, dtype=np.float32)
    judged = Judgements.from_qrels(qrels)
    rel = judged.relevant
    block = torch.from_numpy(np.nan_to_num(scores, nan=-np.inf, posinf=-np.inf))
    rows = np.arange(rel.shape[0])[:, None].repeat(rel.shape[1], 1)
    rel_scores = np.where(rel >= 0, block.numpy()[rows, rel.clip(min=0)], np.nan)
    thresholds = torch.from_numpy(np.where(rel >= 0, rel_scores - tie_tolerance, np.inf).astype(np.float32))
    block = block.clone()
    inside = rel >= 0
    block[torch.from_numpy(rows[inside]), torch.from_numpy(rel[inside])] = float("-inf")
    ahead = count_at_least(block, thresholds).numpy()
    # Relevant items were set to -inf above; where a threshold is -inf too they were counted: undo.
    ahead -= np.isneginf(thresholds.numpy()) * inside.sum(axis=1, keepdims=True)
    return metrics_from_positions(relevant_positions(rel_scores, ahead, judged.grades), judged.grades)


def mean_metrics(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Average each metric over queries; no queries gives NaN (nothing was measured)."""
    return {name: float(np.mean(values)) if len(values) else float("nan") for name, values in per_query.items()}


def chance_hit_at_1(n_relevant: np.ndarray, n_candidates: int) -> float:
    """Expected hit@1 of a uniformly random ranking: the mean over queries of n_relevant / n_candidates."""
    if len(n_relevant) == 0 or n_candidates == 0:
        return float("nan")
    return float(np.mean(np.asarray(n_relevant, dtype=np.float64) / n_candidates))
