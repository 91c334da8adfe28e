"""Dev-split study for the `small` preset's alignment stage: which vision tower and settings learn fastest.

For each variant, build the small preset's base (MiniLM backbone, fresh towers) with the variant's
image- (or audio-) plugin settings, run `align` for a fixed number of steps on that modality's pairs
only (batch, learning rate as given), and score t2i / i2t / digit_cls (t2a / a2t / sound_cls) on the
**dev** split. Wall time includes preparing
the inputs once (the prepared-input cache). Used to choose the preset; never looks at test.

    python scripts/align_study.py --data runs/ow-small --steps 150 --out runs/align-study.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {
    "vit6-128": {"tower": "vit_tiny_patch16_224", "tower_kwargs": {"depth": 6}, "image_size": 128, "token_grid": 4},
    "resnet18-128": {"tower": "resnet18", "tower_kwargs": {}, "image_size": 128, "token_grid": 4},
    "resnet10t-128": {"tower": "resnet10t", "tower_kwargs": {}, "image_size": 128, "token_grid": 4},
    "resnet10t-64": {"tower": "resnet10t", "tower_kwargs": {}, "image_size": 64, "token_grid": 2},
    "resnet10t-64-gn": {"tower": "resnet10t", "tower_kwargs": {"norm_layer": "groupnorm1"}, "image_size": 64, "token_grid": 2},
    "resnet10t-96-gn": {"tower": "resnet10t", "tower_kwargs": {"norm_layer": "groupnorm1"}, "image_size": 96, "token_grid": 3},
    # audio: the small preset's built-in log-mel transformer encoder
    "audio-builtin": {"encoder": "builtin"},
    # ... with each clip's log-mel standardised and the conv front end layer-normed before the positions
    "audio-norm": {"encoder": "builtin", "input_norm": True},
    "audio-norm-pt": {"encoder": "builtin", "input_norm": True, "front_end": "pitch_timbre"},
    "audio-norm-1layer": {"encoder": "builtin", "input_norm": True, "encoder_layers": 1},
    "audio-norm-pool2": {"encoder": "builtin", "input_norm": True, "token_pool": 2},
    "vit6-64": {"tower": "vit_tiny_patch16_224", "tower_kwargs": {"depth": 6}, "image_size": 64, "token_grid": 4},
    "vit6p8-64": {"tower": "vit_tiny_patch16_224", "tower_kwargs": {"depth": 6, "patch_size": 8}, "image_size": 64, "token_grid": 4},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hard-negatives", type=int, default=1)
    ap.add_argument("--frozen-dropout", action="store_true", help="keep the frozen backbone's dropout on")
    ap.add_argument("--warmup-ratio", type=float, default=0.05)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", type=Path, help="prepared-input cache kept across runs (default: a temporary one)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", type=Path, help="copy each variant's aligned checkpoint to KEEP/VARIANT")
    args = ap.parse_args()

    from omnisdk.eval.runner import evaluate
    from omnisdk.datasets.format import load_dataset
    from omnisdk.model import OmniModel
    from omnisdk.presets import build_base
    from omnisdk.trainers.stages import align

    dataset = load_dataset(args.data)
    results = {}
    with tempfile.TemporaryDirectory(prefix="align-study-") as tmp:
        cache = args.cache or Path(tmp) / "cache"
        for name in args.variants.split(","):
            base = Path(tmp) / name / "base"
            modality = "audio" if name.startswith("audio") else "image"
            build_base("small", modalities=["text", modality], overrides={modality: VARIANTS[name]}).save(base)
            started = time.perf_counter()
            result = align(base, dataset, Path(tmp) / name / "aligned",
                           {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                            "precision": "bf16", "hard_negatives": args.hard_negatives,
                            "frozen_dropout": args.frozen_dropout, "warmup_ratio": args.warmup_ratio, "quotas": {modality: 1.0}, "checkpoint_every": 10_000},
                           show_progress=False, cache=cache)
            seconds = time.perf_counter() - started
            model = OmniModel.load(Path(tmp) / name / "aligned").use_cache(cache)
            tasks = ["t2a", "a2t", "sound_cls"] if modality == "audio" else ["t2i", "i2t", "digit_cls"]
            report = evaluate(model, dataset, split="dev", tasks=tasks, show_progress=False)
            metrics = {t.task: {"hit@1": t.metrics["hit@1"], "ndcg@10": t.metrics["ndcg@10"]} for t in report.tasks}
            results[name] = {"seconds": round(seconds, 1), "train_seconds": result.seconds, "final_loss": result.final_loss,
                             "dev": metrics}
            print(name, json.dumps(results[name]), flush=True)
            if args.keep:
                shutil.copytree(Path(tmp) / name / "aligned", args.keep / name, dirs_exist_ok=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
