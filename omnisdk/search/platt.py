"""Per-modality Platt scaling: the modality correction fitted on judged queries (issue 16).

For a query of modality `qm` and an item of modality `m`, the calibrated score is the log-odds that
the item is relevant, from a one-feature logistic regression on the raw cosine:

    s(q, x) = a[qm][m] * cos(q, x) + b[qm][m]          (a > 0)

fitted by maximum likelihood on every (query, item) pair of a labelled split (relevant: 1, the rest
of the pool: 0). Measured on OmniWorld's dev split (docs/results.md): unlike the collection-only
corrections (zscore, center) it learns how high a relevant item of each modality scores, so a
modality whose good matches sit at a low cosine (audio for text queries) is lifted, and one whose
near-misses score high (text for text queries) is held back.

It is, like zscore, an increasing affine map of the raw score per (query, modality), so a
one-modality ranking is unchanged and the per-modality merge of calibration.calibrated_top stays
exact. An item modality with no relevant pair in the fit takes the query modality's pooled fit
(every modality together): absence of evidence is not taken as "never relevant". A query modality
that was not fitted falls back to the collection's zscore statistics.

The parameters belong to a model (they describe its embedding space): `omnisdk eval --calibrate
platt --save-calibration` writes them to the model directory (`calibration.json`), and the indexer
copies them into the metadata of every collection indexed with that model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel

#: The model directory's file holding the fitted parameters.
FILE = "calibration.json"
#: A fitted slope below this is raised to it: the map must stay increasing (exact merge, order kept).
MIN_SLOPE = 1e-3
#: Ridge on the (slope, bias) pair: keeps the fit finite when a modality's pairs separate perfectly.
L2 = 1e-3


class PlattParams(BaseModel):
    """(slope, bias) per query modality and item modality, and each query modality's pooled fit."""

    per_query: dict[str, dict[str, tuple[float, float]]]
    pooled: dict[str, tuple[float, float]]
    fitted_on: str = ""  # dataset and split, for the record

    def coefficients(self, query_modality: str, modalities: Sequence[str]) -> np.ndarray | None:
        """[len(modalities), 2] (slope, bias) rows, or None when `query_modality` was not fitted."""
        if query_modality not in self.pooled:
            return None
        own = self.per_query.get(query_modality, {})
        return np.array([own.get(m, self.pooled[query_modality]) for m in modalities], dtype=np.float32)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iterations: int = 100) -> tuple[float, float]:
    """(slope, bias) of P(y=1 | x) = sigmoid(slope * x + bias), by Newton's method (two parameters)."""
    features = np.stack([np.asarray(x, np.float64).ravel(), np.ones(np.size(x))], axis=1)
    y = np.asarray(y, np.float64).ravel()
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(features @ w, -50, 50)))
        gradient = features.T @ (p - y) + l2 * w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + l2 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return max(float(w[0]), MIN_SLOPE), float(w[1])


def fit_platt(groups: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[str], Sequence[Mapping[int, int]]]],
              fitted_on: str = "") -> PlattParams:
    """Fit from (query modality, query vectors [n, dim], pool vectors [N, dim], pool modalities [N],
    qrels: per query {pool index: grade}) groups; several groups of one query modality are pooled.

    Failed rows (non-finite) are left out of the fit.
    """
    pairs: dict[str, dict[str, tuple[list, list]]] = {}
    for query_modality, queries, pool, labels, qrels in groups:
        queries, pool, labels = np.asarray(queries, np.float32), np.asarray(pool, np.float32), np.asarray(labels)
        good_q, good_c = np.isfinite(queries).all(axis=1), np.isfinite(pool).all(axis=1)
        relevant = np.zeros((len(queries), len(pool)), dtype=bool)
        for i, row in enumerate(qrels):
            relevant[i, [c for c, grade in row.items() if grade > 0]] = True
        raw = np.nan_to_num(queries) @ np.nan_to_num(pool).T
        for m in np.unique(labels):
            columns = good_c & (labels == m)
            xs, ys = pairs.setdefault(query_modality, {}).setdefault(str(m), ([], []))
            xs.append(raw[good_q][:, columns].ravel())
            ys.append(relevant[good_q][:, columns].ravel())
    per_query, pooled = {}, {}
    for query_modality, by_modality in pairs.items():
        joined = {m: (np.concatenate(xs), np.concatenate(ys)) for m, (xs, ys) in by_modality.items()}
        pooled[query_modality] = fit_logistic(np.concatenate([x for x, _ in joined.values()]),
                                              np.concatenate([y for _, y in joined.values()]))
        per_query[query_modality] = {m: fit_logistic(x, y) for m, (x, y) in joined.items() if y.any()}
    return PlattParams(per_query=per_query, pooled=pooled, fitted_on=fitted_on)


def save_platt(params: PlattParams, model_dir: str | Path) -> Path:
    """Write the parameters beside the model's weights (not part of its fingerprint)."""
    path = Path(model_dir) / FILE
    path.write_text(json.dumps({"platt": params.model_dump()}, indent=2) + "\n")
    return path


def load_platt(model_dir: str | Path | None) -> PlattParams | None:
    """The parameters saved with a model, or None (none saved, or no directory)."""
    if model_dir is None or not (Path(model_dir) / FILE).is_file():
        return None
    data = json.loads((Path(model_dir) / FILE).read_text())
    return PlattParams.model_validate(data["platt"]) if data.get("platt") else None
