"""Resumable training state in safetensors and JSON (never pickle): weights that train, AdamW moments,
schedule position, random generator state, and the run's log.

    RUN/checkpoints/step-000050/
        trainable.safetensors   the parameters being trained (LoRA factors under LoRA), by name
        optimizer.safetensors   "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.step"
        rng.safetensors         torch's CPU (and CUDA) generator state
        state.json              step, scheduler position, config digest, loss log

A directory appears under its final name only when complete (written as a temporary, then renamed).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from omnisdk.errors import WriteError
from omnisdk.faults import kill_point

CHECKPOINTS = "checkpoints"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:06d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / CHECKPOINTS
    done = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file()) if folder.is_dir() else []
    return done[-1] if done else None


def save_state(run_dir: Path, step: int, named_params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, info: dict[str, Any], keep: int) -> Path:
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    except OSError as exc:
        raise WriteError.of(exc, f"writing training checkpoint {final}") from exc
    try:
        save_file({n: p.detach().cpu().contiguous() for n, p in named_params.items()}, str(tmp / "trainable.safetensors"))
        kill_point("ckpt.trainable")
        save_file(_optimizer_tensors(named_params, optimizer), str(tmp / "optimizer.safetensors"))
        kill_point("ckpt.optimizer")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict(), **info}, indent=1))
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint would only take space
        errno_of = getattr(exc, "errno", None) or _errno_in(exc)
        if errno_of in WriteError._HINTS:
            raise WriteError.of(OSError(errno_of, os.strerror(errno_of)),
                                f"writing training checkpoint {final} (the earlier checkpoints are intact)") from exc
        raise
    kill_point("ckpt.state")
    if final.exists():  # moved aside whole first: a kill mid-delete must not leave a half one under its name
        _discard(final)
    os.replace(tmp, final)
    kill_point("ckpt.renamed")
    _prune(run_dir, keep)
    return final


def _errno_in(exc: BaseException) -> int | None:
    """safetensors raises its own error for a failed write; the OS error's text is all it keeps."""
    text = str(exc).lower()
    return next((code for code, words in ((28, "no space left"), (122, "quota exceeded"), (30, "read-only file system"))
                 if words in text), None)


def load_state(path: Path, named_params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Restore everything saved at `path` in place; returns state.json's content."""
    weights = load_file(str(path / "trainable.safetensors"))
    missing = set(named_params) - set(weights)
    if missing:
        raise ValueError(f"{path} lacks trained parameters {sorted(missing)[:5]}: it belongs to another run")
    with torch.no_grad():
        for name, p in named_params.items():
            p.copy_(weights[name].to(p.device))
    moments = load_file(str(path / "optimizer.safetensors"))
    for name, p in named_params.items():
        if f"{name}.exp_avg" in moments:
            optimizer.state[p] = {k: moments[f"{name}.{k}"].to(p.device) if k != "step" else moments[f"{name}.{k}"]
                                  for k in ("step", "exp_avg", "exp_avg_sq")}
    info = json.loads((path / "state.json").read_text())
    scheduler.load_state_dict(info["scheduler"])
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng])
    return info


def _optimizer_tensors(named_params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in named_params.items():
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{name}.{key}"] = value.detach().cpu().contiguous()
    return out


def _prune(run_dir: Path, keep: int) -> None:
    done = sorted(p for p in (run_dir / CHECKPOINTS).glob("step-*") if (p / "state.json").is_file())
    for old in done[:-keep]:
        _discard(old)
    for stale in (run_dir / CHECKPOINTS).glob(".step-*"):  # temporaries of a killed save, or of a killed prune
        shutil.rmtree(stale, ignore_errors=True)


def _discard(checkpoint: Path) -> None:
    """Delete a checkpoint directory: renamed out of the `step-*` names first (one atomic step), so a
    kill while its files are being deleted leaves a hidden temporary, never a half checkpoint to resume from."""
    doomed = checkpoint.with_name(f".{checkpoint.name}-deleting")
    shutil.rmtree(doomed, ignore_errors=True)  # left by an earlier killed delete
    os.replace(checkpoint, doomed)
    kill_point("ckpt.prune")
    shutil.rmtree(doomed, ignore_errors=True)
