"""Mixed-modality pools: the modality share of the top 10 vs the relevant items, and calibrated scoring.

A task whose candidate pool holds more than one modality (OmniWorld's t2x, a2x) shows the modality
gap directly: a model that ranks by modality fills its top 10 with one modality whatever the
relevant items are. `modality_shares` measures that; `calibrated_metrics` scores the same queries
with the query-time correction that search applies (omnisdk.search.calibration), fitted on the pool.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import torch

from omnisdk.eval.metrics import metrics_from_scores
from omnisdk.eval.search import top_k

SHARE_CUTOFF = 10
_BLOCK = 256  # queries per dense score block: 256 x 100k float32 is 100 MB


def modality_shares(top: np.ndarray, modalities: Sequence[str], qrels: Sequence[Mapping[int, int]],
                    ok: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(share of each modality among the top-k rows `top` [n, k], share among the relevant items).

    Failed queries (`ok` False) count in neither: their lists say nothing about the model.
    """
    ok = np.ones(len(top), dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    shown = Counter(modalities[i] for row, good in zip(top, ok) if good for i in row if i >= 0)
    relevant = Counter(modalities[c] for row, good in zip(qrels, ok) if good for c, g in row.items() if g > 0)
    return _fractions(shown), _fractions(relevant)


def _fractions(counts: Counter) -> dict[str, float]:
    total = sum(counts.values())
    return {m: round(n / total, 4) for m, n in sorted(counts.items())} if total else {}


def raw_top(query_vectors: np.ndarray, corpus: np.ndarray, device, scorer=None) -> np.ndarray:
    """Indices [n, SHARE_CUTOFF] of the raw top of each query (the same tie order as search)."""
    return top_k(query_vectors, corpus, SHARE_CUTOFF, device=device, scorer=scorer).indices


def calibrated_metrics(query_vectors: np.ndarray, corpus: np.ndarray, modalities: Sequence[str],
                       qrels: Sequence[Mapping[int, int]], calibration, *, tie_tolerance: float,
                       device=None, query_modality: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-query metrics and top indices [n, SHARE_CUTOFF] under `calibration` (a search.calibration.Calibration).

    Dense blocks of queries x pool: calibrated scores are not dot products, so the blocked
    counting of eval.search does not apply; a failed row (non-finite) scores -inf as there.
    """
    labels = list(modalities)
    corpus_t = torch.from_numpy(np.nan_to_num(np.asarray(corpus, dtype=np.float32)))
    bad = ~np.isfinite(np.asarray(corpus)).all(axis=1)
    parts: list[dict[str, np.ndarray]] = []
    tops = []
    for start in range(0, len(query_vectors), _BLOCK):
        q = np.asarray(query_vectors[start : start + _BLOCK], dtype=np.float32)
        raw = (torch.from_numpy(np.nan_to_num(q)).to(device or "cpu") @ corpus_t.to(device or "cpu").T).cpu().numpy()
        scores = calibration.apply(np.nan_to_num(q), raw, labels, query_modality)
        scores[:, bad] = -np.inf
        scores[~np.isfinite(q).all(axis=1)] = -np.inf
        parts.append(metrics_from_scores(scores, qrels[start : start + _BLOCK], tie_tolerance=tie_tolerance))
        block = torch.from_numpy(scores)
        k = min(SHARE_CUTOFF, block.shape[1])
        # stable sort: equal scores keep the lower index first, as eval.search.top_k does
        tops.append(torch.sort(block, dim=1, descending=True, stable=True).indices[:, :k].numpy())
    if not parts:
        return {}, np.zeros((0, SHARE_CUTOFF), dtype=np.int64)
    merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return merged, np.concatenate(tops)
