"""The seed-method ablation's report: OUT/ablation.json, ablation.md and ablation.png.

Used by scripts/seed_ablations.py; each row is one variant with its test EvalReport, training
time, CoMa warm-up time, index size and search latency.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence


def held_out_means(report: Any, tasks: Sequence[str]) -> dict[str, float]:
    """Mean nDCG@10 and hit@1 over the compositional held-out tasks present in `report`."""
    chosen = [t for t in report.tasks if t.task in tasks]
    out = {}
    for metric in ("ndcg@10", "hit@1"):
        values = [t.metrics[metric] for t in chosen if not math.isnan(t.metrics.get(metric, math.nan))]
        out[metric] = sum(values) / len(values) if values else math.nan
    return out


def summary_rows(rows: Sequence[dict[str, Any]], held_out: Sequence[str], steps: int) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        report, lat = row["report"], row["latency"]
        train_s = row["train_s"]
        out.append({
            "variant": row["label"], "run": row["run"],
            "test_ndcg@10": report.macro["ndcg@10"], "test_hit@1": report.macro["hit@1"],
            **{f"held_out_{k}": v for k, v in held_out_means(report, held_out).items()},
            "train_s": train_s, "s_per_step": train_s / steps if train_s else None, "warmup_s": row["warmup_s"],
            "index_bytes": row["index"]["bytes"], "index_points": row["index"]["points"],
            "vector_bytes": row["index"].get("vector_bytes"),
            "latency_points": lat["points"], "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
        })
    return out


def _no_nan(obj: Any) -> Any:
    """NaN (a metric with nothing measured) as null: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def _f(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec)


def markdown(summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], chosen: dict[str, Any],
             held_out: Sequence[str], train: dict[str, Any], steps: int) -> str:
    from omnisdk.eval.report import compare
    from omnisdk.tables import markdown_table

    reports = [r["report"] for r in rows]
    labels = [r["label"] for r in rows]
    first = reports[0]
    lines = [
        f"# Seed-method ablations on {first.dataset} (test split, dataset {first.dataset_hash[:12]})", "",
        f"Every variant: {steps} contrastive steps, batch {train.get('batch_size')}, the same pairs "
        f"(the pipeline's joint-baseline settings); CoMa's warm-up steps come on top, timed apart. "
        f"Settings {'chosen on dev' if chosen.get('tuned') else 'NOT tuned on dev (each grid first value)'}: "
        + ", ".join(f"{m} {json.dumps(v)}" for m, v in chosen["chosen"].items()) + ".", "",
        f"Held-out = mean over OmniWorld's compositional held-out tasks ({', '.join(held_out)}): every "
        "dev/test scene, clip and sound there leads with a pair of attributes never seen together in training.", "",
        markdown_table(
            ["variant", "nDCG@10", "hit@1", "held-out nDCG@10", "held-out hit@1", "train s", "s/step", "CoMa warm-up s",
             "index bytes on disk (points)", "vector bytes", "p50 ms", "p99 ms"],
            [[s["variant"], _f(s["test_ndcg@10"]), _f(s["test_hit@1"]), _f(s["held_out_ndcg@10"]), _f(s["held_out_hit@1"]),
              _f(s["train_s"], ".1f"), _f(s["s_per_step"], ".2f"), _f(s["warmup_s"], ".1f"),
              f"{s['index_bytes']:,} ({s['index_points']})", _f(s["vector_bytes"], ",d"), _f(s["p50_ms"], ".2f"),
              _f(s["p99_ms"], ".2f")]
             for s in summary]), "",
        f"Latency: `Searcher.search_vector` over {summary[0]['latency_points']:,} random unit points on Qdrant Edge "
        "(bench/search.py's vectors and payloads), one measurement per layout (AGFF: MaxSim prefetch then exact "
        "rescoring by the model's aggregation). Times were measured on a shared 2-core machine: noisy.", "",
        "## " + compare(reports, labels, metric="ndcg@10"), "",
        "## " + compare(reports, labels, metric="hit@1"), "",
    ]
    if chosen.get("table"):
        lines += [f"## Dev sweep ({chosen.get('sweep_steps')} steps per run; each method alone)", "",
                  markdown_table(["method", "setting", "dev nDCG@10", "dev hit@1"],
                                 [[t["method"], t["setting"], _f(t["dev_ndcg@10"]), _f(t["dev_hit@1"])] for t in chosen["table"]]),
                  ""]
    return "\n".join(lines)


def write_report(out: Path, rows: Sequence[dict[str, Any]], chosen: dict[str, Any], held_out: Sequence[str],
                 train: dict[str, Any], steps: int) -> None:
    from omnisdk.eval.report import plot_comparison

    summary = summary_rows(rows, held_out, steps)
    data = {"steps": steps, "train": train, "settings": chosen, "held_out_tasks": list(held_out), "summary": summary,
            "variants": [{k: (v.model_dump(mode="json") if k == "report" else v) for k, v in r.items()} for r in rows]}
    (out / "ablation.json").write_text(json.dumps(_no_nan(data), indent=2) + "\n")
    (out / "ablation.md").write_text(markdown(summary, rows, chosen, held_out, train, steps) + "\n")
    plot_comparison([r["report"] for r in rows], out / "ablation.png", [r["label"] for r in rows], metric="ndcg@10")
