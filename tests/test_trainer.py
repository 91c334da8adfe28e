"""The contrastive trainer: loss, schedule, determinism, resume after a real kill, frozen bits, quotas, LoRA, two processes."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnisdk import checkpoint as ckpt
from omnisdk.datasets.format import load_dataset
from omnisdk.trainers.config import TrainConfig
from omnisdk.trainers.contrastive import warmup_cosine
from omnisdk.trainers.data import BatchSchedule, PairPool, modality_mix, per_batch_counts, turn_order
from omnisdk.trainers.info_nce import info_nce
from omnisdk.trainers.stages import recover, rehearse, train_specialist

ROOT = Path(__file__).resolve().parents[1]
FAST = {"batch_size": 4, "log_every": 1, "hard_negatives": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_trainer_data):
    """A tiny base model and a dataset with image pairs (OmniWorld scenes and digits) and audio pairs (tones)."""
    return make_trainer_data(tmp_path_factory.mktemp("trainer"))


def test_info_nce_matches_a_hand_computed_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # Row 0: logits (1, 0.6)/0.5 = (2, 1.2): -log(e^2/(e^2+e^1.2)) = log(1+e^-0.8) = 0.371101
    # Row 1: logits (0, 0.8)/0.5 = (0, 1.6): -log(e^1.6/(1+e^1.6)) = log(1+e^-1.6) = 0.183901
    # Columns (item -> query): col 0 (2, 0): log(1+e^-2) = 0.126928; col 1 (1.2, 1.6): log(1+e^-0.4) = 0.513015
    expected_q = (0.371101 + 0.183901) / 2
    expected_p = (0.126928 + 0.513015) / 2
    assert info_nce(q, p, 0.5, symmetric=False).item() == pytest.approx(expected_q, abs=1e-5)
    assert info_nce(q, p, 0.5).item() == pytest.approx((expected_q + expected_p) / 2, abs=1e-5)
    # A hard negative identical to the positive doubles that term: row 0 becomes log(1 + 1 + e^-0.8)... in softmax form.
    hard = torch.tensor([[[1.0, 0.0]], [[0.0, -1.0]]])
    row0 = -math.log(math.e ** 2 / (math.e ** 2 + math.e ** 1.2 + math.e ** 2))
    row1 = -math.log(math.e ** 1.6 / (1 + math.e ** 1.6 + math.e ** -2))
    got = info_nce(q, p, 0.5, hard, torch.ones(2, 1, dtype=torch.bool), symmetric=False).item()
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-5)
    masked = info_nce(q, p, 0.5, hard, torch.zeros(2, 1, dtype=torch.bool), symmetric=False).item()
    assert masked == pytest.approx(expected_q, abs=1e-5)


def test_warmup_then_cosine_schedule():
    factor = warmup_cosine(TrainConfig(steps=10, warmup_ratio=0.2))
    values = [factor(s) for s in range(10)]
    assert values[0] == pytest.approx(1 / 3) and values[1] == pytest.approx(2 / 3) and values[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))  # non-increasing after warm-up
    assert factor(10) == pytest.approx(0.0, abs=1e-12)


def test_batches_are_a_pure_function_of_seed_and_number_and_ranks_are_disjoint(world):
    pool = PairPool.from_dataset(load_dataset(world["data"]), modalities=["image"])
    one = BatchSchedule(pool, 8, seed=0)
    again = BatchSchedule(pool, 8, seed=0)
    assert [id(x) for x in one.batch(5)] == [id(x) for x in again.batch(5)]
    two = BatchSchedule(pool, 4, seed=0, world_size=2)
    a, b = two.batch(3, rank=0), two.batch(3, rank=1)
    assert not {id(x) for x in a} & {id(x) for x in b}
    epoch = [id(x) for n in range(len(pool) // 4) for x in BatchSchedule(pool, 4, seed=1).batch(n)]
    assert len(set(epoch)) == len(epoch)  # one epoch visits each pair once


def test_quotas_fix_each_modality_share_of_every_batch(world):
    pool = PairPool.from_dataset(load_dataset(world["data"]))
    assert per_batch_counts({"image": 1, "audio": 1}, 8) == {"audio": 4, "image": 4}
    # 6 x 3/4 = 4.5 and 6 x 1/4 = 1.5: floors 4 + 1, the spare pair goes to the tied remainder first by name.
    assert per_batch_counts({"image": 3, "audio": 1}, 6) == {"audio": 2, "image": 4}
    schedule = BatchSchedule(pool, 8, seed=0, quotas={"image": 1.0, "audio": 1.0})
    for number in range(12):  # audio has 8 pairs, image 100+: quotas hold whatever the pool sizes
        assert modality_mix(schedule.batch(number)) == {"image": 4, "audio": 4}
    with pytest.raises(Exception, match="no training pairs: \\['video'\\]"):
        BatchSchedule(pool, 8, seed=0, quotas={"video": 1.0})


def test_modality_batches_hold_one_modality_and_take_turns_by_quota(world):
    pool = PairPool.from_dataset(load_dataset(world["data"]))
    assert turn_order({"image": 1.0, "audio": 1.0}) == ["audio", "image"]
    assert sorted(turn_order({"image": 2.0, "audio": 1.0}, length=6)) == ["audio"] * 2 + ["image"] * 4
    schedule = BatchSchedule(pool, 4, seed=0, by_modality=True)
    mixes = [modality_mix(schedule.batch(n)) for n in range(8)]
    assert mixes == [{"audio": 4}, {"image": 4}] * 4
    # Each modality's own stream goes on across its turns: the first two audio turns are one epoch of 8 pairs.
    audio = [id(ex) for n in (0, 2) for ex in schedule.batch(n)]
    assert sorted(audio) == sorted(id(ex) for ex in pool.by_modality["audio"])
    # Ranks take consecutive turns of one global order.
    two = BatchSchedule(pool, 4, seed=0, world_size=2, by_modality=True)
    assert [id(x) for x in two.batch(0, 0) + two.batch(0, 1)] == [id(x) for x in schedule.batch(0) + schedule.batch(1)]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / ckpt.WEIGHTS))


def test_specialist_trains_backbone_and_its_adapter_only_and_is_deterministic(world, tmp_path):
    settings = {**FAST, "steps": 3}
    train_specialist(world["base"], "image", world["data"], tmp_path / "a", settings)
    train_specialist(world["base"], "image", world["data"], tmp_path / "b", settings)
    base, a, b = _weights(world["base"]), _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same bits
    changed = {k for k in a if not torch.equal(a[k], base[k])}
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("adapters.image.") for k in changed)
    assert not {k for k in changed if k.startswith(("adapters.audio.", "adapters.video.", "adapters.document."))}
    manifest = ckpt.read_manifest(tmp_path / "a")
    assert manifest.lineage.stage == "specialist" and manifest.lineage.parents == [ckpt.read_manifest(world["base"]).fingerprint]
    assert manifest.lineage.settings["plugin"] == "image" and manifest.lineage.data_hash
    assert not (tmp_path / "a" / "run").exists()


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(world, tmp_path):
    settings = {**FAST, "steps": 40, "checkpoint_every": 2}
    script = (f"from omnisdk.trainers.stages import train_specialist\n"
              f"train_specialist({str(world['base'])!r}, 'image', {str(world['data'])!r}, {str(tmp_path / 'killed')!r}, {settings!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "run" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not any(checkpoints.glob("step-00000[6-9]")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / ckpt.MANIFEST).exists(), "the run finished before it could be killed"
    result = train_specialist(world["base"], "image", world["data"], tmp_path / "killed", settings)
    assert result.resumed_from is not None and result.resumed_from >= 6
    train_specialist(world["base"], "image", world["data"], tmp_path / "straight", settings)
    resumed, straight = _weights(tmp_path / "killed"), _weights(tmp_path / "straight")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_recovery_changes_the_projector_only_and_every_other_bit_stays(world, tmp_path):
    recover(world["base"], "audio", world["data"], tmp_path / "rec", {**FAST, "steps": 3})
    before, after = _weights(world["base"]), _weights(tmp_path / "rec")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("adapters.audio.projector.") for k in changed)
    assert ckpt.read_manifest(tmp_path / "rec").lineage.stage == "recovery"


def test_rehearsal_draws_every_modality_and_keeps_training_everything(world, tmp_path):
    rehearse(world["base"], world["data"], tmp_path / "reh", {**FAST, "steps": 2})
    lineage = ckpt.read_manifest(tmp_path / "reh").lineage
    assert lineage.settings["quotas"] == {"audio": 1.0, "image": 1.0}
    assert set(lineage.settings["pairs"]) == {"audio", "image"}


def test_lora_is_merged_into_plain_backbone_weights(world, tmp_path):
    settings = {**FAST, "steps": 2, "lora": {"rank": 2, "alpha": 4}, "learning_rate": 1e-2}
    train_specialist(world["base"], "image", world["data"], tmp_path / "lora", settings)
    base, tuned = _weights(world["base"]), _weights(tmp_path / "lora")
    assert set(tuned) == set(base)  # no lora_A / base_model.model names left behind
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert any(k.startswith("backbone.") and ("query" in k or "value" in k) for k in changed)
    assert not any(k.startswith("backbone.") and "key" in k for k in changed)  # only the LoRA targets moved
    from omnisdk.model import OmniModel

    assert np.isfinite(OmniModel.load(tmp_path / "lora").encode(["a red circle"])).all()


def test_two_gloo_processes_end_with_identical_weights(world, tmp_path):
    worker = ROOT / "tests" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", str(worker),
           str(world["base"]), str(world["data"]), str(tmp_path / "ddp")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    prints = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert prints[0]["fingerprint"] == prints[1]["fingerprint"]
    assert prints[0]["fingerprint"] != ckpt.read_manifest(world["base"]).fingerprint
    assert ckpt.read_manifest(tmp_path / "ddp").lineage.settings["world_size"] == 2


def test_frozen_modules_train_in_eval_mode_unless_asked(world, tmp_path):
    from omnisdk.model import OmniModel
    from omnisdk.trainers.contrastive import ContrastiveTrainer

    pool = PairPool.from_dataset(load_dataset(world["data"]), modalities=["image"])
    modes = {}
    for keep_dropout in (False, True):
        model = OmniModel.load(world["base"])
        config = TrainConfig(**FAST, steps=1, trainable=["adapters.image.*"], frozen_dropout=keep_dropout)
        trainer = ContrastiveTrainer(model, pool, config, tmp_path / f"run-{keep_dropout}", show_progress=False)
        trainer._train_mode()
        modes[keep_dropout] = (model.backbone.training, model.adapters["image"].training,
                               model.adapters["audio"].training)
    # frozen: the backbone and the untouched audio adapter stop dropping out; the trained image adapter trains
    assert modes[False] == (False, True, False)
    assert modes[True] == (True, True, True)


def test_negatives_across_two_gloo_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    import torch.nn.functional as F

    out = tmp_path / "rank0.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
           str(ROOT / "tests" / "ddp_gather_worker.py"), str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(out.read_text())

    torch.manual_seed(0)  # the worker's model and batch, in one process
    layer = torch.nn.Linear(8, 8)
    inputs = torch.randn(3, 6, 8)
    mask = torch.tensor([True, True, False, True, False, True])
    q, p, h = (F.normalize(layer(x), dim=-1) for x in inputs)
    loss = info_nce(q, p, 0.1, h.unsqueeze(1), mask.unsqueeze(1))
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(np.array(got["grad"]), layer.weight.grad.numpy(), rtol=1e-4, atol=1e-6)
    # a rank alone (its own three pairs) would see another loss: the gather matters
    local = info_nce(q[:3], p[:3], 0.1, h[:3].unsqueeze(1), mask[:3].unsqueeze(1))
    assert abs(local.item() - loss.item()) > 1e-3


def test_plugin_learning_rates_give_a_plugin_its_own_step(world, tmp_path):
    from omnisdk.model import OmniModel
    from omnisdk.trainers.contrastive import ContrastiveTrainer

    pool = PairPool.from_dataset(load_dataset(world["data"]), modalities=["image", "audio"])
    model = OmniModel.load(world["base"])
    config = TrainConfig(**FAST, steps=1, learning_rate=1e-5, adapter_learning_rate=1e-3,
                         plugin_learning_rates={"audio": 2e-4})
    trainer = ContrastiveTrainer(model, pool, config, tmp_path / "run", show_progress=False)
    rate_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    rates = {prefix: {rate_of[id(p)] for n, p in named.items() if n.startswith(prefix)}
             for prefix in ("backbone.", "adapters.image.", "adapters.audio.")}
    assert rates == {"backbone.": {1e-5}, "adapters.image.": {1e-3}, "adapters.audio.": {2e-4}}


def test_freeze_batchnorm_stats_keeps_a_towers_statistics_while_its_weights_train(world, tmp_path):
    # A convolutional tower shared by images, frames and pages: with the option, a specialist trains
    # its weights under the base's normalisation statistics.
    from omnisdk.presets import build_base

    base = tmp_path / "bn-base"
    build_base("tiny", modalities=["text", "image"], overrides={"image": {"tower": "resnet10t", "tower_kwargs": {},
                                                                        "image_size": 32, "token_grid": 1}}).save(base)
    train_specialist(base, "image", world["data"], tmp_path / "spec", {**FAST, "steps": 2, "freeze_batchnorm_stats": True})
    before, after = _weights(base), _weights(tmp_path / "spec")
    stats = [k for k in before if "running_mean" in k or "running_var" in k]
    weights = [k for k in before if k.startswith("adapters.image.tower.") and k.endswith(".weight")]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in weights)
    # by default (and in the joint stage) they are re-estimated
    train_specialist(base, "image", world["data"], tmp_path / "default", {**FAST, "steps": 2})
    assert any(not torch.equal(before[k], _weights(tmp_path / "default")[k]) for k in stats)


def _stopped(world, out: Path, settings: dict) -> tuple[int, str]:
    from omnisdk.errors import OmniError

    with pytest.raises(OmniError, match="training stopped at step") as caught:
        train_specialist(world["base"], "image", world["data"], out, settings, show_progress=False)
    message = str(caught.value)
    assert "\n" not in message
    return int(message.split("training stopped at step ")[1].split(maxsplit=1)[0].rstrip(":")), message


def test_a_diverging_run_stops_at_its_first_non_finite_loss_and_keeps_the_last_good_checkpoint(world, tmp_path):
    from omnisdk.trainers import state as run_state

    # A learning rate of 1e30: the first update makes weights of 1e30, whose products overflow float32.
    settings = {**FAST, "steps": 6, "checkpoint_every": 1, "learning_rate": 1e30}
    step, message = _stopped(world, tmp_path / "nan", settings)
    last_good = run_state.checkpoint_dir(tmp_path / "nan" / "run", step - 1)
    assert 1 < step <= 6 and str(last_good) in message, message
    assert ("the loss is nan" in message or "the loss is inf" in message) and ".png" in message  # items named
    assert run_state.latest_checkpoint(tmp_path / "nan" / "run") == last_good  # nothing after it was saved
    saved = json.loads((last_good / "state.json").read_text())
    assert saved["step"] == step - 1 and all(math.isfinite(loss) for _, loss in saved["losses"])
    assert all(torch.isfinite(t).all() for t in load_file(str(last_good / "trainable.safetensors")).values())
    assert not (tmp_path / "nan" / ckpt.MANIFEST).exists()
    # Rerun with skipping allowed: it resumes from the kept checkpoint (the settings' digest ignores the
    # allowance), skips two batches whose loss is still NaN, and stops at the third, saying so.
    skipped, message = _stopped(world, tmp_path / "nan", {**settings, "skip_nonfinite_batches": 2})
    assert skipped == step + 2 and "after skipping 2 such batches" in message, message
