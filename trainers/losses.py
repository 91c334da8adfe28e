"""The contrastive loss a TrainConfig asks for: plain InfoNCE, or InfoNCE with EGA on hard negatives;
for an AGFF model either one compares items by the model's aggregated aspect similarity."""
from __future__ import annotations

import torch

from omnisdk.aggregation import pair_sims, pairwise_sims
from omnisdk.trainers.config import TrainConfig
from omnisdk.trainers.ega import ega_info_nce
from omnisdk.trainers.info_nce import info_nce


class AspectSimilarity:
    """S(q, d) of AGFF aspect vectors (omnisdk/aggregation.py) with the model's learned aggregation."""

    def __init__(self, module):
        self.module = module

    def matrix(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(N, K, D) x (M, K, D) -> (N, M)."""
        return self.module.aggregate(pairwise_sims(queries, items, self.module.spec.pairs))

    def rows(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Each query against its own items: (N, K, D) x (N, H, K, D) -> (N, H)."""
        return self.module.aggregate(pair_sims(queries.unsqueeze(1), items, self.module.spec.pairs))


def contrastive_loss(config: TrainConfig, queries: torch.Tensor, positives: torch.Tensor,
                     temperature: torch.Tensor | float, hard_negatives: torch.Tensor | None = None,
                     hard_negative_mask: torch.Tensor | None = None, aspects=None) -> torch.Tensor:
    """`info_nce`, or `ega_info_nce` when `config.ega` is set; the loss value is the same either way.

    `aspects`: an AGFF model's AspectTokens; the embeddings are then (N, K, D) aspect vectors."""
    similarity = AspectSimilarity(aspects) if aspects is not None else None
    if config.ega is None:
        return info_nce(queries, positives, temperature, hard_negatives, hard_negative_mask, symmetric=config.symmetric,
                        similarity=similarity)
    return ega_info_nce(queries, positives, temperature, hard_negatives, hard_negative_mask,
                        symmetric=config.symmetric, similarity=similarity, **config.ega.model_dump())
