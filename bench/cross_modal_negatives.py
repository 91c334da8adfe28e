"""Cross-modal hard negatives against the plain trainer on OmniWorld's mixed tasks, at equal steps.

Trains the joint stage (every parameter, all modalities; the tiny preset's [train] settings:
one-modality batches, so in-batch negatives are of the pair's own modality) from one base, once per
arm: plain, `cross_modal_negatives` drawn from the pool's positives, and from its positives and
queries. Then scores t2x and a2x (nDCG@10, top-10 modality shares against the relevant items')
raw and calibrated, with bench/modality_gap.py's measurement. Not run by CI.

    python bench/cross_modal_negatives.py --out DIR [--steps 60] [--negatives 4] [--split dev,test] [--json out.json]

On the tiny preset (a random backbone) the numbers only show the direction of an effect.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modality_gap import measure  # noqa: E402

ARMS = {"plain": {}, "cross-modal": {"cross_modal_negatives": None},
        "cross-modal + queries": {"cross_modal_negatives": None, "cross_modal_queries": True}}
TINY_TRAIN = {"batch_size": 8, "hard_negatives": 1, "learning_rate": 1e-3, "temperature": 0.1, "modality_batches": True,
              "checkpoint_every": 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--split", default="dev,test")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json")
    args = parser.parse_args()

    from omnisdk.datasets.format import load_dataset
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.model import OmniModel
    from omnisdk.presets import build_base
    from omnisdk.trainers.stages import train_joint

    data, base, cache = args.out / "omniworld", args.out / "base", args.out / "cache"
    if not (data / "dataset.json").is_file():
        make_omniworld(data, size="tiny")
    if not base.is_dir():
        build_base(args.preset).save(base)
    dataset = load_dataset(data)
    rows = []
    for arm in args.arms.split(","):
        settings = {**TINY_TRAIN, "steps": args.steps,
                    **{k: (args.negatives if v is None else v) for k, v in ARMS[arm].items()}}
        out = args.out / arm.replace(" ", "").replace("+", "-")
        started = time.perf_counter()
        if not out.is_dir():
            train_joint(base, dataset, out, settings, show_progress=False, cache=cache)
        seconds = time.perf_counter() - started
        model = OmniModel.load(out)
        for split in args.split.split(","):
            for row in measure(model, dataset, split):
                rows.append({"arm": arm, "train_s": round(seconds, 1), **row})
        print(f"done: {arm} ({seconds:.0f} s)", flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def table(rows: list[dict]) -> str:
    from omnisdk.tables import markdown_table

    def shares(d: dict) -> str:
        return " ".join(f"{m} {100 * v:.0f}%" for m, v in sorted(d.items(), key=lambda kv: -kv[1]) if v)

    return markdown_table(
        ["arm", "split", "method", "task", "nDCG@10", "single-task mean", "max share gap (pts)", "top-10 shares", "relevant shares"],
        [[r["arm"], r["split"], r["method"], r["task"], f"{r['ndcg@10']:.3f}",
          "" if r["single_mean_ndcg@10"] is None else f"{r['single_mean_ndcg@10']:.3f}", r["max_share_gap_points"],
          shares(r["top10_share"]), shares(r["relevant_share"])] for r in rows])


if __name__ == "__main__":
    main()
