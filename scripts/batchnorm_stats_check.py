"""Dev-split check: do a pipeline run's BatchNorm running statistics explain what a specialist or the
fused model lost? Scores each model as it is, then with the aligned model's statistics put back
(every weight unchanged).

    python scripts/batchnorm_stats_check.py runs/small-r0 --models specialists/document,fused
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a pipeline output directory (with aligned/, data/, cache/)")
    ap.add_argument("--models", default="specialists/document,fused")
    ap.add_argument("--tasks", default="t2i,i2t,digit_cls,t2v")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from omnisdk.datasets.format import load_dataset
    from omnisdk.eval.runner import evaluate
    from omnisdk.model import OmniModel

    dataset = load_dataset(args.run / "data")
    aligned = OmniModel.load(args.run / "aligned")
    stats = {k: v.clone() for k, v in aligned.state_dict().items() if "running_" in k or "num_batches_tracked" in k}
    results = {}
    for name in args.models.split(","):
        for swap in (False, True):
            model = OmniModel.load(args.run / name, precision="bf16").use_cache(args.run / "cache")
            if swap:
                model.load_state_dict(stats, strict=False)
            report = evaluate(model, dataset, split="dev", tasks=args.tasks.split(","), show_progress=False)
            key = name + (" + aligned BN statistics" if swap else "")
            results[key] = {t.task: round(t.metrics["hit@1"], 3) for t in report.tasks}
            print(key, results[key], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
