#!/usr/bin/env bash
# CUDA checks for a GPU machine, in under 5 minutes: the CUDA tests, a timed encode and a timed
# training run, each on the GPU and (for the ratio) on the CPU. Figures go to stdout and, when $OUT
# is set, to $OUT/gpu_check.json.
#
#   bash scripts/gpu_check.sh            # from the repository root, after scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

echo "== CUDA tests"
timeout 240 $PY -m pytest -q -m cuda tests/test_cuda.py

echo "== timed encode and training"
timeout 240 $PY - <<'PYEOF'
import json, os, tempfile, time
from pathlib import Path

import torch

from omnisdk.datasets.omniworld.build import make_omniworld
from omnisdk.model import OmniModel
from omnisdk.presets import build_base
from omnisdk.trainers.stages import train_specialist

root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
make_omniworld(root / "data", domains=("scenes",))
build_base("small", modalities=["text", "image"]).save(root / "base")
texts = [f"a small red circle number {i} on the left" for i in range(512)]
figures = {"device": torch.cuda.get_device_name(0)}
for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
    model = OmniModel.load(root / "base", device=device, precision=precision)
    model.encode(texts[:32], batch_size=32, show_progress=False)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    model.encode(texts, batch_size=64, show_progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    figures[f"encode_{device}_{precision}_texts_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
for device in ("cpu", "cuda"):
    result = train_specialist(root / "base", "image", root / "data", root / f"spec-{device}",
                              {"steps": 10, "batch_size": 16}, device=device, show_progress=False, cache=root / "cache")
    figures[f"train_{device}_s_per_step"] = round(result.seconds / result.steps, 3)
if torch.cuda.is_available():
    figures["cuda_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
print(json.dumps(figures, indent=2))
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(figures, indent=2))
PYEOF
