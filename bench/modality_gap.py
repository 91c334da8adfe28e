"""The modality gap on OmniWorld's mixed tasks: nDCG@10 and top-10 modality shares per correction.

Encodes the split once, then scores t2x and a2x raw and with each calibration method
(omnisdk.search.calibration; "platt" fitted on the --fit-split queries, default dev), beside the matching single-modality tasks (issue 16's targets:
mixed nDCG@10 at least 0.9x their mean; top-10 shares within 15 points of the relevant shares).
Choose the method on the dev split, report on test. Not run by CI.

    python bench/modality_gap.py --model MODEL --data OMNIWORLD [--split dev] [--methods none,zscore,platt]
                                 [--cache-dir PREPARED] [--json out.json]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from omnisdk.search.calibration import METHODS

SINGLE = {"t2x": ("t2i", "t2v", "t2d", "t2a"), "a2x": ("a2i",)}


class MemoEncoder:
    """Encodes each (item, role) once across the runs of one measurement."""

    def __init__(self, model):
        self.model, self.cache = model, {}
        self.name, self.fingerprint = getattr(model, "name", "model"), getattr(model, "fingerprint", None)

    def encode(self, items, *, role=None, return_errors=False, errors=None, **kwargs):
        items = list(items)  # `errors`: the runner's; failed items come back as non-finite rows either way
        keys = [(role, i.modality, i.text, str(i.path), repr(i.locator)) for i in items]
        todo = [k for k in dict.fromkeys(keys) if k not in self.cache]
        if todo:
            index = {k: n for n, k in enumerate(keys)}
            vectors = self.model.encode([items[index[k]] for k in todo], role=role, errors="ignore", **kwargs)
            for k, v in zip(todo, np.asarray(vectors, dtype=np.float32)):
                self.cache[k] = v
        out = np.stack([self.cache[k] for k in keys])
        return (out, []) if return_errors else out


def measure(model, dataset, split: str, methods=(None, *METHODS), fit_split: str = "dev") -> list[dict]:
    from omnisdk.eval.runner import evaluate

    encoder = MemoEncoder(model)
    tasks = [t for t in ("t2x", "a2x", *SINGLE["t2x"], *SINGLE["a2x"]) if dataset.task_queries(t, split) if t in dataset.tasks]
    rows = []
    for method in methods:
        report = evaluate(encoder, dataset, split=split, tasks=tasks, show_progress=False, calibrate=method,
                          fit_split=fit_split)
        by_task = {t.task: t for t in report.tasks}
        for mixed in ("t2x", "a2x"):
            if mixed not in by_task:
                continue
            t = by_task[mixed]
            singles = [by_task[s].metrics["ndcg@10"] for s in SINGLE[mixed] if s in by_task]
            gap = max(abs(t.top10_share.get(m, 0) - t.relevant_share.get(m, 0)) for m in {*t.top10_share, *t.relevant_share})
            rows.append({"split": split, "method": method or "none", "task": mixed, "ndcg@10": t.metrics["ndcg@10"],
                         "single_mean_ndcg@10": float(np.mean(singles)) if singles else None,
                         "max_share_gap_points": round(100 * gap, 1),
                         "top10_share": t.top10_share, "relevant_share": t.relevant_share})
    return rows


def table(rows: list[dict]) -> str:
    from omnisdk.tables import markdown_table

    def shares(d: dict) -> str:
        return " ".join(f"{m[:3]} {100 * v:.0f}" for m, v in sorted(d.items()))

    return markdown_table(
        ["split", "method", "task", "nDCG@10", "single mean", "ratio", "max share gap", "top-10 %", "relevant %"],
        [[r["split"], r["method"], r["task"], f"{r['ndcg@10']:.3f}", f"{r['single_mean_ndcg@10']:.3f}",
          f"{r['ndcg@10'] / max(r['single_mean_ndcg@10'], 1e-9):.2f}", r["max_share_gap_points"],
          shares(r["top10_share"]), shares(r["relevant_share"])] for r in rows])


def main() -> None:
    from omnisdk.datasets.format import load_dataset
    from omnisdk.model import OmniModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="dev", help="comma-separated splits (choose on dev, report on test)")
    parser.add_argument("--methods", default=",".join(("none", *METHODS)), help="comma-separated: none and calibration methods")
    parser.add_argument("--fit-split", default="dev", help="split the 'platt' method is fitted on")
    parser.add_argument("--cache-dir", help="prepared-input cache of the model's inputs (decoded once)")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()
    model, dataset = OmniModel.load(args.model).use_cache(args.cache_dir), load_dataset(args.data)
    methods = [None if m == "none" else m for m in args.methods.split(",")]
    rows = [row for split in args.split.split(",") for row in measure(model, dataset, split, methods, args.fit_split)]
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
