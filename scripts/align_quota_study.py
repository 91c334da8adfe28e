"""Dev-split study of a pipeline's alignment stage: which modality quotas (and steps, batch) to use.

Reads a finished `omnisdk pipeline run` directory (its base, its dataset and its prepared-input cache),
reruns the alignment stage with the pipeline's own settings ([train] then [align]) changed as each
variant says, and scores every task on the **dev** split. Never looks at test.

    python scripts/align_quota_study.py --run runs/demo3/pipeline \\
        --variant preset: --variant audio-heavy:image=3,video=1,document=0.5,audio=3.5 --out study.json

A variant is NAME:QUOTAS[;steps=N][;batch_size=N]; an empty QUOTAS keeps the preset's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_variant(spec: str) -> tuple[str, dict]:
    """'name:image=3,audio=2;steps=120' -> ('name', {'quotas': {...}, 'steps': 120})."""
    name, _, rest = spec.partition(":")
    parts = rest.split(";")
    changes: dict = {}
    if parts[0]:
        changes["quotas"] = {m: float(q) for m, q in (p.split("=") for p in parts[0].split(","))}
    for extra in parts[1:]:
        key, value = extra.split("=")
        changes[key] = int(value)
    return name, changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a finished pipeline run directory")
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--work", type=Path, help="where the aligned checkpoints go (default RUN/../align-study)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from omnisdk.datasets.format import load_dataset
    from omnisdk.eval.runner import evaluate
    from omnisdk.model import OmniModel
    from omnisdk.pipeline.config import PipelineConfig
    from omnisdk.trainers.stages import align

    config = PipelineConfig.model_validate(json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.data.path or args.run / "data")  # generated runs keep it in RUN/data
    cache = args.run / "cache"
    work = args.work or args.run.parent / "align-study"
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    for spec in args.variant:
        name, changes = parse_variant(spec)
        if name in results:
            continue
        settings = {**config.align_settings(), **changes, "checkpoint_every": 10_000}
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        align(args.run / "base", dataset, out, settings, show_progress=False, cache=cache)
        seconds = time.perf_counter() - started
        model = OmniModel.load(out, precision=config.eval_precision).use_cache(cache)
        report = evaluate(model, dataset, split=config.dev_split, show_progress=False)
        results[name] = {"settings": {k: settings[k] for k in ("steps", "batch_size", "quotas")},
                         "seconds": round(seconds, 1),
                         "dev_hit@1": {t.task: round(t.metrics["hit@1"], 3) for t in report.tasks},
                         "dev_ndcg@10": {t.task: round(t.metrics["ndcg@10"], 3) for t in report.tasks}}
        print(name, json.dumps(results[name]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
