"""Fuse specialists into one model: task vectors of shared parameters merged, owned ones copied.

    from omnisdk.fusion import fuse
    report = fuse("base/", ["text-specialist/", "audio-specialist/"], method="ties", density=0.5, out="fused/")
    print(report.markdown())

Steps: `plan_fusion` checks everything from manifests and headers before writing anything;
`run_fusion` streams tensor by tensor into a new checkpoint. Merge methods live in
`omnisdk.fusion.methods` and are looked up by name through `omnisdk.plugin_manager.merge_methods()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omnisdk.fusion.plan import FusionError, FusionPlan, plan_fusion
from omnisdk.fusion.report import FusionReport

__all__ = ["FusionError", "FusionPlan", "FusionReport", "fuse", "plan_fusion", "run_fusion"]


def fuse(
    base: str | Path,
    specialists: Sequence[str | Path],
    *,
    method: str,
    out: str | Path,
    weights: Sequence[float] | None = None,
    density: float = 1.0,
    lam: float = 1.0,
    seed: int = 0,
    statistics: str = "base",
    progress: bool | None = None,
) -> FusionReport:
    """Fuse specialists of one base: merge the task vectors of shared parameters, copy owned ones.

    Everything is checked from manifests and tensor headers before anything is written; then the fused
    checkpoint is streamed to `out`, tensor by tensor.

    Args:
        base: the checkpoint every specialist was trained from.
        specialists: specialist checkpoints, one per modality (a plugin's owned parameters come from its own).
        method: a registered merge method: "task_arithmetic", "ties", "dare_ties", "dare_linear", or a plugin's.
        out: the new checkpoint directory.
        weights: one weight per specialist, in order (default: all 1).
        density: the fraction of each task vector that ties and dare keep.
        lam: the scale of the merged task vector.
        seed: the seed of dare's random drops.
        statistics: "base" keeps the base's BatchNorm running statistics; "merge" merges them like weights.
        progress: a progress bar (None: on a terminal only).

    Returns:
        A FusionReport: per-plugin counts of merged, copied and kept parameters, warnings, the new fingerprint.

    Raises:
        FusionError: a specialist of another base, mismatched shapes or dtypes, two specialists of one plugin,
            an unknown method or a bad option; raised before `out` exists.
    """
    plan = plan_fusion(base, specialists, method=method, out=out, weights=weights, density=density, lam=lam, seed=seed,
                       statistics=statistics)
    return run_fusion(plan, progress=progress)


def run_fusion(plan: FusionPlan, *, progress: bool | None = None, verify: bool = True) -> FusionReport:
    """Write the checkpoint a plan describes (see omnisdk.fusion.engine)."""
    from omnisdk.fusion.engine import run_fusion as run

    return run(plan, progress=progress, verify=verify)
