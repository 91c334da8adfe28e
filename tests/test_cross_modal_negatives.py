"""Cross-modal hard negatives (issue 16): drawn from other modalities, deterministic, off by default."""
from __future__ import annotations

import pytest
import torch

from omnisdk import checkpoint as ckpt
from omnisdk.datasets.format import load_dataset
from omnisdk.trainers.config import TrainConfig
from omnisdk.trainers.contrastive import ContrastiveTrainer
from omnisdk.trainers.data import BatchSchedule, CrossModalNegatives, PairPool
from omnisdk.trainers.stages import align, rehearse, train_joint

FAST = {"batch_size": 4, "log_every": 1, "hard_negatives": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_trainer_data):
    """A tiny base model; image pairs (OmniWorld scenes and digits) and audio pairs (tones)."""
    world = make_trainer_data(tmp_path_factory.mktemp("xmodal"))
    return {**world, "pool": PairPool.from_dataset(load_dataset(world["data"]))}


def _keys(items):
    return [(i.modality, i.text, str(i.path), repr(i.locator)) for i in items]


def test_draws_items_of_other_modalities_only_and_never_the_pairs_own(world):
    pool = world["pool"]
    draws = CrossModalNegatives(pool, 3, seed=0)
    batch = BatchSchedule(pool, 8, seed=0, quotas={"image": 1.0, "audio": 1.0}).batch(2)
    drawn = draws.draw(batch, 2)
    assert len(drawn) == len(batch) and all(len(d) == 3 for d in drawn)
    for ex, negatives in zip(batch, drawn):
        assert {n.modality for n in negatives} <= {"image", "audio"} - {ex.positive.modality}
        assert len(set(_keys(negatives))) == 3  # no repeats
    # only the pool's positives by default; its queries (texts) too when asked
    assert {i.modality for i in draws.items()} == {"image", "audio"}
    with_queries = CrossModalNegatives(pool, 3, seed=0, queries=True)
    assert {i.modality for i in with_queries.items()} == {"image", "audio", "text"}
    for ex, negatives in zip(batch, with_queries.draw(batch, 2)):
        assert ex.query.text not in {n.text for n in negatives}  # the pair's own query is never its negative


def test_draws_are_a_pure_function_of_seed_number_and_rank(world):
    pool = world["pool"]
    batch = BatchSchedule(pool, 8, seed=0, quotas={"image": 1.0, "audio": 1.0}).batch(0)
    one, again = CrossModalNegatives(pool, 2, seed=0), CrossModalNegatives(pool, 2, seed=0)
    assert [_keys(d) for d in one.draw(batch, 5)] == [_keys(d) for d in again.draw(batch, 5)]
    assert [_keys(d) for d in one.draw(batch, 5)] != [_keys(d) for d in one.draw(batch, 6)]
    assert [_keys(d) for d in one.draw(batch, 5)] != [_keys(d) for d in one.draw(batch, 5, rank=1)]
    assert [_keys(d) for d in one.draw(batch, 5)] != [_keys(d) for d in CrossModalNegatives(pool, 2, seed=1).draw(batch, 5)]


def _trainer(world, tmp_path, **settings):
    from omnisdk.model import OmniModel

    model = OmniModel.load(world["base"]).use_cache(tmp_path / "cache")
    config = TrainConfig(**{**FAST, "steps": 2, "quotas": {"image": 1.0, "audio": 1.0}, **settings})
    return ContrastiveTrainer(model, world["pool"], config, tmp_path / "run", show_progress=False)


def test_off_by_default_micro_batches_hold_only_the_mined_negatives(world, tmp_path):
    default, zero = _trainer(world, tmp_path), _trainer(world, tmp_path, cross_modal_negatives=0)
    assert default.cross_modal is None and zero.cross_modal is None
    for number in range(3):
        batch, _, _, negatives, counts = default._prepare_micro_batch(number)
        mined = [n for ex in batch for n in ex.negatives[:1]]
        assert counts == [len(ex.negatives[:1]) for ex in batch]
        assert negatives.count == len(mined)
        again = zero._prepare_micro_batch(number)
        assert again[4] == counts and [id(x) for x in again[0]] == [id(x) for x in batch]


def test_a_run_with_cross_modal_negatives_trains_from_a_warmed_cache(world, tmp_path):
    trainer = _trainer(world, tmp_path, cross_modal_negatives=2)
    batch, _, _, _, counts = trainer._prepare_micro_batch(0)
    assert counts == [len(ex.negatives[:1]) + 2 for ex in batch]
    trainer._warm_cache()
    warmed = trainer.model.prepared_cache.stats.misses
    before = {n: p.detach().clone() for n, p in trainer.trained.items()}
    result = trainer.train()
    assert trainer.model.prepared_cache.stats.misses == warmed  # every negative drawn was prepared up front
    assert torch.isfinite(torch.tensor(result.final_loss))
    assert any(not torch.equal(before[n], p) for n, p in trainer.trained.items())


def _fingerprint(stage, world, out, settings):
    stage(world["base"], world["data"], out, {**FAST, "steps": 2, **settings}, show_progress=False, cache=None)
    return ckpt.read_manifest(out).fingerprint, ckpt.read_manifest(out).lineage


@pytest.mark.parametrize("stage", [rehearse, train_joint, align])
def test_rehearsal_joint_and_align_take_the_setting(world, tmp_path, stage):
    plain, _ = _fingerprint(stage, world, tmp_path / "plain", {})
    zero, _ = _fingerprint(stage, world, tmp_path / "zero", {"cross_modal_negatives": 0})
    mixed, lineage = _fingerprint(stage, world, tmp_path / "mixed", {"cross_modal_negatives": 2})
    assert plain == zero  # off: the same weights, bit for bit
    assert mixed != plain and lineage.settings["cross_modal_negatives"] == 2
