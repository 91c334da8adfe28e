"""Projector Drift check: does each plugin keep, on the fused model, what its specialist could do?

For every plugin with a specialist: its tasks (those a report credits to its modality) are scored
on the dev split with the specialist and with the fused model; a plugin whose score falls by more
than the threshold is flagged. A cheaper, label-free signal comes with it: the mean cosine between
the specialist's and the fused model's embeddings of the same dev items of that modality (1.0
means fusion left its representations where they were).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from omnisdk.datasets.format import Dataset
from omnisdk.eval.report import EvalReport
from omnisdk.eval.runner import evaluate

COSINE_ITEMS = 128  # dev items per plugin for the representation signal: enough for a stable mean


class PluginDrift(BaseModel):
    plugin: str
    tasks: list[str]
    metric: str
    specialist: float
    fused: float
    delta: float
    mean_cosine: float | None
    flagged: bool
    recovery_available: bool


class DriftReport(BaseModel):
    split: str
    threshold: float
    metric: str
    plugins: list[PluginDrift]

    @property
    def flagged(self) -> list[str]:
        return [p.plugin for p in self.plugins if p.flagged]

    def to_markdown(self) -> str:
        from omnisdk.tables import markdown_table

        rows = [[p.plugin, ", ".join(p.tasks), f"{p.specialist:.3f}", f"{p.fused:.3f}", f"{p.delta:+.3f}",
                 "" if p.mean_cosine is None else f"{p.mean_cosine:.3f}", "yes" if p.flagged else "no",
                 "yes" if p.recovery_available else "no"] for p in self.plugins]
        header = ["plugin", "tasks", f"specialist {self.metric}", f"fused {self.metric}", "delta",
                  "mean cosine", f"drift (< -{self.threshold})", "recovery applies"]
        return f"Projector Drift check on the {self.split} split\n\n" + markdown_table(header, rows)


def tasks_of(dataset: Dataset, plugin: str, split: str) -> list[str]:
    """The tasks a report credits to `plugin`'s modality that have queries in `split`."""
    return [t for t, spec in dataset.tasks.items()
            if spec.credited_modality() == plugin and dataset.task_queries(t, split)]


def check_drift(specialists: dict[str, str | Path], fused_dir: str | Path, dataset: Dataset, *, split: str = "dev",
                threshold: float = 0.02, metric: str = "ndcg@10", batch_size: int = 32,
                show_progress: bool | None = None, cache: Any = None,
                precision: str = "fp32", device: Any = None) -> DriftReport:
    """Each plugin's dev tasks scored with its specialist and with the fused model; `cache` is the
    prepared-input cache both read (a directory, "default" or a PreparedCache; None decodes)."""
    from omnisdk.model import OmniModel

    fused = OmniModel.load(fused_dir, device=device, precision=precision).use_cache(cache)
    results = []
    for plugin, specialist_dir in specialists.items():
        tasks = tasks_of(dataset, plugin, split)
        if not tasks:
            continue
        specialist = OmniModel.load(specialist_dir, device=device, precision=precision).use_cache(fused.prepared_cache)
        before = evaluate(specialist, dataset, split=split, tasks=tasks, batch_size=batch_size, show_progress=show_progress)
        after = evaluate(fused, dataset, split=split, tasks=tasks, batch_size=batch_size, show_progress=show_progress)
        s, f = _mean(before, metric), _mean(after, metric)
        results.append(PluginDrift(
            plugin=plugin, tasks=tasks, metric=metric, specialist=s, fused=f, delta=f - s,
            mean_cosine=_mean_cosine(specialist, fused, dataset, plugin, tasks, split, batch_size),
            flagged=(f - s) < -threshold, recovery_available=fused.recovery_plan(plugin) is not None))
        del specialist
    return DriftReport(split=split, threshold=threshold, metric=metric, plugins=results)


def _mean(report: EvalReport, metric: str) -> float:
    values = [t.metrics[metric] for t in report.tasks if t.n_queries and metric in t.metrics and t.metrics[metric] == t.metrics[metric]]
    return float(np.mean(values)) if values else float("nan")


def _mean_cosine(specialist, fused, dataset: Dataset, plugin: str, tasks: list[str], split: str,
                 batch_size: int) -> float | None:
    """Mean cosine between the two models' embeddings of up to COSINE_ITEMS dev items of this modality."""
    records = []
    for task in tasks:
        records += [r for r in dataset.candidates(task) if r.modality == plugin]
        records += [q for q in dataset.task_queries(task, split) if q.modality == plugin]
    unique = list({r.id: r for r in records}.values())[:COSINE_ITEMS]
    if not unique:
        return None
    items = [dataset.item(r) for r in unique]
    a = specialist.encode(items, batch_size=batch_size, role="document", show_progress=False, errors="ignore")
    b = fused.encode(items, batch_size=batch_size, role="document", show_progress=False, errors="ignore")
    ok = ~(np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
    return float(np.mean(np.sum(a[ok] * b[ok], axis=1))) if ok.any() else None
