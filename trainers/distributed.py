"""Data parallelism across processes (torchrun or accelerate launch), CPU (gloo) or CUDA (nccl).

Gradients are averaged with one all-reduce per parameter after backward: every rank then applies
the same update and the weights stay identical without wrapping the model in DDP (whose forward
hook the model's per-modality entry points would bypass).

Negatives across ranks: `gather_rows` gives every rank the whole global batch of embeddings, its own
rows keeping their graph, so each rank's loss is the loss of the global batch. Each rank's backward
then yields the global loss's gradient through its own rows only; summing those over ranks gives
the full gradient, which is why the trainer scales its loss by the world size before the averaging
all-reduce (`gradient_scale`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """Join the process group the launcher set up (WORLD_SIZE > 1 in the environment); else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank)


def device_for(world: World, requested: str | None = None) -> torch.device:
    """This rank's device: `requested` (auto, cpu, cuda; see omnisdk.precision), CUDA ranks on their local GPU."""
    from omnisdk.precision import resolve_device

    device = resolve_device(requested)
    return torch.device("cuda", world.local_rank) if device.type == "cuda" else device


def average_gradients(parameters, world: World) -> None:
    if world.size <= 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world.size


def average_scalar(value: float, world: World) -> float:
    if world.size <= 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world.size


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def gather_rows(rows: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's `rows` concatenated in rank order (same shape on every rank); only this rank's
    own rows carry gradients. Boolean masks travel as uint8 (not every backend gathers bool)."""
    if world.size <= 1:
        return rows
    payload = rows.detach().to(torch.uint8) if rows.dtype == torch.bool else rows.detach()
    parts = [torch.empty_like(payload) for _ in range(world.size)]
    dist.all_gather(parts, payload.contiguous())
    parts = [p.bool() for p in parts] if rows.dtype == torch.bool else parts
    parts[world.rank] = rows
    return torch.cat(parts)


def gradient_scale(world: World, gathered: bool) -> float:
    """What a rank multiplies its loss by so that averaged gradients are the global batch's gradient."""
    return float(world.size) if gathered and world.size > 1 else 1.0
