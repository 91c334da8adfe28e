"""EvalReport: per-task metrics, per-modality and macro averages, JSON, Markdown, charts, comparisons."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, Field

from omnisdk.datasets.format import MIXED
from omnisdk.errors import OmniError
from omnisdk.eval.metrics import METRICS

#: Markdown column titles of the metrics, in METRICS order, then chance.
COLUMN_TITLES = {"hit@1": "hit@1", "recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10", "ndcg@10": "nDCG@10", "mrr": "MRR"}
AVERAGED = (*METRICS, "chance")


class TaskResult(BaseModel):
    """One task's scores, averaged over its evaluated queries."""

    task: str
    modality: str  # the modality the task is credited to
    kind: str = "retrieval"
    query_modality: str
    corpus_modality: str
    n_queries: int  # evaluated (failed ones included, as misses)
    n_candidates: int
    skipped_queries: int = 0  # no relevant item in the candidate pool
    failed_queries: int = 0
    failed_candidates: int = 0
    metrics: dict[str, float]
    #: expected hit@1 of a uniformly random ranking: mean over queries of n_relevant / n_candidates.
    chance: float
    encode_s: float = 0.0  # queries, plus the corpus items this task was the first to need
    search_s: float = 0.0
    #: a pool of several modalities: each modality's share of the top 10, and of the relevant items.
    top10_share: dict[str, float] = Field(default_factory=dict)
    relevant_share: dict[str, float] = Field(default_factory=dict)


class Failure(BaseModel):
    """An item that could not be encoded: failed candidates are never retrieved, failed queries miss."""

    id: str
    role: str  # "query" or "document"
    modality: str
    path: str | None = None
    cause: str


class EvalReport(BaseModel):
    """Everything one evaluation measured, with what it measured it on."""

    omnisdk_version: str
    model: str  # a label: a checkpoint's directory name, "random", "oracle", ...
    model_fingerprint: str | None = None
    dataset: str
    dataset_hash: str
    split: str
    tasks: list[TaskResult]
    modalities: dict[str, dict[str, float]] = Field(default_factory=dict)
    macro: dict[str, float] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    failures: list[Failure] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    created_at: str = ""

    def model_post_init(self, __context: Any) -> None:
        if not self.modalities and not self.macro:
            self.modalities, self.macro = summarise(self.tasks)

    # -- serialisation -------------------------------------------------------------------------
    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON (NaN, for a task with no queries, becomes null); also written to `path`."""
        text = json.dumps(_nan_to_none(self.model_dump(mode="json")), indent=2) + "\n"
        if path is not None:
            from omnisdk.checkpoint import atomic_write

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # A kill or a full disk mid-write must not leave half a report that a resumed pipeline trusts.
            atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> EvalReport:
        """Read a report from a JSON file path or a JSON string."""
        text = source
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            path = Path(source)
            if not path.is_file():
                raise OmniError(f"report {path} does not exist: write one with `omnisdk eval --out {path.name}`")
            text = path.read_text()
        try:
            return cls.model_validate(_none_to_nan(json.loads(text)))
        except (json.JSONDecodeError, ValueError) as exc:
            raise OmniError(f"{source} is not an omnisdk eval report: {str(exc).splitlines()[0]}") from exc

    # -- tables ---------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, dict[str, float]]]:
        """(label, kind, values) for each task, then each modality average, then the macro average."""
        out = [(t.task, "task", {**t.metrics, "chance": t.chance}) for t in self.tasks]
        out += [(f"{m} (mean)", "modality", values) for m, values in self.modalities.items()]
        out.append(("macro", "macro", self.macro))
        return out

    def to_markdown(self) -> str:
        """A title line, one table (tasks, modality means, macro mean) and notes on skips and failures."""
        from omnisdk.tables import markdown_table

        by_task = {t.task: t for t in self.tasks}
        header = ["task", "modality", "queries", "candidates", *(COLUMN_TITLES[m] for m in METRICS), "chance"]
        table = []
        for label, kind, values in self.rows():
            task = by_task.get(label) if kind == "task" else None
            label = label if kind == "task" else f"**{label}**"
            where = [task.modality, str(task.n_queries), str(task.n_candidates)] if task else ["", "", ""]
            table.append([label, *where, *(_fmt(values.get(m)) for m in AVERAGED)])
        title = (f"**{self.model}** on {self.dataset} ({self.split} split, dataset {self.dataset_hash[:12]}), "
                 f"omnisdk {self.omnisdk_version}, {self.timings.get('total_s', 0):.1f} s")
        return "\n".join([title, "", markdown_table(header, table), *self._share_table(), *self._notes()])

    def _share_table(self) -> list[str]:
        """For mixed pools: each modality's share of the top 10 against its share of the relevant items."""
        from omnisdk.tables import markdown_table

        mixed = [t for t in self.tasks if t.relevant_share or t.top10_share]
        if not mixed:
            return []
        rows = [[t.task, m, _pct(t.top10_share.get(m, 0.0)), _pct(t.relevant_share.get(m, 0.0)),
                 f"{100 * (t.top10_share.get(m, 0.0) - t.relevant_share.get(m, 0.0)):+.0f}"]
                for t in mixed for m in sorted({*t.top10_share, *t.relevant_share})]
        how = f", calibrated: {self.settings['calibrate']}" if self.settings.get("calibrate") else ""
        return ["", f"modality share of the top 10 vs the relevant items (mixed pools{how})", "",
                markdown_table(["task", "modality", "top 10", "relevant", "gap (points)"], rows)]

    def _notes(self) -> list[str]:
        notes = []
        skipped = {t.task: t.skipped_queries for t in self.tasks if t.skipped_queries}
        if skipped:
            notes.append("skipped queries (no relevant item among the candidates): "
                         + ", ".join(f"{task} {n}" for task, n in skipped.items()))
        if self.failures:
            shown = "; ".join(f"{f.role} {f.id} ({f.path or f.modality}): {f.cause}" for f in self.failures[:5])
            more = f" (+{len(self.failures) - 5} more in the JSON report)" if len(self.failures) > 5 else ""
            notes.append(f"{len(self.failures)} item(s) failed to encode: {shown}{more}")
        return ["", *notes] if notes else []

    # -- charts ---------------------------------------------------------------------------------
    def plot(self, path: str | Path, *, metrics: Sequence[str] = ("hit@1", "ndcg@10")) -> Path:
        """A grouped bar chart (PNG, SVG or PDF by suffix) of `metrics` per task, chance marked."""
        plt = _pyplot()
        labels = [t.task for t in self.tasks] + ["macro"]
        values = {m: [t.metrics.get(m, math.nan) for t in self.tasks] + [self.macro.get(m, math.nan)] for m in metrics}
        chance = [t.chance for t in self.tasks] + [self.macro.get("chance", math.nan)]
        fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(labels) + 3), 4.0))
        width = 0.8 / len(metrics)
        for i, metric in enumerate(metrics):
            xs = [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(labels))]
            ax.bar(xs, values[metric], width, label=COLUMN_TITLES.get(metric, metric))
        ax.hlines(chance, [x - 0.45 for x in range(len(labels))], [x + 0.45 for x in range(len(labels))],
                  colors="black", linestyles="dashed", linewidth=1.2, label="chance (hit@1)")
        _finish_axes(ax, labels, f"{self.model} on {self.dataset} ({self.split})")
        return _save(fig, path, plt)


def summarise(tasks: Sequence[TaskResult]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-modality means (over the tasks credited to each modality) and the macro mean over tasks."""
    by_modality: dict[str, list[TaskResult]] = defaultdict(list)
    for task in tasks:
        by_modality[task.modality].append(task)
    modalities = {m: _mean_of(group) for m, group in sorted(by_modality.items())}
    # Mixed-pool tasks have their own mean row; kept out of the macro, so it stays comparable with
    # reports made before those tasks existed (unless they are all there is).
    single = [t for t in tasks if t.modality != MIXED] or list(tasks)
    return modalities, _mean_of(single)


def _mean_of(tasks: Sequence[TaskResult]) -> dict[str, float]:
    out = {}
    for name in AVERAGED:
        values = [t.chance if name == "chance" else t.metrics.get(name, math.nan) for t in tasks]
        values = [v for v in values if not math.isnan(v)]  # a task with no queries measured nothing
        out[name] = sum(values) / len(values) if values else math.nan
    return out


def compare(reports: Sequence[EvalReport], labels: Sequence[str] | None = None, *, metric: str = "hit@1") -> str:
    """A Markdown table of one metric: rows are tasks, modality means and macro; a column per report.

    For comparing stages (base, specialists, fused, recovered). A note says when the reports were
    measured on different datasets or splits, which makes the columns incomparable.
    """
    from omnisdk.tables import markdown_table

    labels = _labels(reports, labels)
    if metric not in AVERAGED:
        raise OmniError(f"unknown metric '{metric}'; choose one of: {', '.join(AVERAGED)}")
    rows_by_report = [{label: values for label, _, values in r.rows()} for r in reports]
    row_labels: list[str] = []
    for report in reports:
        row_labels += [label for label, _, _ in report.rows() if label not in row_labels]
    # Tasks first, then modality means, then macro, whatever order the reports listed them in.
    row_labels.sort(key=lambda label: (label == "macro", label.endswith(" (mean)")))
    chance = {label: next((r[label]["chance"] for r in rows_by_report if label in r), math.nan) for label in row_labels}
    table = [[label if "(mean)" not in label and label != "macro" else f"**{label}**",
              *(_fmt(r.get(label, {}).get(metric)) for r in rows_by_report), _fmt(chance[label])]
             for label in row_labels]
    text = f"{COLUMN_TITLES.get(metric, metric)} per task\n\n" + markdown_table(["task", *labels, "chance"], table)
    measured_on = {(r.dataset, r.dataset_hash, r.split) for r in reports}
    if len(measured_on) > 1:
        text += "\n\nnote: these reports were measured on different data: " + "; ".join(
            f"{label}: {r.dataset} {r.dataset_hash[:12]} {r.split}" for label, r in zip(labels, reports))
    return text


def plot_comparison(reports: Sequence[EvalReport], path: str | Path, labels: Sequence[str] | None = None,
                    *, metric: str = "hit@1") -> Path:
    """A grouped bar chart of one metric: a group per task (and macro), a bar per report."""
    plt = _pyplot()
    labels = _labels(reports, labels)
    tasks: list[str] = []
    for report in reports:
        tasks += [t.task for t in report.tasks if t.task not in tasks]
    groups = [*tasks, "macro"]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.3 * len(groups) * len(reports) + 4), 4.0))
    width = 0.8 / len(reports)
    for i, (label, report) in enumerate(zip(labels, reports)):
        values = {t.task: t.metrics.get(metric, math.nan) for t in report.tasks} | {"macro": report.macro.get(metric, math.nan)}
        xs = [x + (i - (len(reports) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(xs, [values.get(g, math.nan) for g in groups], width, label=label)
    if metric == "hit@1":
        chance = {t.task: t.chance for r in reversed(reports) for t in r.tasks} | {"macro": reports[0].macro.get("chance", math.nan)}
        ax.hlines([chance.get(g, math.nan) for g in groups], [x - 0.45 for x in range(len(groups))],
                  [x + 0.45 for x in range(len(groups))], colors="black", linestyles="dashed", linewidth=1.2, label="chance")
    _finish_axes(ax, groups, f"{COLUMN_TITLES.get(metric, metric)} by stage")
    return _save(fig, path, plt)


def _labels(reports: Sequence[EvalReport], labels: Sequence[str] | None) -> list[str]:
    if not reports:
        raise OmniError("compare needs at least one report")
    if labels is None:
        return [r.model for r in reports]
    if len(labels) != len(reports):
        raise OmniError(f"got {len(labels)} label(s) for {len(reports)} report(s): give one label per report")
    return list(labels)


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise OmniError("charts need matplotlib: pip install 'omnisdk[dev]' (or pip install matplotlib)") from exc
    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    return plt


def _finish_axes(ax: Any, labels: list[str], title: str) -> None:
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # Outside the axes: bars reach 1.0, where a legend inside would hide them.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _save(fig: Any, path: str | Path, plt: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def _none_to_nan(obj: Any, key: str = "") -> Any:
    # Only metric values are ever null in a report; other optional fields (path, fingerprint) stay None.
    if obj is None and key in (*AVERAGED, "chance"):
        return math.nan
    if isinstance(obj, dict):
        return {k: _none_to_nan(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_none_to_nan(v, key) for v in obj]
    return obj
