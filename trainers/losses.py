"""The contrastive loss a TrainConfig asks for: plain InfoNCE, or InfoNCE with EGA on hard negatives."""
from __future__ import annotations

import torch

from omnisdk.trainers.config import TrainConfig
from omnisdk.trainers.ega import ega_info_nce
from omnisdk.trainers.info_nce import info_nce


def contrastive_loss(config: TrainConfig, queries: torch.Tensor, positives: torch.Tensor,
                     temperature: torch.Tensor | float, hard_negatives: torch.Tensor | None = None,
                     hard_negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`info_nce`, or `ega_info_nce` when `config.ega` is set; the loss value is the same either way."""
    if config.ega is None:
        return info_nce(queries, positives, temperature, hard_negatives, hard_negative_mask, symmetric=config.symmetric)
    return ega_info_nce(queries, positives, temperature, hard_negatives, hard_negative_mask,
                        symmetric=config.symmetric, **config.ega.model_dump())
