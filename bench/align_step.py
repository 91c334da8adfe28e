"""Alignment step speed with frozen text embedded once (FrozenRows) against embedding it at every step.

Alignment trains the towers with the backbone frozen, so a caption's embedding never changes: the
trainer embeds each text once and looks it up afterwards. This times the same prepared alignment
batches (the `small` preset's base and alignment settings, one modality per batch) twice in one run:
every text embedded at every step (what the trainer did before), then every text looked up, the
memo filled by an untimed pass over the same batches first (the steady state after an epoch).

    python bench/align_step.py --run runs/small-r2-s0 [--steps 24] [--json out.json]

--run is a finished `omnisdk pipeline run small` directory: its base, dataset and prepared cache.
Prints pairs/s per modality and the ratio. Not run by CI.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=24, help="alignment batches timed (each way)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from omnisdk.datasets.format import load_dataset
    from omnisdk.model import OmniModel
    from omnisdk.pipeline.config import PipelineConfig
    from omnisdk.trainers.config import TrainConfig
    from omnisdk.trainers.contrastive import ContrastiveTrainer
    from omnisdk.trainers.data import PairPool, pair_modality
    from omnisdk.trainers.embedding import FrozenRows

    config = PipelineConfig.model_validate(json.loads((args.run / "config.json").read_text()))
    dataset = load_dataset(config.data.path or args.run / "data")  # generated runs keep it in RUN/data
    model = OmniModel.load(args.run / "base").use_cache(args.run / "cache")
    settings = {**config.align_settings(), "steps": args.steps,
                "trainable": [f"adapters.{m}.*" for m in model.plugins if m != "text"]}
    pool = PairPool.from_dataset(dataset, modalities=[m for m in model.plugins if m != "text"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ContrastiveTrainer(model, pool, TrainConfig(**settings), Path(tmp), show_progress=False)
        trainer._train_mode()
        batches = [trainer._prepare_micro_batch(i) for i in range(args.steps)]
        memo = FrozenRows.for_trainer(model, [n for n in trainer.trained if n != "_log_temperature"])

        def run(frozen_rows) -> dict[str, list[float]]:
            trainer.frozen_rows = frozen_rows
            seconds: dict[str, list[float]] = {}
            for prepared in batches:
                started = time.perf_counter()
                trainer.optimizer.zero_grad(set_to_none=True)
                loss, kept, _ = trainer._micro_step(prepared)
                loss.backward()
                trainer.optimizer.step()
                modality = pair_modality(prepared[0][0])  # one modality per batch
                seconds.setdefault(modality, []).append(time.perf_counter() - started)
            return seconds

        run(None)  # warm-up: first-call allocations, autotuning
        every = run(None)
        run(memo)  # fills the memo (untimed)
        once = run(memo)
    rows, out = [], {}
    for modality in sorted(every):
        pairs = settings["batch_size"] * len(every[modality])
        a, b = pairs / sum(every[modality]), pairs / sum(once[modality])
        out[modality] = {"every_step_pairs_s": round(a, 1), "once_pairs_s": round(b, 1), "speedup": round(b / a, 2)}
        rows.append(f"| {modality} | {len(every[modality])} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
    total_a = sum(sum(v) for v in every.values())
    total_b = sum(sum(v) for v in once.values())
    out["all"] = {"seconds_every_step": round(total_a, 1), "seconds_once": round(total_b, 1), "speedup": round(total_a / total_b, 2)}
    print(f"threads {torch.get_num_threads()}, batch {settings['batch_size']}, quotas {settings.get('quotas')}\n")
    print("| modality | batches | text every step (pairs/s) | text once (pairs/s) | speed-up |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"| all | {args.steps} | {total_a:.1f} s | {total_b:.1f} s | {total_a / total_b:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
