"""AGFF's adaptive, smooth aggregation of aspect similarities into one similarity (pure functions).

An AGFF item has K unit aspect vectors v_1..v_K (omnisdk/aspects.py). For a query q and an item d
the aspect similarities are the cosines of a set P of aspect pairs:

    s_p = <q_i, d_j>               for p = (i, j) in P
    P = {(k, k)}                   pairs = "diagonal": aspect k against aspect k (K pairs)
    P = {(i, j) : all i, j}        pairs = "all": every pair (K^2), the paper's four perception
                                   patterns when aspect 1 is the global one (global-global,
                                   fine-global, global-fine, fine-fine)

and the aggregated similarity is a weighted log-sum-exp with a learned temperature tau and learned
pair weights w = softmax(beta):

    S(q, d) = tau * log( sum_p w_p * exp(s_p / tau) )

Properties (tested in tests/test_agff.py):

- bounds: sum_p w_p s_p  <=  S  <=  max_p s_p   (Jensen below; sum_p w_p = 1 above);
- S -> max_p s_p as tau -> 0 and S -> sum_p w_p s_p as tau -> infinity: tau glides between
  "the best-matching aspect decides" and "every aspect counts";
- smooth: dS/ds_p = softmax_p(s_p / tau + log w_p), in (0, 1), summing to 1, so every aspect
  pair gets gradient (a hard max would train one pair per example only).

tau is stored as log(tau) and clamped to [TAU_MIN, TAU_MAX] (a temperature that trains towards 0
would turn S into a hard max with exploding logits). With uniform weights (beta = 0) S is the
"log-mean-exp", which for equal s_p equals that value (a plain log-sum-exp would add tau * log|P|).

Reference: Hu, Xue, Li, Liu, Lin 2026, "Adaptive Global and Fine-Grained Perceptual Fusion for MLLM
Embeddings Compatible with Hard Negative Amplification" (AGFF-Embed, arXiv 2602.05729): several
prompted embeddings per input, the similarities of global and fine-grained perception patterns fused
by a smooth log-sum-exp. The exact normalisation, the weights and the temperature's treatment are
not public; the choices above are this SDK's (docs/methods.md says why).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

Pairs = Literal["diagonal", "all"]
TAU_MIN, TAU_MAX = 1e-3, 10.0


def pair_count(aspects: int, pairs: Pairs) -> int:
    """|P| for K aspects."""
    return aspects if pairs == "diagonal" else aspects * aspects


def temperature(log_temperature: torch.Tensor) -> torch.Tensor:
    """tau from its stored logarithm, clamped to [TAU_MIN, TAU_MAX]."""
    return log_temperature.clamp(math.log(TAU_MIN), math.log(TAU_MAX)).exp()


def aggregate(sims: torch.Tensor, log_temperature: torch.Tensor, weight_logits: torch.Tensor | None = None) -> torch.Tensor:
    """S over the last axis of `sims` (..., |P|): tau * log sum_p softmax(beta)_p exp(s_p / tau).

    `log_temperature` is a 0-d or 1-element tensor; `weight_logits` (|P|,) or None for uniform weights.
    """
    tau = temperature(log_temperature.reshape(())).to(sims.dtype)
    count = sims.size(-1)
    if weight_logits is None:
        log_w = torch.full((count,), -math.log(count), dtype=sims.dtype, device=sims.device)
    else:
        log_w = torch.log_softmax(weight_logits.to(sims.dtype), dim=-1)
    return tau * torch.logsumexp(sims / tau + log_w, dim=-1)


def pair_sims(queries: torch.Tensor, items: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """s_p of aligned rows: queries and items (..., K, D) -> (..., |P|)."""
    if pairs == "diagonal":
        return (queries * items).sum(dim=-1)
    full = torch.einsum("...id,...jd->...ij", queries, items)
    return full.flatten(-2)


def pairwise_sims(queries: torch.Tensor, items: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """s_p of every query against every item: (N, K, D) x (M, K, D) -> (N, M, |P|)."""
    if pairs == "diagonal":
        return torch.einsum("nkd,mkd->nmk", queries, items)
    full = torch.einsum("nid,mjd->nmij", queries, items)
    return full.flatten(-2)


def check_pairs(pairs: str) -> Pairs:
    if pairs not in ("diagonal", "all"):
        raise ValueError(f"unknown aspect pairs '{pairs}'; choose 'diagonal' or 'all'")
    return pairs  # type: ignore[return-value]
