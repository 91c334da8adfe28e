"""Gradient caching (GradCache) for contrastive batches larger than activation memory allows.

A contrastive loss couples every row of a batch, so plain gradient accumulation cannot split it:
the loss of micro-batch 1 needs the embeddings of micro-batch 2. GradCache splits the *graph*
instead (Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", arXiv 2101.06983):

1. embed every chunk of `chunk` items without a graph, remembering each chunk's RNG state;
2. compute the loss on the whole batch of (detached) embeddings and backpropagate it to them:
   the embeddings' gradients, one small (N, D) tensor per role, are the cache;
3. re-run each chunk with a graph from its remembered RNG state (same dropout masks, so the
   same embeddings as step 1) and backpropagate the cached gradients through it.

Peak activation memory is then one chunk's, whatever the batch size, at the price of a second
forward pass. The parameters' gradients equal those of the plain batch, since by the chain rule
dL/dtheta = sum over rows of (dL/de_row) . (de_row/dtheta), and step 3 computes exactly these terms.

What a chunk cannot see: BatchNorm in train mode normalises a chunk by its own statistics (as
gradient accumulation does), so with trained BatchNorm layers the gradients are those of chunked
normalisation; their running statistics are updated once per chunk, in step 3 only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Sequence

import torch

from omnisdk.items import Item
from omnisdk.trainers.embedding import PreparedItems, prepare_items


def prepare_chunks(model, items: Sequence[Item], role: str | None, chunk: int) -> list[PreparedItems]:
    """`items` prepared in consecutive chunks of at most `chunk` (each padded to its own longest row)."""
    return [prepare_items(model, items[start:start + chunk], role) for start in range(0, len(items), chunk)]


class RngState:
    """The CPU generator's state and, on CUDA, the model's device generator's: what dropout draws from."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


Forward = Callable[[Any], "tuple[torch.Tensor, torch.Tensor, dict[int, str]]"]


@dataclass
class _Chunk:
    inputs: Any
    forward: Forward
    rng: RngState
    start: int
    stop: int


class GradCache:
    """One micro-batch's cache: `embed` each role's chunks (step 1), compute and backpropagate the
    loss on the returned leaves (step 2, the caller's), then `backward` (step 3).

    `forward(chunk)` embeds one chunk: (rows, ok mask, row -> cause), as `embed_prepared` does."""

    def __init__(self, module: torch.nn.Module, device: torch.device,
                 autocast: Callable[[], ContextManager] = contextlib.nullcontext):
        self.device, self.autocast = device, autocast
        self._leaves: list[tuple[torch.Tensor, list[_Chunk]]] = []
        # Step 1 runs the model in train mode too; its BatchNorm updates are undone so that only
        # step 3's count (an update per chunk, as gradient accumulation would make).
        self._norm_buffers = _batchnorm_buffers(module)

    def embed(self, chunks: Sequence[Any], forward: Forward) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
        """The chunks' rows concatenated, computed without a graph: (a leaf that collects the loss's
        gradient, ok mask, position -> cause)."""
        rows, oks, errors, records = [], [], {}, []
        start = 0
        with torch.no_grad(), self.autocast():
            for inputs in chunks:
                rng = RngState(self.device)
                out, ok, errs = forward(inputs)
                rows.append(out)
                oks.append(ok)
                errors.update({start + i: cause for i, cause in errs.items()})
                records.append(_Chunk(inputs, forward, rng, start, start + out.shape[0]))
                start += out.shape[0]
        leaf = torch.cat(rows).requires_grad_(True)
        self._leaves.append((leaf, records))
        return leaf, torch.cat(oks), errors

    def backward(self) -> None:
        """Re-run every chunk with a graph, from its own RNG state, and push the cached gradients
        through it into the parameters' `.grad`. The RNG ends where step 1 left it."""
        for buffer, saved in self._norm_buffers:
            buffer.copy_(saved)
        after = RngState(self.device)
        for leaf, records in self._leaves:
            if leaf.grad is None:  # the loss did not use these rows
                continue
            for chunk in records:
                chunk.rng.restore()
                with self.autocast():
                    rows, _, _ = chunk.forward(chunk.inputs)
                if rows.requires_grad:  # a chunk whose every item failed has zero rows and no graph
                    rows.backward(leaf.grad[chunk.start:chunk.stop])
        after.restore()
        self._leaves.clear()


def _batchnorm_buffers(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of every BatchNorm layer that updates running statistics in this mode."""
    saved = []
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training and module.track_running_stats:
            saved += [(b, b.detach().clone()) for b in module.buffers() if b is not None]
    return saved
