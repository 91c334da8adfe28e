"""The pipeline's stage table: rows are stages, columns are tasks, modality means and the macro mean.

Also the four comparisons the method stands on, computed from the numbers (never written by hand):
(a) fused vs each visual specialist on its own modality, (b) fused vs the audio specialist on audio,
(c) recovered vs fused on audio, (d) rehearsed vs the joint baseline, macro.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omnisdk.eval.report import EvalReport
from omnisdk.pipeline.config import PipelineConfig
from omnisdk.pipeline.drift import DriftReport

METRICS = ("ndcg@10", "hit@1")


def stage_table(reports: dict[str, EvalReport], metric: str) -> tuple[list[str], list[list[str]]]:
    first = next(iter(reports.values()))
    tasks = [t.task for t in first.tasks]
    modalities = list(first.modalities)
    header = ["stage", *tasks, *(f"{m} (mean)" for m in modalities), "macro"]
    rows = []
    for stage, report in reports.items():
        by_task = {t.task: t.metrics for t in report.tasks}
        cells = [_fmt(by_task.get(t, {}).get(metric)) for t in tasks]
        cells += [_fmt(report.modalities.get(m, {}).get(metric)) for m in modalities]
        cells.append(_fmt(report.macro.get(metric)))
        rows.append([stage, *cells])
    chance = {t.task: t.chance for t in first.tasks}
    if metric == "hit@1":
        rows.append(["chance", *(_fmt(chance[t]) for t in tasks), *([""] * len(modalities)), ""])
    return header, rows


def findings(reports: dict[str, EvalReport], metric: str = "ndcg@10") -> list[dict[str, Any]]:
    """The method's four claims as measured comparisons (value before, after, delta)."""
    def modality(stage: str, m: str) -> float | None:
        r = reports.get(stage)
        return None if r is None else r.modalities.get(m, {}).get(metric)

    out = []
    for m in ("image", "video", "document"):
        if f"specialist:{m}" in reports:
            out.append(_claim(f"(a) fused keeps the {m} specialist's {m} score", modality(f"specialist:{m}", m),
                              modality("fused", m)))
    if "specialist:audio" in reports:
        out.append(_claim("(b) audio after fusion vs the audio specialist", modality("specialist:audio", "audio"),
                          modality("fused", "audio")))
        out.append(_claim("(c) recovery on audio: recovered vs fused", modality("fused", "audio"), modality("recovered", "audio")))
    if "joint" in reports and "rehearsed" in reports:
        out.append(_claim("(d) rehearsed vs joint baseline, macro", reports["joint"].macro.get(metric),
                          reports["rehearsed"].macro.get(metric)))
    return out


def _claim(what: str, before: float | None, after: float | None) -> dict[str, Any]:
    delta = None if before is None or after is None else after - before
    return {"comparison": what, "before": before, "after": after, "delta": delta}


def write_report(out: Path, config: PipelineConfig, reports: dict[str, EvalReport], drift: DriftReport,
                 timings: dict[str, float], skipped: list[str]) -> dict[str, Any]:
    from omnisdk.tables import markdown_table

    summary = {
        "config": config.model_dump(mode="json"),
        "stages": {name: json.loads(r.to_json()) for name, r in reports.items()},
        "drift": drift.model_dump(),
        "findings": findings(reports),
        "timings_s": timings,
        "skipped_stages": skipped,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    first = next(iter(reports.values()))
    parts = [f"# {config.name}: decouple, fuse, recover on {first.dataset} ({first.split} split, dataset {first.dataset_hash[:12]})"]
    for metric in METRICS:
        header, rows = stage_table(reports, metric)
        parts.append(f"## {metric}\n\n" + markdown_table(header, rows))
    claims = [[c["comparison"], _fmt(c["before"]), _fmt(c["after"]), _fmt(c["delta"], signed=True)] for c in summary["findings"]]
    parts.append("## The method's claims, measured (nDCG@10, modality means)\n\n"
                 + markdown_table(["comparison", "before", "after", "delta"], claims))
    parts.append("## " + drift.to_markdown())
    total = sum(v for k, v in timings.items())
    parts.append("## Time per stage (s)\n\n" + markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])
                 + f"\n\ntotal {total:.0f} s" + (f"; skipped (done earlier): {', '.join(skipped)}" if skipped else ""))
    (out / "report.md").write_text("\n\n".join(parts) + "\n")
    _plot(out / "report.png", reports)
    return summary


def _plot(path: Path, reports: dict[str, EvalReport]) -> None:
    from omnisdk.eval.report import plot_comparison

    plot_comparison(list(reports.values()), path, labels=list(reports), metric="ndcg@10")


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
