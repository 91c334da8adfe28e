"""Training step speed: the trainer against the model alone, and against the trainer of an earlier commit.

For each modality's specialist (image, video, document, audio) and for a mixed joint batch, in one
run, on the same model (the `small` preset's base: MiniLM backbone, fresh towers), the same data,
batch size, precision and batches:

1. trainer: `ContrastiveTrainer` with the prepared-input cache warm (the cache is filled first and
   not timed), pairs per second over its steps;
2. model alone: the trainer's own micro-batches prepared beforehand, then forward, backward and
   the optimizer step on each: the floor a trainer step is measured against;
3. old trainer: the same `ContrastiveTrainer` run at commit --baseline (default 65577c2, before the
   cache: it decodes every item at every step), from a copy of that commit's tree.

Prints a Markdown table with trainer/model-alone ratios, each modality's step time relative to an
image step, and the speed-up over the old trainer, then the targets. Not run by CI.

    python bench/train_step.py [--data DIR] [--steps 12] [--batch-size 16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
CASES = ("image", "video", "document", "audio", "joint")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="OmniWorld directory (default: OmniWorld tiny, generated)")
    ap.add_argument("--steps", type=int, default=12, help="steps per case (the trainers run one more)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--baseline", default="65577c2", help="commit whose trainer is the 'old' column")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement in this process
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_measure(args)))
        return
    with tempfile.TemporaryDirectory(prefix="omnisdk-train-step-") as tmp:
        tmp = Path(tmp)
        data = args.data or _make_data(tmp / "data")
        old_tree = _old_tree(args.baseline, tmp / "old")
        # Each side builds the same preset with its own code (checkpoint formats differ between commits).
        _run_worker("build-base:new", args, data, tmp, ROOT)
        _run_worker("build-base:old", args, data, tmp, old_tree)
        rows = []
        for case in args.cases.split(","):
            row = {"case": case}
            row.update(_run_worker(f"new:{case}", args, data, tmp, ROOT))
            row.update(_run_worker(f"old:{case}", args, data, tmp, old_tree))
            rows.append(row)
            print(f"{case}: {row}", file=sys.stderr)
        _report(rows, args)


def _make_data(root: Path) -> Path:
    from omnisdk.datasets.omniworld.build import make_omniworld

    make_omniworld(root, seed=0, size="tiny")
    return root


def _old_tree(commit: str, out: Path) -> Path:
    """The commit's files laid out as installed: plugins/, trainers/ and apps/ under omnisdk/."""
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    for name in ("plugins", "trainers", "apps"):
        (out / name).rename(out / "omnisdk" / name)
    return out


def _run_worker(what: str, args, data: Path, tmp: Path, tree: Path) -> dict:
    # The worker imports omnisdk from `tree` only: the editable install's finder is dropped first.
    isolate = ("sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
               f"sys.path.insert(0, {str(tree)!r}); ") if tree != ROOT else ""
    code = ("import sys; " + isolate + f"sys.argv = {[sys.argv[0], '--worker', what, '--data', str(data), '--workdir', str(tmp), '--steps', str(args.steps), '--batch-size', str(args.batch_size)]!r}; "
            f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp)
    if done.returncode != 0:
        raise SystemExit(f"worker {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(args) -> dict:
    import torch

    import omnisdk

    kind, _, case = args.worker.partition(":")
    if kind == "build-base":
        from omnisdk.presets import build_base

        build_base("small").save(args.workdir / f"base-{case}")
        return {"omnisdk": omnisdk.__file__}
    base = args.workdir / f"base-{kind}"
    from omnisdk.datasets.format import load_dataset
    from omnisdk.model import OmniModel
    from omnisdk.trainers.config import TrainConfig
    from omnisdk.trainers.contrastive import ContrastiveTrainer
    from omnisdk.trainers.data import PairPool

    torch.manual_seed(0)
    dataset = load_dataset(args.data)
    model = OmniModel.load(base)
    joint = case == "joint"
    modalities = [m for m in model.plugins if m != "text"] if joint else [case]
    pool = PairPool.from_dataset(dataset, modalities=modalities)
    trainable = ["backbone.*", "adapters.*"]
    settings = dict(steps=args.steps + 1, batch_size=args.batch_size, hard_negatives=1, precision="bf16",
                    learning_rate=5e-5, adapter_learning_rate=1e-3, trainable=trainable, checkpoint_every=10_000,
                    warmup_ratio=0.0)
    out: dict = {}
    if kind == "new":
        model.use_cache(args.workdir / f"cache-{case}")
        ContrastiveTrainer(model, pool, TrainConfig(**{**settings, "steps": 1}), args.workdir / f"warm-{case}",
                           show_progress=False).train()  # fills the cache (untimed) and runs one step
        model = OmniModel.load(base).use_cache(args.workdir / f"cache-{case}")
    trainer = ContrastiveTrainer(model, pool, TrainConfig(**settings), args.workdir / f"{kind}-{case}",
                                 show_progress=False)
    result = trainer.train()
    # Mean over every step, the first (allocator warm-up, the first batch's preparation) included.
    per_step = result.seconds / result.steps
    out[f"{kind}_trainer_step_s"] = per_step
    out[f"{kind}_trainer_pairs_s"] = args.batch_size / per_step
    if kind == "new":
        out["model_alone_step_s"] = _model_alone(trainer, args.steps)
        out["model_alone_pairs_s"] = args.batch_size / out["model_alone_step_s"]
    return out


def _model_alone(trainer, steps: int) -> float:
    """Seconds per step of forward, backward, clipping and AdamW on micro-batches prepared beforehand:
    the trainer's own batches 1..steps (after one untimed warm-up step on batch 0), so the floor sees
    the same clip lengths and modality mix as the trainer, not one batch repeated."""
    import torch

    batches = [trainer._prepare_micro_batch(n) for n in range(steps + 1)]
    trainer.model.train()

    def step(prepared) -> None:
        trainer.optimizer.zero_grad(set_to_none=True)
        loss, _, _ = trainer._micro_step(prepared)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(trainer.trained.values()), 1.0)
        trainer.optimizer.step()

    step(batches[0])
    started = time.perf_counter()
    for prepared in batches[1:]:
        step(prepared)
    return (time.perf_counter() - started) / steps


def _report(rows: list[dict], args) -> None:
    image = next((r for r in rows if r["case"] == "image"), None)
    lines = ["| case | trainer pairs/s | model alone pairs/s | trainer / model alone (time) | step vs image step | "
             "old trainer pairs/s | speed-up over old |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["new_trainer_step_s"] / r["model_alone_step_s"]
        vs_image = r["new_trainer_step_s"] / image["new_trainer_step_s"] if image else float("nan")
        speedup = r["new_trainer_pairs_s"] / r["old_trainer_pairs_s"]
        r.update(ratio_to_model_alone=ratio, step_vs_image=vs_image, speedup_over_old=speedup)
        lines.append(f"| {r['case']} | {r['new_trainer_pairs_s']:.1f} | {r['model_alone_pairs_s']:.1f} | {ratio:.2f}x | "
                     f"{vs_image:.2f}x | {r['old_trainer_pairs_s']:.1f} | {speedup:.2f}x |")
    print("\n".join(lines))
    print(f"\nbatch {args.batch_size} pairs + 1 hard negative each, bf16 autocast, {args.steps} steps per case; "
          f"old = trainer at {args.baseline}")
    print("targets: trainer within 1.15x of model alone:",
          ", ".join(f"{r['case']} {'met' if r['ratio_to_model_alone'] <= 1.15 else 'MISSED'}" for r in rows))
    print("         video and document within 1.5x of an image step:",
          ", ".join(f"{r['case']} {'met' if r['step_vs_image'] <= 1.5 else 'MISSED'}" for r in rows
                    if r["case"] in ("video", "document")))
    joint = next((r for r in rows if r["case"] == "joint"), None)
    if joint:
        print(f"         joint at least 3x the old trainer: {joint['speedup_over_old']:.2f}x "
              f"{'met' if joint['speedup_over_old'] >= 3 else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
