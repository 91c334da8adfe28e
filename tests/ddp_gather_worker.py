"""Run by torch.distributed.run in test_trainer: each rank embeds its half of a batch, the loss sees the
global batch through gather_rows, and rank 0 writes the loss and the averaged gradient. With
--grad-cache each rank embeds its rows in chunks through GradCache."""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from omnisdk.trainers.grad_cache import GradCache
from omnisdk.trainers.distributed import average_gradients, gather_rows, gradient_scale, init_world
from omnisdk.trainers.info_nce import info_nce

world = init_world()
torch.manual_seed(0)
layer = torch.nn.Linear(8, 8)
inputs = torch.randn(3, 6, 8)  # queries, positives, hard negatives for 6 pairs: 3 per rank
mask = torch.tensor([True, True, False, True, False, True])
rows = slice(3 * world.rank, 3 * world.rank + 3)
cache = GradCache(layer, torch.device("cpu")) if "--grad-cache" in sys.argv else None
if cache is None:
    q, p, h = (F.normalize(layer(x[rows]), dim=-1) for x in inputs)
else:  # chunks of 2 and 1 rows, embedded without a graph; the graph comes after the loss
    embed = lambda x: (F.normalize(layer(x), dim=-1), torch.ones(len(x), dtype=torch.bool), {})
    q, p, h = (cache.embed(x[rows].split(2), embed)[0] for x in inputs)
q, p, h, m = (gather_rows(t, world) for t in (q, p, h.unsqueeze(1), mask[rows].unsqueeze(1)))
loss = info_nce(q, p, 0.1, h, m)
(loss * gradient_scale(world, gathered=True)).backward()
if cache is not None:
    cache.backward()
average_gradients(layer.parameters(), world)
if world.rank == 0:
    Path(sys.argv[1]).write_text(json.dumps({"loss": loss.item(), "grad": layer.weight.grad.tolist()}))
