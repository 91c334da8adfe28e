"""Exact search by blocked matrix products: top-k lists and per-query counts over the whole corpus.

Scores are dot products of the given rows (cosine similarity for the unit vectors omnisdk encodes).
Work is split into blocks of `query_chunk` x `corpus_chunk` scores, so memory stays flat whatever
the corpus size: with the defaults a block is 1,024 x 8,192 float32 (32 MB) plus a few masks of the
same shape, about 150 MB in all, for any corpus (100k x 10k x 384 included; the inputs themselves
are extra).

A `scorer` replaces the dot product: `AspectScorer` scores AGFF rows (each row the K aspect
vectors of an item, flattened to K * dim) with the model's aggregation (omnisdk/aggregation.py).

Rows that are not finite mark failed items: a failed corpus row scores -inf against every query (it
can never be retrieved), a failed query row scores -inf against every corpus row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

DEFAULT_QUERY_CHUNK = 1024
DEFAULT_CORPUS_CHUNK = 8192
#: Scores closer than this count as tied (cosine units). It absorbs float rounding between two ways
#: of computing one dot product, and the run-to-run noise of encoders (~1e-7), so a collapsed model
#: whose vectors differ only by noise is ranked as the constant model it is.
TIE_TOLERANCE = 1e-5
#: Above this many relevant items per query, counting sorts each score block once instead of
#: comparing it against every threshold in turn.
_SORT_ABOVE = 32


class AspectScorer:
    """Scores of AGFF rows [n, K * dim] with an AspectTokens module's aggregation, in bounded memory."""

    #: corpus rows scored at once: a block holds queries x CORPUS_STEP x |P| pair similarities
    CORPUS_STEP = 512

    def __init__(self, module):
        self.module, self.k = module, module.count

    def _split(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.reshape(*rows.shape[:-1], self.k, -1)

    def matrix(self, queries: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
        from omnisdk.aggregation import pairwise_sims

        q = self._split(queries)
        out = []
        with torch.no_grad():
            for start in range(0, corpus.shape[0], self.CORPUS_STEP):
                c = self._split(corpus[start : start + self.CORPUS_STEP])
                out.append(self.module.aggregate(pairwise_sims(q, c, self.module.spec.pairs).to(self._device)).to(q.device))
        return torch.cat(out, dim=1) if out else queries.new_zeros((queries.shape[0], 0))

    def rows(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Each query [n, F] against its own items [n, R, F] -> [n, R]."""
        from omnisdk.aggregation import pair_sims

        with torch.no_grad():
            sims = pair_sims(self._split(queries).unsqueeze(1), self._split(items), self.module.spec.pairs)
            return self.module.aggregate(sims.to(self._device)).to(queries.device)

    @property
    def _device(self) -> torch.device:
        return self.module.log_temperature.device


@dataclass
class TopK:
    """The best `k` corpus rows per query, best first; equal scores list the lower corpus index first."""

    scores: np.ndarray  # [n_queries, k] float32
    indices: np.ndarray  # [n_queries, k] int64


def top_k(
    queries: Any,
    corpus: Any,
    k: int,
    *,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    corpus_chunk: int = DEFAULT_CORPUS_CHUNK,
    device: str | torch.device | None = None,
    scorer: AspectScorer | None = None,
) -> TopK:
    """Exact top-k of `queries @ corpus.T`, merged chunk by chunk; deterministic tie order.

    `queries` [n, d] and `corpus` [m, d] are numpy arrays or tensors. k larger than the corpus
    returns the whole corpus, ranked.
    """
    q_all, c_all = _as_matrix(queries, device, "queries"), _as_matrix(corpus, device, "corpus")
    _check_dims(q_all, c_all)
    k = max(0, min(int(k), c_all.shape[0]))
    pool = _Corpus.of(c_all)
    out_scores = torch.empty((q_all.shape[0], k), dtype=torch.float32)
    out_indices = torch.empty((q_all.shape[0], k), dtype=torch.int64)
    if k == 0:
        return TopK(out_scores.numpy(), out_indices.numpy())
    for q0, q_block in _chunks(q_all, query_chunk):
        best_scores = torch.empty((q_block.shape[0], 0), dtype=torch.float32, device=q_block.device)
        best_indices = torch.empty((q_block.shape[0], 0), dtype=torch.int64, device=q_block.device)
        for c0, scores in _score_blocks(q_block, pool, corpus_chunk, scorer):
            block_scores, block_indices = _block_top_k(scores, k)
            # Earlier blocks hold lower indices, and each part is already in (score desc, index asc)
            # order, so a stable sort of the concatenation keeps that order for equal scores.
            merged_scores = torch.cat([best_scores, block_scores], dim=1)
            merged_indices = torch.cat([best_indices, block_indices + c0], dim=1)
            order = torch.sort(merged_scores, dim=1, descending=True, stable=True).indices[:, :k]
            best_scores, best_indices = merged_scores.gather(1, order), merged_indices.gather(1, order)
        out_scores[q0 : q0 + q_block.shape[0]] = best_scores.cpu()
        out_indices[q0 : q0 + q_block.shape[0]] = best_indices.cpu()
    return TopK(out_scores.numpy(), out_indices.numpy())


def _block_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of one block ordered by (score desc, column asc), exact even when ties straddle the cut.

    torch.topk picks any of the columns tied at the k-th value. Asking for k + 1 shows whether a tie
    straddles the cut; only those rows (rare, except for degenerate models) take the slow exact path.
    """
    rows, cols = scores.shape
    k = min(k, cols)
    if k == cols:
        columns = torch.arange(cols, device=scores.device).expand(rows, cols)
    else:
        values, columns = torch.topk(scores, k + 1, dim=1)
        straddles = values[:, k - 1] == values[:, k]
        columns = columns[:, :k].clone()
        if straddles.any():
            which = straddles.nonzero().squeeze(1)
            columns[which] = _leftmost_top_k(scores[which], values[which, k - 1 : k], k)
    columns = columns.sort(dim=1).values
    values = scores.gather(1, columns)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices  # stable: columns stay ascending
    return values.gather(1, order), columns.gather(1, order)


def _leftmost_top_k(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Columns [rows, k], ascending: every column above the k-th value, then the leftmost equal to it."""
    above = scores > kth
    at = scores == kth
    missing = k - above.sum(dim=1, keepdim=True)
    take = above | (at & (at.to(torch.int32).cumsum(dim=1) <= missing))
    return take.nonzero()[:, 1].view(scores.shape[0], k)  # row-major: ascending columns within each row


def count_ahead(
    queries: Any,
    corpus: Any,
    relevant: np.ndarray,
    *,
    tie_tolerance: float = TIE_TOLERANCE,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    corpus_chunk: int = DEFAULT_CORPUS_CHUNK,
    device: str | torch.device | None = None,
    scorer: AspectScorer | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query's relevant items: their scores, and how many non-relevant items rank ahead.

    `relevant` [n_queries, R] holds corpus row indices, padded with -1. Returns `(scores, ahead)`,
    both [n_queries, R]: `ahead[q, r]` counts the corpus rows not relevant to q whose score is at
    least `scores[q, r] - tie_tolerance`, over the FULL corpus. Counting ties as ahead is the
    pessimistic rule: a model cannot gain by scoring everything alike. Padding slots get score NaN
    and count 0.
    """
    q_all, c_all = _as_matrix(queries, device, "queries"), _as_matrix(corpus, device, "corpus")
    _check_dims(q_all, c_all)
    relevant = np.asarray(relevant, dtype=np.int64)
    if relevant.ndim != 2 or relevant.shape[0] != q_all.shape[0]:
        raise ValueError(f"relevant must be [n_queries={q_all.shape[0]}, R] (padded with -1), got shape {relevant.shape}")
    if relevant.size and (relevant.max() >= c_all.shape[0] or relevant.min() < -1):
        raise ValueError(f"relevant indices must lie in [0, {c_all.shape[0]}) or be -1 (padding)")
    rel_all = torch.from_numpy(relevant).to(q_all.device)
    pool = _Corpus.of(c_all)
    rel_scores = _relevant_scores(q_all, pool, rel_all, scorer)
    ahead = torch.zeros(rel_all.shape, dtype=torch.int64)
    for q0, q_block in _chunks(q_all, query_chunk):
        rel = rel_all[q0 : q0 + q_block.shape[0]]
        # Padding thresholds are +inf, which no score reaches.
        thresholds = (rel_scores[q0 : q0 + q_block.shape[0]] - tie_tolerance).masked_fill(rel < 0, float("inf"))
        counts = torch.zeros(rel.shape, dtype=torch.int64, device=q_block.device)
        for c0, scores in _score_blocks(q_block, pool, corpus_chunk, scorer):
            inside = (rel >= c0) & (rel < c0 + scores.shape[1])
            rows = torch.arange(rel.shape[0], device=rel.device).unsqueeze(1).expand_as(rel)
            # A query's own relevant items are not competitors: drop them to -inf, then take back
            # what that adds where the threshold is -inf itself (a relevant item that failed).
            scores[rows[inside], (rel - c0)[inside]] = float("-inf")
            counts += _count_at_least(scores, thresholds)
            counts -= torch.isneginf(thresholds) * inside.sum(dim=1, keepdim=True)
        ahead[q0 : q0 + q_block.shape[0]] = counts.cpu()
    rel_scores = rel_scores.masked_fill(rel_all < 0, float("nan"))
    return rel_scores.cpu().numpy(), ahead.numpy()


def first_relevant_rank(
    queries: Any,
    corpus: Any,
    relevant: np.ndarray,
    *,
    tie_tolerance: float = TIE_TOLERANCE,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    corpus_chunk: int = DEFAULT_CORPUS_CHUNK,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """1-based rank of each query's best relevant item over the full corpus (ties: non-relevant first).

    Queries without a relevant item get 0. The best relevant item has the fewest non-relevant items
    ahead of it and no relevant one, so its rank is 1 + the smallest `ahead` count.
    """
    _, ahead = count_ahead(
        queries, corpus, relevant, tie_tolerance=tie_tolerance, query_chunk=query_chunk,
        corpus_chunk=corpus_chunk, device=device,
    )
    relevant = np.asarray(relevant).reshape(ahead.shape)
    masked = np.where(relevant >= 0, ahead, np.iinfo(np.int64).max)
    best = masked.min(axis=1, initial=np.iinfo(np.int64).max)
    return np.where(best == np.iinfo(np.int64).max, 0, best + 1)


def count_at_least(scores: torch.Tensor, thresholds: torch.Tensor, *, sort: bool | None = None) -> torch.Tensor:
    """`[a, R]` counts of entries in each row of `scores` [a, b] that are >= `thresholds[a, r]`.

    Compares the block against each threshold column in turn, or (`sort=True`, the default above
    32 columns) sorts each row once and binary-searches; both give the same answer.
    """
    return _count_at_least(scores, thresholds, sort=sort)


def _count_at_least(scores: torch.Tensor, thresholds: torch.Tensor, sort: bool | None = None) -> torch.Tensor:
    if sort is None:
        sort = thresholds.shape[1] > _SORT_ABOVE
    if not sort:
        counts = torch.empty(thresholds.shape, dtype=torch.int64, device=scores.device)
        for r in range(thresholds.shape[1]):  # R is small: a few relevant items per query
            counts[:, r] = (scores >= thresholds[:, r : r + 1]).sum(dim=1)
        return counts
    ordered = torch.sort(scores, dim=1).values.contiguous()
    below = torch.searchsorted(ordered, thresholds.contiguous(), side="left")
    return scores.shape[1] - below


def _relevant_scores(q_all: torch.Tensor, pool: _Corpus, rel: torch.Tensor, scorer: AspectScorer | None = None) -> torch.Tensor:
    """Scores of each query against its own relevant rows, gathered in slices of bounded memory."""
    n, slots = rel.shape
    out = torch.empty((n, slots), dtype=torch.float32, device=q_all.device)
    if n == 0 or slots == 0:
        return out
    step = max(1, (32 << 20) // max(1, slots * pool.rows.shape[1] * 4))  # about 32 MB of gathered rows
    for start in range(0, n, step):
        idx = rel[start : start + step].clamp(min=0)
        q_rows = torch.nan_to_num(q_all[start : start + step]) if scorer is not None else q_all[start : start + step]
        out[start : start + step] = (torch.einsum("qd,qrd->qr", q_rows, pool.rows[idx]) if scorer is None
                                     else scorer.rows(q_rows, pool.rows[idx]))
    bad_query = ~torch.isfinite(q_all).all(dim=1, keepdim=True)
    bad_doc = pool.bad[rel.clamp(min=0)]
    return out.masked_fill(bad_query | bad_doc, float("-inf"))


def _score_blocks(q_block: torch.Tensor, corpus: _Corpus, corpus_chunk: int,
                  scorer: AspectScorer | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first corpus row, scores [queries, chunk]) per corpus chunk; failed rows score -inf."""
    bad_query = ~torch.isfinite(q_block).all(dim=1)
    any_bad_query = bool(bad_query.any())
    if any_bad_query:
        q_block = torch.nan_to_num(q_block, nan=0.0, posinf=0.0, neginf=0.0)
    for c0, c_block in _chunks(corpus.rows, corpus_chunk):
        scores = q_block @ c_block.T if scorer is None else scorer.matrix(q_block, c_block)
        bad_doc = corpus.bad[c0 : c0 + c_block.shape[0]]
        if corpus.any_bad and bad_doc.any():
            scores[:, bad_doc] = float("-inf")
        if any_bad_query:
            scores[bad_query] = float("-inf")
        yield c0, scores


@dataclass
class _Corpus:
    """Corpus rows with failed (non-finite) rows zeroed once, and the mask of those rows."""

    rows: torch.Tensor
    bad: torch.Tensor
    any_bad: bool

    @classmethod
    def of(cls, rows: torch.Tensor) -> _Corpus:
        bad = ~torch.isfinite(rows).all(dim=1)
        any_bad = bool(bad.any())
        # A copy only when needed: the corpus may be the largest thing in memory.
        clean = torch.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0) if any_bad else rows
        return cls(clean, bad, any_bad)


def _chunks(matrix: torch.Tensor, size: int) -> Iterator[tuple[int, torch.Tensor]]:
    if size < 1:
        raise ValueError(f"chunk sizes must be at least 1, got {size}")
    for start in range(0, matrix.shape[0], size):
        yield start, matrix[start : start + size]


def _as_matrix(data: Any, device: str | torch.device | None, what: str) -> torch.Tensor:
    tensor = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
    if tensor.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [rows, dim], got shape {tuple(tensor.shape)}")
    return tensor.detach().to(device or tensor.device, dtype=torch.float32)


def _check_dims(queries: torch.Tensor, corpus: torch.Tensor) -> None:
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but the corpus has {corpus.shape[1]}: use one encoder for both")
