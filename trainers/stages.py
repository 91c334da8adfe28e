"""The training stages of decouple-fuse-recover, each from a checkpoint directory to a new one.

    align        base -> every modality's pairs at equal quotas; every adapter trains, the backbone is
                 frozen (the shared, aligned starting point a pretrained multimodal model would give)
    specialist   aligned base -> one modality's pairs; backbone + that plugin's adapters train
    recovery     fused -> one modality's pairs; only what the plugin's recovery plan names trains
    rehearsal    recovered -> every modality at a set quota, low learning rate
    joint        aligned base -> all modalities mixed (the multi-task baseline the method is compared with)

Every stage reads its inputs through the prepared-input cache (`cache`: "default", a directory, a
PreparedCache, or None to decode at every step), so each file is decoded once across all stages.

Each writes a complete checkpoint whose lineage names its parent's fingerprint, the stage, the
data hash and the settings, and keeps resumable state under OUT/run/ until it finishes.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from omnisdk import checkpoint as ckpt
from omnisdk.datasets.format import Dataset, load_dataset
from omnisdk.errors import OmniError
from omnisdk.modality import ModalityPlugin, dependencies_of
from omnisdk.trainers.config import TrainConfig
from omnisdk.trainers.contrastive import ContrastiveTrainer, TrainResult
from omnisdk.trainers.data import PairPool
from omnisdk.trainers.distributed import World, barrier, device_for, init_world

RUN_DIR = "run"
#: where prepared inputs are read from: "default", a directory, a PreparedCache, or None (no cache).
CacheSpec = Any


def train_specialist(base: str | Path, plugin: str, data: str | Path | Dataset, out: str | Path,
                     overrides: dict[str, Any] | None = None, *, show_progress: bool | None = None,
        cache: CacheSpec = "default", device: str | None = None) -> TrainResult:
    """Train the `plugin` specialist: backbone and the plugin's (and its dependencies') adapters.

    Settings start from the plugin's `training` defaults; a run killed part-way resumes from `out`.

    Args:
        base: the (aligned) base checkpoint every specialist starts from.
        plugin: the modality to specialise in ("image", "audio", ...).
        data: a dataset directory (or a loaded Dataset) with `train.jsonl` pairs of that modality.
        out: the specialist's checkpoint directory.
        overrides: TrainConfig fields (steps, batch_size, learning_rate, lora, quotas, ...) over the defaults.
        show_progress: a progress bar (None: on a terminal only).
        cache: the prepared-input cache: "default" (the user cache dir or $OMNISDK_CACHE_DIR), a directory,
            or None to decode inputs at every step.
        device: "cpu", "cuda", "cuda:N" or None (CUDA if available; under torchrun, this rank's GPU).

    Returns:
        A TrainResult: the checkpoint directory written, the losses, steps and timings.

    Raises:
        OmniError: the base has no such plugin, or the data no pairs of it.
        pydantic.ValidationError: an override that is not a TrainConfig field, or out of range.
    """
    from omnisdk.model import OmniModel

    world = init_world()
    model = OmniModel.load(base, device=device_for(world, device)).use_cache(cache)
    if plugin not in model.plugins:
        raise OmniError(f"the base model has no '{plugin}' plugin (it has: {', '.join(model.plugins)})")
    config = specialist_config(model.plugins, plugin, overrides)
    dataset = _dataset(data)
    pool = PairPool.from_dataset(dataset, tasks=config.tasks, modalities=[plugin])
    return _run(model, pool, config, out, world, stage="specialist", parent=base, dataset=dataset,
                extra={"plugin": plugin}, show_progress=show_progress)


def specialist_config(plugins: Mapping[str, ModalityPlugin], plugin: str,
                      overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The `plugin` specialist's settings: its plugin's `training` defaults, then the user's `overrides`.

    `TrainingDefaults.lora=True` trains the backbone through low-rank adapters (default LoraSettings);
    an override `lora` (a table of settings, or None for full training) wins.
    """
    defaults = plugins[plugin].training
    return _config(
        {"learning_rate": defaults.learning_rate, "steps": defaults.steps, "batch_size": defaults.batch_size,
         "temperature": defaults.temperature, "warmup_ratio": defaults.warmup_ratio,
         "trainable": ["backbone.*", *[f"adapters.{m}.*" for m in dependencies_of(plugins, plugin)]],
         "lora": {} if defaults.lora else None},
        overrides)


def align(base: str | Path, data: str | Path | Dataset, out: str | Path,
          overrides: dict[str, Any] | None = None, *, show_progress: bool | None = None,
          cache: CacheSpec = "default", device: str | None = None) -> TrainResult:
    """Align every modality with the frozen backbone: all adapters train on all modalities' pairs.

    Batches hold every modality with pairs at an equal share (override with `quotas`), so each
    fresh tower learns to land in the backbone's text space before any specialist diverges from it.

    Args:
        base: the base checkpoint (`omnisdk init`, `OmniModel.from_preset(...).save(...)`).
        data: a dataset directory (or a loaded Dataset) with `train.jsonl` pairs.
        out: the aligned checkpoint directory, the base for the specialists.
        overrides: TrainConfig fields (steps, batch_size, learning_rate, lora, quotas, ...) over the defaults.
        show_progress: a progress bar (None: on a terminal only).
        cache: the prepared-input cache: "default" (the user cache dir or $OMNISDK_CACHE_DIR), a directory,
            or None to decode inputs at every step.
        device: "cpu", "cuda", "cuda:N" or None (CUDA if available; under torchrun, this rank's GPU).

    Returns:
        A TrainResult: the checkpoint directory written, the losses, steps and timings.

    Raises:
        OmniError: a `lora` setting (alignment keeps the backbone frozen), or no pairs to train on.
        pydantic.ValidationError: an override that is not a TrainConfig field, or out of range.
    """
    from omnisdk.model import OmniModel

    world = init_world()
    model = OmniModel.load(base, device=device_for(world, device)).use_cache(cache)
    dataset = _dataset(data)
    adapters = [f"adapters.{m}.*" for m in model.plugins if m != "text"]
    if model.aspect_count:  # AGFF: the aspect tokens and aggregation are prompts, tuned with the adapters
        adapters.append("backbone.aspect_tokens.*")
    config = _config({"learning_rate": 1e-3, "steps": 300, "batch_size": 32, "warmup_ratio": 0.05,
                      "trainable": adapters}, overrides)
    if config.lora is not None:
        raise OmniError("alignment keeps the backbone frozen; remove the lora setting")
    pool = PairPool.from_dataset(dataset, tasks=config.tasks, modalities=[m for m in model.plugins if m != "text"])
    if config.quotas is None:
        config = config.model_copy(update={"quotas": {m: 1.0 for m in pool.modalities}})
    return _run(model, pool, config, out, world, stage="align", parent=base, dataset=dataset, extra={},
                show_progress=show_progress)


def recover(model_dir: str | Path, plugin: str, data: str | Path | Dataset, out: str | Path,
            overrides: dict[str, Any] | None = None, *, show_progress: bool | None = None,
        cache: CacheSpec = "default", device: str | None = None) -> TrainResult:
    """Repair `plugin` after fusion: the recovery plan's parameters train, every other keeps its bits."""
    from omnisdk.model import OmniModel

    world = init_world()
    model = OmniModel.load(model_dir, device=device_for(world, device)).use_cache(cache)
    plan = model.recovery_plan(plugin)
    if plan is None:
        raise OmniError(f"plugin '{plugin}' declares no recovery (its fusion metadata says recovery does not apply)")
    defaults = model.plugins[plugin].training
    config = _config({"learning_rate": plan.learning_rate, "steps": plan.steps, "batch_size": defaults.batch_size,
                      "temperature": defaults.temperature, "trainable": plan.trainable, "warmup_ratio": 0.1}, overrides)
    if config.lora is not None:
        raise OmniError("recovery trains the plan's parameters in full; remove the lora setting")
    dataset = _dataset(data)
    pool = PairPool.from_dataset(dataset, tasks=config.tasks, modalities=[plugin])
    return _run(model, pool, config, out, world, stage="recovery", parent=model_dir, dataset=dataset,
                extra={"plugin": plugin, "plan": plan.model_dump()}, show_progress=show_progress)


def rehearse(model_dir: str | Path, data: str | Path | Dataset, out: str | Path,
             overrides: dict[str, Any] | None = None, *, show_progress: bool | None = None,
        cache: CacheSpec = "default", device: str | None = None) -> TrainResult:
    """Short balanced multi-modal training: each modality with pairs gets an equal share of every batch."""
    from omnisdk.model import OmniModel

    world = init_world()
    model = OmniModel.load(model_dir, device=device_for(world, device)).use_cache(cache)
    dataset = _dataset(data)
    config = _config({"learning_rate": 1e-5, "steps": 100, "batch_size": 32, "warmup_ratio": 0.1}, overrides)
    pool = PairPool.from_dataset(dataset, tasks=config.tasks, modalities=list(model.plugins))
    if config.quotas is None:  # balanced by default: an equal share for every modality with pairs
        config = config.model_copy(update={"quotas": {m: 1.0 for m in pool.modalities}})
    return _run(model, pool, config, out, world, stage="rehearsal", parent=model_dir, dataset=dataset,
                extra={}, show_progress=show_progress)


def train_joint(base: str | Path, data: str | Path | Dataset, out: str | Path,
                overrides: dict[str, Any] | None = None, *, show_progress: bool | None = None,
        cache: CacheSpec = "default", device: str | None = None) -> TrainResult:
    """The multi-task baseline: the base trained on every modality's pairs mixed, everything trainable."""
    from omnisdk.model import OmniModel

    world = init_world()
    model = OmniModel.load(base, device=device_for(world, device)).use_cache(cache)
    dataset = _dataset(data)
    pool = PairPool.from_dataset(dataset, modalities=list(model.plugins))
    config = _config({"learning_rate": 5e-5, "steps": 200, "batch_size": 32}, overrides)
    return _run(model, pool, config, out, world, stage="joint", parent=base, dataset=dataset, extra={},
                show_progress=show_progress)


def _run(model, pool: PairPool, config: TrainConfig, out: str | Path, world: World, *, stage: str,
         parent: str | Path, dataset: Dataset, extra: dict[str, Any], show_progress: bool | None) -> TrainResult:
    out = Path(out)
    if (out / ckpt.MANIFEST).is_file():
        raise OmniError(f"{out} already holds a finished checkpoint; choose another --out or remove it")
    parent_manifest = ckpt.read_manifest(Path(parent))
    trainer = ContrastiveTrainer(model, pool, config, out / RUN_DIR, world=world, show_progress=show_progress)
    result = trainer.train()
    model._fingerprint = None  # the weights changed
    result.fingerprint = model.fingerprint
    lineage = ckpt.Lineage(
        stage=stage, parents=[parent_manifest.fingerprint], method="contrastive", data_hash=dataset.content_hash(),
        settings={**config.model_dump(), **extra, "world_size": world.size,
                  "pairs": {m: len(v) for m, v in pool.by_modality.items()}},
        metrics={"final_loss": result.final_loss, "seconds": result.seconds, "pairs_seen": result.pairs_seen,
                 "skipped_items": result.skipped_items, "losses": result.losses},
    )
    if world.is_main:
        model.save(out, lineage=lineage)
        shutil.rmtree(out / RUN_DIR, ignore_errors=True)  # finished: resumable state is no longer needed
    barrier(world)
    return result


def _config(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> TrainConfig:
    from pydantic import ValidationError

    try:
        return TrainConfig(**{**defaults, **(overrides or {})})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise OmniError(f"bad training settings: {problems}") from None


def _dataset(data: str | Path | Dataset) -> Dataset:
    return data if isinstance(data, Dataset) else load_dataset(data)
