"""Gradient caching (trainers/grad_cache.py): the same parameter gradients as one graph over the whole
batch, dropout replayed per chunk, and a trainer run with every batch feature on."""
from __future__ import annotations

import pytest
import torch

from omnisdk.datasets.format import load_dataset
from omnisdk.trainers.config import TrainConfig
from omnisdk.trainers.contrastive import ContrastiveTrainer
from omnisdk.trainers.data import PairPool
from omnisdk.trainers.embedding import embed_prepared
from media.audio import add_tone_pairs

# hard and cross-modal negatives both on; a batch of 10 in chunks of 3 leaves a short last chunk
SETTINGS = {"batch_size": 10, "hard_negatives": 1, "cross_modal_negatives": 1, "log_every": 1, "steps": 2,
            "quotas": {"image": 1.0, "audio": 1.0}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base model; image pairs (OmniWorld scenes and digits) and audio pairs (tones)."""
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.presets import build_base

    root = tmp_path_factory.mktemp("gradcache")
    data = root / "data"
    make_omniworld(data, domains=("scenes", "digits"))
    add_tone_pairs(data)
    base = root / "base"
    build_base("tiny").save(base)
    return {"root": root, "base": base, "pool": PairPool.from_dataset(load_dataset(data))}


def _trainer(world, tmp_path, **settings) -> ContrastiveTrainer:
    from omnisdk.model import OmniModel

    model = OmniModel.load(world["base"])
    config = TrainConfig(**{**SETTINGS, **settings})
    trainer = ContrastiveTrainer(model, world["pool"], config, tmp_path / f"run-{len(list(tmp_path.iterdir()))}",
                                 show_progress=False)
    trainer._train_mode()
    return trainer


def _grads(trainer: ContrastiveTrainer, number: int = 0, scale: float = 1.0) -> tuple[float, dict[str, torch.Tensor]]:
    for p in trainer.trained.values():
        p.grad = None
    loss, _, _ = trainer._micro_backward(trainer._prepare_micro_batch(number), scale)
    return loss, {n: p.grad.clone() for n, p in trainer.trained.items() if p.grad is not None}


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float, atol: float) -> None:
    assert got.keys() == want.keys() and len(want) > 10
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_parameter_gradients_equal_the_whole_batch_gradients(world, tmp_path):
    plain, cached = _trainer(world, tmp_path), _trainer(world, tmp_path, grad_cache_chunk=3)
    for trainer in (plain, cached):
        trainer.model.eval()  # no dropout: one batch and its chunks then compute the same embeddings
    for number in (0, 1):  # an image batch and an audio one: the micro-batches mix modalities by quota
        loss, want = _grads(plain, number, scale=0.5)
        cached_loss, got = _grads(cached, number, scale=0.5)
        assert cached_loss == pytest.approx(loss, rel=1e-6)
        assert {n for n in want if n.startswith("adapters.audio")} and {n for n in want if n.startswith("backbone")}
        _assert_same(got, want, rtol=1e-4, atol=1e-6)
    # the comparison can fail: another batch's gradients differ from these
    _, other = _grads(plain, 2, scale=0.5)
    assert any(not torch.allclose(other[n], want[n], rtol=1e-3, atol=1e-6) for n in want)


def test_learned_temperature_and_ega_get_the_whole_batch_gradients(world, tmp_path):
    settings = {"learn_temperature": True, "ega": {"factor": 3.0, "rule": "relative"}}
    plain, cached = _trainer(world, tmp_path, **settings), _trainer(world, tmp_path, grad_cache_chunk=4, **settings)
    for trainer in (plain, cached):
        trainer.model.eval()
    _, want = _grads(plain)
    _, got = _grads(cached)
    assert "_log_temperature" in want
    _assert_same(got, want, rtol=1e-4, atol=1e-6)


def _chunked_graph_grads(trainer: ContrastiveTrainer, number: int) -> dict[str, torch.Tensor]:
    """The reference for dropout: every chunk embedded with a graph, in GradCache's order, one backward."""
    for p in trainer.trained.values():
        p.grad = None
    batch, q, p_, n, counts = trainer._prepare_micro_batch(number)
    embedded = []
    for chunks, role in ((q, "query"), (p_, "document"), (n, "document")):
        parts = [embed_prepared(trainer.model, c, role) for c in chunks]
        errors = {}
        start = 0
        for (rows, _, errs) in parts:
            errors.update({start + i: c for i, c in errs.items()})
            start += rows.shape[0]
        embedded.append((torch.cat([r for r, _, _ in parts]), torch.cat([o for _, o, _ in parts]), errors))
    loss, _, _ = trainer._loss(batch, counts, *embedded)
    loss.backward()
    return {name: p.grad.clone() for name, p in trainer.trained.items() if p.grad is not None}


def test_dropout_masks_are_replayed_in_the_second_pass(world, tmp_path):
    cached = _trainer(world, tmp_path, grad_cache_chunk=3, freeze_batchnorm_stats=True)
    dropouts = [m for m in cached.model.backbone.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts and all(m.training for m in dropouts)  # the tiny backbone trains, with dropout on
    torch.manual_seed(7)
    _, got = _grads(cached)
    after_cache = torch.get_rng_state()
    torch.manual_seed(7)
    want = _chunked_graph_grads(cached, 0)
    assert torch.equal(torch.get_rng_state(), after_cache)  # the replay leaves the RNG where one pass would
    _assert_same(got, want, rtol=1e-4, atol=1e-6)
    # without the same masks the gradients differ: dropout really is drawn
    torch.manual_seed(8)
    other = _chunked_graph_grads(cached, 0)
    assert any(not torch.allclose(other[n], want[n], rtol=1e-3, atol=1e-6) for n in want if n.startswith("backbone"))


def test_bf16_gradients_stay_close_to_the_whole_batch(world, tmp_path):
    plain = _trainer(world, tmp_path, precision="bf16")
    cached = _trainer(world, tmp_path, precision="bf16", grad_cache_chunk=3)
    for trainer in (plain, cached):
        trainer.model.eval()
    _, want = _grads(plain)
    _, got = _grads(cached)
    # bf16 products of other shapes round differently: close, not equal
    num = sum(float((got[n] - want[n]).pow(2).sum()) for n in want)
    den = sum(float(want[n].pow(2).sum()) for n in want)
    assert num / den < 1e-3


def test_a_run_with_modality_batches_trains(world, tmp_path):
    trainer = _trainer(world, tmp_path, grad_cache_chunk=4, modality_batches=True, quotas=None, steps=3)
    before = {n: p.detach().clone() for n, p in trainer.trained.items()}
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.final_loss)) and result.pairs_seen == 30
    assert any(not torch.equal(before[n], p) for n, p in trainer.trained.items())


def test_batchnorm_and_dropout_see_what_chunked_forwards_with_a_graph_see():
    """On a module with BatchNorm and dropout: the same gradients and running statistics as running
    each chunk with a graph (BatchNorm statistics updated once per chunk, not twice)."""
    import torch.nn.functional as F

    from omnisdk.trainers.grad_cache import GradCache
    from omnisdk.trainers.info_nce import info_nce

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.3),
                                   torch.nn.Linear(16, 8)).train()

    torch.manual_seed(1)
    queries, positives = torch.randn(9, 6), torch.randn(9, 6)
    chunks = lambda x: list(x.split(4))  # 4, 4, 1: BatchNorm needs more than one row in train mode: pad

    def forward(net):
        return lambda x: (F.normalize(net(torch.cat([x, x]) if len(x) == 1 else x)[:len(x)], dim=-1),
                          torch.ones(len(x), dtype=torch.bool), {})

    reference = build()
    torch.manual_seed(5)
    q = torch.cat([forward(reference)(c)[0] for c in chunks(queries)])
    p = torch.cat([forward(reference)(c)[0] for c in chunks(positives)])
    info_nce(q, p, 0.1).backward()
    rng_after = torch.get_rng_state()

    net = build()
    torch.manual_seed(5)
    cache = GradCache(net, torch.device("cpu"))
    q, _, _ = cache.embed(chunks(queries), forward(net))
    p, _, _ = cache.embed(chunks(positives), forward(net))
    info_nce(q, p, 0.1).backward()
    cache.backward()
    assert torch.equal(torch.get_rng_state(), rng_after)
    for (name, want), got in zip(reference.named_parameters(), net.parameters()):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")
    for (name, want), got in zip(reference.named_buffers(), net.buffers()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=lambda m: f"{name}: {m}")
    assert int(net[1].num_batches_tracked) == 6


def test_across_two_gloo_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    """Each rank caches its chunks' gradients of the global loss (negatives gathered across ranks)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    import torch.nn.functional as F

    from omnisdk.trainers.info_nce import info_nce

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rank0.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29523",
           str(root / "tests" / "ddp_gather_worker.py"), str(out), "--grad-cache"]
    done = subprocess.run(cmd, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(out.read_text())
    torch.manual_seed(0)  # the worker's model and batch, in one process and one graph
    layer = torch.nn.Linear(8, 8)
    inputs = torch.randn(3, 6, 8)
    mask = torch.tensor([True, True, False, True, False, True])
    q, p, h = (F.normalize(layer(x), dim=-1) for x in inputs)
    loss = info_nce(q, p, 0.1, h.unsqueeze(1), mask.unsqueeze(1))
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(np.array(got["grad"]), layer.weight.grad.numpy(), rtol=1e-4, atol=1e-6)
