"""Projector Drift under other fusion settings, on the dev split only (never the test split).

Fuses a finished pipeline run's specialists several ways and runs the drift check on each:

    python scripts/fusion_drift_study.py runs/small [--out runs/small/fusion-study]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omnisdk.datasets.format import load_dataset
from omnisdk.fusion import fuse
from omnisdk.pipeline.drift import check_drift

VARIANTS = {
    "ties-d0.5-merged-stats": dict(method="ties", density=0.5, statistics="merge"),
    "ties-d0.5": dict(method="ties", density=0.5),
    "ties-d0.3": dict(method="ties", density=0.3),
    "ties-d0.8": dict(method="ties", density=0.8),
    "task_arithmetic-l1": dict(method="task_arithmetic", lam=1.0),
    "task_arithmetic-l0.5": dict(method="task_arithmetic", lam=0.5),
    "dare_ties-d0.5": dict(method="dare_ties", density=0.5),
    "ties-d0.2": dict(method="ties", density=0.2),
    "ties-d0.1": dict(method="ties", density=0.1),
    "ties-d0.15": dict(method="ties", density=0.15),
    "ties-d0.3-l1.3": dict(method="ties", density=0.3, lam=1.3),
    "task_arithmetic-l0.7": dict(method="task_arithmetic", lam=0.7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an `omnisdk pipeline run` output directory")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    out = args.out or args.run / "fusion-study"
    dataset = load_dataset(args.run / "data")
    # the specialists' base: the aligned model where the run has an alignment stage
    base = args.run / "aligned" if (args.run / "aligned" / "omnisdk.json").exists() else args.run / "base"
    cache = args.run / "cache" if (args.run / "cache").is_dir() else None
    specialists = {p.name: p for p in sorted((args.run / "specialists").iterdir()) if (p / "omnisdk.json").exists()}
    results = {}
    for name in args.variants.split(","):
        target = out / name
        if not (target / "omnisdk.json").exists():
            fuse(base, list(specialists.values()), out=target, progress=False, **VARIANTS[name])
        report = check_drift(specialists, target, dataset, split="dev", show_progress=False, cache=cache,
                             precision="bf16")
        results[name] = report.model_dump()
        print(f"## {name}\n\n{report.to_markdown()}\n", flush=True)
        (out / "study.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
