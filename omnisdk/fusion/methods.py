"""Task-vector merge methods: pure tensor functions, registered by name through the merge-method hook.

The calling convention, shared by every method (built-in or registered by a plugin):

    method(deltas, *, weights, density, generator) -> Tensor

- `deltas`: one float32 task vector per specialist for ONE parameter (`theta_m - theta_base`),
  all of one shape, in the order the specialists were given. A method never changes them.
- `weights`: one float per specialist.
- `density`: the fraction of entries each task vector keeps (1.0: no sparsification).
- `generator`: a `torch.Generator` seeded from (seed, parameter name), for methods that draw.

It returns the merged task vector (float32, same shape). The caller applies the scale and casts back:
`merged = (base + lam * method(...)).to(base.dtype)`, so that scaling, dtype and streaming live in one
place (omnisdk.fusion.engine) and a method is only the arithmetic.

The four built-ins follow mergekit's generalized task arithmetic (deltas, sparsify, weight, sign
consensus, normalise); the differences are listed in each docstring.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
from torch import Tensor

MergeMethod = Callable[..., Tensor]


def generator_for(seed: int, name: str) -> torch.Generator:
    """A generator whose stream depends on (seed, parameter name) only, not on iteration order."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# -- building blocks ----------------------------------------------------------------------------------
def trim_magnitude(delta: Tensor, density: float) -> Tensor:
    """Keep the `density` fraction of entries with the largest magnitude (at least one), zero the rest.

    Exactly k = max(1, int(density * numel)) entries survive. Entries tied in magnitude at the threshold
    are kept lowest flat index first, so the result is deterministic (mergekit breaks such ties by an
    unstable sort, so the two can differ there and only there).
    """
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    magnitude = delta.abs().reshape(-1)
    k = max(1, int(density * magnitude.numel()))
    threshold = kth_largest(magnitude, k)
    keep = magnitude > threshold
    missing = k - int(keep.sum())
    if missing > 0:
        keep[torch.nonzero(magnitude == threshold).squeeze(1)[:missing]] = True
    return delta * keep.reshape(delta.shape)


def kth_largest(values: Tensor, k: int) -> Tensor:
    """The k-th largest entry of a flat tensor, by selection (linear time), not by sorting.

    On CPU numpy's introselect, several times faster than torch.kthvalue, which also carries an
    int64 index per entry; elsewhere torch.kthvalue.
    """
    position = values.numel() - k
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        import numpy as np

        return torch.as_tensor(np.partition(values.numpy(), position)[position])
    return values.kthvalue(position + 1).values


def dare_drop(delta: Tensor, density: float, generator: torch.Generator) -> Tensor:
    """Drop each entry with probability 1 - density and scale survivors by 1 / density (unbiased)."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator) < density
    return (delta * keep).div_(density)


def weighted_sum(deltas: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """sum_m w_m * delta_m."""
    out = torch.zeros_like(deltas[0])
    for weight, delta in zip(weights, deltas):
        out.add_(delta, alpha=float(weight))
    return out


def sign_consensus_mean(deltas: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """TIES' elect-and-merge: per entry, the weighted mean of the deltas that agree with the elected sign.

    The elected sign is that of the summed weighted deltas (their mass), + on a zero sum. A zero delta
    agrees with neither sign, so an entry that no delta agrees with stays 0.
    """
    # A loop, not a stack of all deltas: the working set stays a few tensors beyond the inputs.
    positive = weighted_sum(deltas, weights) >= 0
    total = torch.zeros_like(deltas[0])
    divisor = torch.zeros_like(deltas[0])
    for weight, delta in zip(weights, deltas):
        weighted = delta * float(weight)
        agree = torch.where(positive, weighted > 0, weighted < 0)
        total.add_(weighted.mul_(agree))
        divisor.add_(agree, alpha=float(weight))
    return total.div_(torch.where(divisor == 0, 1.0, divisor))


# -- the registered methods ---------------------------------------------------------------------------
def task_arithmetic(deltas: Sequence[Tensor], *, weights: Sequence[float], density: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
    """sum_m w_m tau_m (Ilharco et al. 2023). `density` and `generator` are unused.

    Same as mergekit's `task_arithmetic` (normalize: false).
    """
    return weighted_sum(deltas, weights)


def ties(deltas: Sequence[Tensor], *, weights: Sequence[float], density: float = 1.0,
         generator: torch.Generator | None = None) -> Tensor:
    """TIES (Yadav et al. 2023): trim each tau_m to its top-`density` magnitudes, elect signs, disjoint mean.

    Same as mergekit's `ties` with its defaults (normalize: true, rescale: false).
    """
    trimmed = [trim_magnitude(d, density) for d in deltas]
    return sign_consensus_mean(trimmed, weights)


def dare_linear(deltas: Sequence[Tensor], *, weights: Sequence[float], density: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
    """DARE (Yu et al. 2024) then a weighted sum: sum_m w_m * (mask_m * tau_m / density).

    mergekit's `dare_linear` rescales survivors to the tensor's original L1 norm instead of 1/density;
    equal in expectation, not entry by entry, and its masks come from torch's global generator.
    """
    generator = generator or torch.Generator().manual_seed(0)
    return weighted_sum([dare_drop(d, density, generator) for d in deltas], weights)


def dare_ties(deltas: Sequence[Tensor], *, weights: Sequence[float], density: float = 1.0,
              generator: torch.Generator | None = None) -> Tensor:
    """DARE's random drop and rescale, then TIES' sign election and disjoint mean (no second trim).

    mergekit's `dare_ties` defaults to normalize: false (a sum of the agreeing deltas, not a mean);
    set normalize: true there to compare, and mind the L1 rescale noted in `dare_linear`.
    """
    generator = generator or torch.Generator().manual_seed(0)
    return sign_consensus_mean([dare_drop(d, density, generator) for d in deltas], weights)


BUILTIN_METHODS: dict[str, MergeMethod] = {
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare_ties": dare_ties,
    "dare_linear": dare_linear,
}
