"""Symmetric InfoNCE with in-batch and hard negatives.

For a batch of N (query, positive) pairs with unit embeddings q_i, p_i and H hard negatives per
query n_ij, and temperature tau:

    query -> item:  L_q = -1/N sum_i log( exp(q_i.p_i/tau) / (sum_k exp(q_i.p_k/tau) + sum_j exp(q_i.n_ij/tau)) )
    item -> query:  L_p = -1/N sum_i log( exp(p_i.q_i/tau) / sum_k exp(p_i.q_k/tau) )
    loss = (L_q + L_p) / 2   (or L_q alone when symmetric=False)

Every other pair's positive is a negative of this query (in-batch negatives); a query's own hard
negatives are seen by that query only. With a `similarity` (AGFF, trainers/losses.py), q_i.p_k is
replaced by the aggregated similarity S(q_i, p_k) of aspect vectors (N, K, D) (omnisdk/aggregation.py). Reference: van den Oord et al. 2018 (CPC); Radford et al.
2021 (CLIP) for the symmetric form.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    temperature: torch.Tensor | float,
    hard_negatives: torch.Tensor | None = None,
    hard_negative_mask: torch.Tensor | None = None,
    symmetric: bool = True,
    similarity: Any = None,
) -> torch.Tensor:
    """The loss above. Shapes: queries, positives (N, D); hard_negatives (N, H, D) with mask (N, H).
    With `similarity` (`.matrix(q, p)` -> (N, N), `.rows(q, h)` -> (N, H)) the rows are (.., K, D).

    `hard_negative_mask` is False where a query has fewer than H negatives (padding).
    """
    if queries.shape != positives.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and positives {tuple(positives.shape)} differ in shape")
    sims = queries @ positives.T if similarity is None else similarity.matrix(queries, positives)
    logits = sims / temperature  # (N, N): the diagonal holds the positives
    targets = torch.arange(queries.size(0), device=queries.device)
    row_logits = logits
    if hard_negatives is not None and hard_negatives.size(1) > 0:
        hard = (torch.einsum("nd,nhd->nh", queries, hard_negatives) if similarity is None
                else similarity.rows(queries, hard_negatives)) / temperature
        if hard_negative_mask is not None:
            hard = hard.masked_fill(~hard_negative_mask, float("-inf"))
        row_logits = torch.cat([logits, hard], dim=1)
    loss = F.cross_entropy(row_logits, targets)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, targets)) / 2
    return loss
