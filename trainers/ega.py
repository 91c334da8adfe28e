"""InfoNCE with an Explicit Gradient Amplifier (EGA) on hard negatives.

The loss value is exactly symmetric InfoNCE (trainers/info_nce.py); only the backward pass
changes. With logits l_ij = s_ij / tau (s_ij the cosine of anchor i and candidate j) and softmax
probabilities P_ij over a row, InfoNCE's gradient on a logit is

    dL/dl_ij = (P_ij - y_ij) / N          (y_ij = 1 for the positive, else 0)

so a negative pulls the anchor's embedding with weight P_ij. EGA multiplies that coefficient for
hard negatives:

    dL/dl_ij = w_ij * P_ij / N            for a negative j,   w_ij = 1 + (factor - 1) * h_ij
    dL/dl_ii = (P_ii - 1) / N             the positive is untouched

and the chain rule carries w_ij to both embeddings (dq_i gets w_ij P_ij p_j / (N tau), dp_j gets
w_ij P_ij q_i / (N tau)). The hardness h_ij in [0, 1] is computed from detached similarities, so it
steers the gradient without being a target itself:

    relative  h_ij = clamp(1 + (s_ij - s_ii) / margin, 0, 1): 1 for a negative as similar to the
              anchor as its positive (or more), falling linearly to 0 at `margin` below it
    topk      h_ij = 1 for the `top_k` most similar negatives of each row, else 0
    mined     h_ij = 1 for the explicit hard negatives from train.jsonl, 0 for in-batch ones

Both directions of the symmetric loss get the same treatment (for item -> query, the row is an
item and its negatives are the other queries; `mined` amplifies nothing there, as no mined
negatives exist in that direction). factor = 1 gives plain InfoNCE, bit for bit.

Inputs: queries, positives (N, D) unit vectors; hard_negatives (N, H, D) with mask (N, H), False
for padding; temperature (float or 0-d tensor).

Reference: Xue, Li, Liu 2025, "Improve Multi-Modal Embedding Learning via Explicit Hard Negative
Gradient Amplifying" (arXiv 2506.02020; code github.com/QQ-MM/QQMM-embed). The paper amplifies the
gradients of hard negatives selected by a relative-similarity hardness; its exact hardness formula
and factor are not in the released code, so the rules and defaults above are this SDK's choice
(docs/methods.md says why).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

Rule = Literal["relative", "topk", "mined"]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient is multiplied elementwise by `weights` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weights)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (weights,) = ctx.saved_tensors
        return grad * weights, None


def scale_gradient(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`x` unchanged in value, with d(loss)/dx multiplied by `weights` (same shape, no gradient)."""
    return _ScaleGradient.apply(x, weights.detach().to(x.dtype))


def hardness(sims: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, rule: Rule, *,
             margin: float = 0.1, top_k: int = 1, mined: torch.Tensor | None = None) -> torch.Tensor:
    """h in [0, 1] per (row, candidate). sims (R, C) cosines; positive (R,) the row's positive cosine;
    negative (R, C) True where the candidate is a valid negative; mined (R, C) True for mined ones."""
    sims = sims.detach()
    if rule == "relative":
        h = (1 + (sims - positive.detach().unsqueeze(1)) / margin).clamp(0, 1)
    elif rule == "topk":
        ranked = sims.masked_fill(~negative, float("-inf"))
        k = min(top_k, sims.size(1))
        top = ranked.topk(k, dim=1).indices
        h = torch.zeros_like(sims).scatter_(1, top, 1.0)
    elif rule == "mined":
        h = mined.to(sims.dtype) if mined is not None else torch.zeros_like(sims)
    else:
        raise ValueError(f"unknown EGA hardness rule '{rule}'; choose relative, topk or mined")
    return h * negative


def ega_info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    temperature: torch.Tensor | float,
    hard_negatives: torch.Tensor | None = None,
    hard_negative_mask: torch.Tensor | None = None,
    symmetric: bool = True,
    *,
    factor: float = 2.0,
    rule: Rule = "relative",
    margin: float = 0.1,
    top_k: int = 1,
    similarity: Any = None,
) -> torch.Tensor:
    """The loss above. Same arguments as `info_nce` (an AGFF `similarity` included: s_ij is then the
    aggregated similarity, and hardness is measured on it), plus the amplifier's settings."""
    if queries.shape != positives.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and positives {tuple(positives.shape)} differ in shape")
    n = queries.size(0)
    targets = torch.arange(n, device=queries.device)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=queries.device)
    sims = queries @ positives.T if similarity is None else similarity.matrix(queries, positives)
    logits = sims / temperature  # shared by both directions, as in info_nce, so factor 1 is bit-identical
    diagonal = sims.detach().diagonal()
    row_sims, row_logits, negative, mined = sims, logits, off_diagonal, torch.zeros_like(off_diagonal)
    padding = None
    if hard_negatives is not None and hard_negatives.size(1) > 0:
        hard = (torch.einsum("nd,nhd->nh", queries, hard_negatives) if similarity is None
                else similarity.rows(queries, hard_negatives))
        valid = hard_negative_mask if hard_negative_mask is not None else torch.ones_like(hard, dtype=torch.bool)
        row_sims = torch.cat([sims, hard], dim=1)
        row_logits = torch.cat([logits, hard / temperature], dim=1)
        negative = torch.cat([off_diagonal, valid], dim=1)
        mined = torch.cat([torch.zeros_like(off_diagonal), valid], dim=1)
        padding = torch.cat([torch.zeros_like(off_diagonal), ~valid], dim=1)
    weights = 1 + (factor - 1) * hardness(row_sims, diagonal, negative, rule, margin=margin, top_k=top_k, mined=mined)
    row_logits = scale_gradient(row_logits, weights)
    if padding is not None:  # slots of missing hard negatives take no part in the softmax
        row_logits = row_logits.masked_fill(padding, float("-inf"))
    loss = F.cross_entropy(row_logits, targets)
    if symmetric:
        back = hardness(sims.T, diagonal, off_diagonal, rule, margin=margin, top_k=top_k)
        column_logits = scale_gradient(logits.T, 1 + (factor - 1) * back)
        loss = (loss + F.cross_entropy(column_logits, targets)) / 2
    return loss
