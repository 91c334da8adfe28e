"""The contrastive trainer every stage uses: specialists, recovery, rehearsal and the joint baseline.

One step: for each of `grad_accumulation` micro-batches, embed queries, positives and hard
negatives (grouped by modality), compute symmetric InfoNCE, backpropagate; then average gradients
across ranks, clip, AdamW, advance the warm-up + cosine schedule. Only the parameters the stage
names train; everything else keeps its exact bits. Deterministic on CPU for a given seed, and
resumable: a run killed after its checkpoint at step k and restarted ends with the same weights as
one that never stopped.
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from omnisdk.errors import OmniError
from omnisdk.trainers import state as run_state
from omnisdk.trainers.config import TrainConfig
from omnisdk.precision import default_precision
from omnisdk.trainers.data import BatchSchedule, CrossModalNegatives, PairPool
from omnisdk.trainers.distributed import World, average_gradients, average_scalar, barrier, gather_rows, gradient_scale
from omnisdk.trainers.embedding import FrozenRows, PreparedItems, embed_prepared, prepare_items
from omnisdk.trainers.grad_cache import GradCache, prepare_chunks
from omnisdk.trainers.losses import contrastive_loss
from omnisdk.trainers.prefetch import Prefetcher
from omnisdk.trainers.lora import attach_lora, merge_lora

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    pairs_seen: int
    trainable_parameters: int
    skipped_items: int
    resumed_from: int | None = None
    fingerprint: str = ""  # of the trained weights, on every rank (data-parallel ranks must agree)
    losses: list[tuple[int, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "losses"}


class ContrastiveTrainer:
    """Trains `model` in place on `pool` with `config`; `run_dir` holds resumable checkpoints."""

    def __init__(self, model, pool: PairPool, config: TrainConfig, run_dir: str | Path, *,
                 world: World | None = None, show_progress: bool | None = None):
        self.model, self.pool, self.config = model, pool, config
        self.run_dir = Path(run_dir)
        self.world = world or World()
        # None: a live bar on a terminal, a line every 30 s in a log file; False: silent.
        self.show_progress = show_progress
        torch.manual_seed(config.seed)
        if config.lora is not None:
            attach_lora(model, config.lora)
        self.params = self._select_trainable()
        self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(config.temperature)),
                                                  requires_grad=config.learn_temperature)
        trained = dict(self.params)
        if config.learn_temperature:
            trained["_log_temperature"] = self.log_temperature
        self.trained = trained
        self.frozen_rows: FrozenRows | None = None  # set by train() when some modality's path is frozen
        self.optimizer = torch.optim.AdamW(self._param_groups(trained), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(config))
        self.schedule = BatchSchedule(pool, config.batch_size, config.seed, config.quotas, self.world.size,
                                      by_modality=config.modality_batches)
        self.cross_modal = (CrossModalNegatives(pool, config.cross_modal_negatives, config.seed, config.cross_modal_queries)
                            if config.cross_modal_negatives else None)

    # -- which parameters train ---------------------------------------------------------------------
    def _select_trainable(self) -> dict[str, torch.nn.Parameter]:
        patterns = self.config.trainable or ["*"]
        lora = self.config.lora is not None
        # What plugins keep as it is (a pretrained audio encoder) never trains, whatever `trainable` says.
        frozen = [f"adapters.{m}.{pat}" for m, plugin in self.model.plugins.items() for pat in plugin.frozen()]
        chosen: dict[str, torch.nn.Parameter] = {}
        for name, p in self.model.named_parameters():
            if lora and name.startswith("backbone.") and not name.startswith("backbone.aspect_tokens."):
                keep = "lora_" in name  # peft already marked these; the frozen base weights stay frozen
            else:
                keep = any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
                keep = keep and not any(fnmatch.fnmatchcase(name, pat) for pat in frozen)
            p.requires_grad_(keep)
            if keep:
                chosen[name] = p
        if not chosen:
            raise OmniError(f"no parameter matches trainable={patterns}; parameter names start with "
                            "'backbone.' or 'adapters.<modality>.'")
        return chosen

    def _param_groups(self, trained: dict[str, torch.nn.Parameter]) -> list[dict[str, Any]]:
        """Backbone and temperature at `learning_rate`; adapters at `adapter_learning_rate`, except the
        plugins that `plugin_learning_rates` names, each in its own group."""
        adapter_rate = self.config.adapter_learning_rate
        per_plugin = self.config.plugin_learning_rates or {}
        if adapter_rate is None and not per_plugin:
            return [{"params": list(trained.values())}]
        groups: dict[str, list[torch.nn.Parameter]] = {}
        for name, p in trained.items():
            plugin = name.split(".")[1] if name.startswith("adapters.") else None
            key = plugin if plugin in per_plugin else ("adapters" if plugin else "others")
            groups.setdefault(key, []).append(p)
        rates = {"others": self.config.learning_rate, "adapters": adapter_rate or self.config.learning_rate, **per_plugin}
        return [{"params": groups[k], "lr": rates[k]} for k in sorted(groups, key=lambda k: (k != "others", k))]

    # -- the loop -------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.config
        start_step, resumed = self._resume()
        self._warm_cache()
        losses: list[tuple[int, float]] = list(self._resumed_losses)
        skipped = 0
        self._train_mode()
        if cfg.embed_frozen_once:
            self.frozen_rows = FrozenRows.for_trainer(self.model, [n for n in self.trained if n != "_log_temperature"])
        if self.frozen_rows is not None:
            log.info("embedded once (path frozen): %s", sorted(self.frozen_rows.modalities))
        started = time.perf_counter()
        pairs = 0
        bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0,
                   disable=self.show_progress is False or not self.world.is_main)
        loss_value = float("nan")
        micro_total = cfg.steps * cfg.grad_accumulation
        nonfinite = 0
        with Prefetcher(self._prepare_micro_batch, micro_total) as prefetch:
            for step in range(start_step, cfg.steps):
                self.optimizer.zero_grad(set_to_none=True)
                step_loss, batches = 0.0, []
                for micro in range(cfg.grad_accumulation):
                    scale = gradient_scale(self.world, self._gathers) / cfg.grad_accumulation
                    prepared = prefetch.get(step * cfg.grad_accumulation + micro)
                    batches.append(prepared[0])
                    loss, used, dropped = self._micro_backward(prepared, scale)
                    step_loss += loss / cfg.grad_accumulation
                    pairs += used
                    skipped += dropped
                average_gradients(self.trained.values(), self.world)
                # Every rank averages the same losses, so every rank takes the same branch.
                loss_value = average_scalar(step_loss, self.world)
                if math.isfinite(loss_value):
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(list(self.trained.values()), cfg.max_grad_norm)
                    self.optimizer.step()
                else:  # one NaN update would make every later loss NaN: stop, or skip this batch
                    nonfinite += 1
                    self._refuse_nonfinite(step + 1, loss_value, [ex for b in batches for ex in b], nonfinite)
                self.scheduler.step()  # the schedule stays a function of the step number, skipped or not
                if ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps) and math.isfinite(loss_value):
                    losses.append((step + 1, round(loss_value, 6)))
                rate = pairs * self.world.size / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss_value:.4f}", pairs_s=f"{rate:.1f}", refresh=False)
                bar.update()
                if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                    self._checkpoint(step + 1, losses)
        bar.close()
        if self.model.prepared_cache is not None:
            self.model.prepared_cache.flush()
        self.model.eval()
        merge_lora(self.model)
        return TrainResult(steps=cfg.steps, final_loss=loss_value, seconds=round(time.perf_counter() - started, 2),
                           pairs_seen=pairs * self.world.size, trainable_parameters=sum(p.numel() for p in self.params.values()),
                           skipped_items=skipped, resumed_from=resumed, losses=losses)

    def _train_mode(self) -> None:
        """Train mode, except for modules none of whose parameters train (unless `frozen_dropout`) and,
        with `freeze_batchnorm_stats`, BatchNorm layers."""
        self.model.train()
        if self.config.freeze_batchnorm_stats:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        if self.config.frozen_dropout:
            return
        trained = {id(p) for p in self.trained.values()}
        for module in self.model.modules():
            params = list(module.parameters())
            if params and module.training and not any(id(p) in trained for p in params):
                module.eval()

    def _prepare_micro_batch(self, number: int) -> tuple[list, PreparedItems, PreparedItems, PreparedItems | None, list[int]]:
        """Micro-batch `number`'s pairs, with queries, positives and hard negatives prepared for the
        model, and how many negatives each pair has (its mined ones, then its cross-modal ones)."""
        batch = self.schedule.batch(number, self.world.rank)
        h = self.config.hard_negatives
        per_pair = [ex.negatives[:h] for ex in batch]
        if self.cross_modal is not None:
            per_pair = [own + extra for own, extra in zip(per_pair, self.cross_modal.draw(batch, number, self.world.rank))]
        negatives = [item for items in per_pair for item in items]
        chunk = self.config.grad_cache_chunk
        prepare = (lambda items, role: prepare_chunks(self.model, items, role, chunk)) if chunk else \
            (lambda items, role: prepare_items(self.model, items, role))
        return (batch,
                prepare([ex.query for ex in batch], "query"),
                prepare([ex.positive for ex in batch], "document"),
                prepare(negatives, "document") if negatives else None,
                [len(items) for items in per_pair])

    def _warm_cache(self) -> None:
        """Prepare every item of the pool once, before the first step (no-op without a cache)."""
        if self.model.prepared_cache is None:
            return
        from omnisdk.prepared import warm_cache

        h = self.config.hard_negatives
        items = []
        for examples in self.pool.by_modality.values():
            for ex in examples:
                items.append((ex.query, "query"))
                items.append((ex.positive, "document"))
                items += [(neg, "document") for neg in ex.negatives[:h]]
        if self.cross_modal is not None:  # every item a cross-modal draw can return, as a document
            items += [(item, "document") for item in self.cross_modal.items()]
        show = False if self.show_progress is False or not self.world.is_main else self.show_progress
        counts = warm_cache(self.model, items, show_progress=show)
        log.info("prepared-input cache: %s", counts)

    def _micro_backward(self, prepared, scale: float) -> tuple[float, int, int]:
        """Backpropagate one micro-batch's loss times `scale` into the parameters' `.grad`: in one
        graph, or with `grad_cache_chunk` through gradient caching (trainers/grad_cache.py).
        Returns (loss, pairs used, items skipped)."""
        if not self.config.grad_cache_chunk:
            loss, used, dropped = self._micro_step(prepared)
            (loss * scale).backward()
            return float(loss.detach()), used, dropped
        batch, q_chunks, p_chunks, n_chunks, counts = prepared
        cache = GradCache(self.model, self.model.device, self._autocast)
        query = functools.partial(embed_prepared, self.model, role="query", memo=self.frozen_rows)
        document = functools.partial(embed_prepared, self.model, role="document", memo=self.frozen_rows)
        embedded = (cache.embed(q_chunks, query), cache.embed(p_chunks, document),
                    cache.embed(n_chunks, document) if n_chunks else (None, None, {}))
        loss, used, dropped = self._loss(batch, counts, *embedded)
        (loss * scale).backward()  # into the cached embeddings (and the temperature, AGFF aggregation)
        cache.backward()
        return float(loss.detach()), used, dropped

    def _micro_step(self, prepared) -> tuple[torch.Tensor, int, int]:
        """Loss of one micro-batch; pairs whose query or positive cannot be read are left out."""
        batch, q_items, p_items, n_items, counts = prepared
        with self._autocast():
            memo = self.frozen_rows
            embedded = (embed_prepared(self.model, q_items, "query", memo),
                        embed_prepared(self.model, p_items, "document", memo),
                        embed_prepared(self.model, n_items, "document", memo) if n_items else (None, None, {}))
        return self._loss(batch, counts, *embedded)

    def _loss(self, batch, counts: list[int], q_embedded, p_embedded, n_embedded) -> tuple[torch.Tensor, int, int]:
        """The contrastive loss of embedded queries, positives and negatives, each (rows, ok, errors)."""
        (queries, q_ok, q_err), (positives, p_ok, p_err), (negatives, n_ok, n_err) = q_embedded, p_embedded, n_embedded
        for errors in (q_err, p_err, n_err):
            for cause in errors.values():
                log.warning("training item skipped: %s", cause)
        keep = q_ok & p_ok
        local_kept = int(keep.sum())
        hard, mask = self._hard_negative_tensor(counts, negatives, n_ok, queries.shape[1:])
        if self._gathers:  # every rank's pairs: the other ranks' positives become negatives too
            queries, positives, keep = (gather_rows(t, self.world) for t in (queries, positives, keep))
            if hard is not None:
                hard, mask = gather_rows(hard, self.world), gather_rows(mask, self.world)
        if int(keep.sum()) < 2:
            raise OmniError(f"a batch kept {int(keep.sum())} readable pairs of {len(batch)}; check the training files "
                            f"(causes: {list({**q_err, **p_err}.values())[:3]})")
        if hard is not None:
            hard, mask = hard[keep], mask[keep]
        temperature = self.log_temperature.exp()
        loss = contrastive_loss(self.config, queries[keep], positives[keep], temperature, hard, mask,
                                aspects=self.model.aspect_tokens)
        return loss, local_kept, len(q_err) + len(p_err) + len(n_err)

    @property
    def _gathers(self) -> bool:
        return self.world.size > 1 and self.config.cross_rank_negatives

    def _hard_negative_tensor(self, counts: list[int], negatives, n_ok, row_shape):
        """[pairs, H, dim] negatives and their [pairs, H] mask (False pads a pair with fewer than H).

        Gathering across ranks needs the same shapes everywhere, so a batch without any negative
        still gets an all-masked tensor then."""
        h = self.config.hard_negatives + self.config.cross_modal_negatives
        if h == 0 or (negatives is None and not self._gathers):
            return None, None
        device = self.model.device
        hard = torch.zeros(len(counts), h, *row_shape, device=device)  # a query's row: (D,) or AGFF (K, D)
        mask = torch.zeros(len(counts), h, dtype=torch.bool, device=device)
        if negatives is None:
            return hard, mask
        cursor = 0
        for i, n in enumerate(counts):
            if n:
                hard[i, :n] = negatives[cursor:cursor + n]
                mask[i, :n] = n_ok[cursor:cursor + n]
            cursor += n
        return hard, mask

    def _autocast(self):
        if (self.config.precision or default_precision(self.model.device)) != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)

    def _refuse_nonfinite(self, step: int, value: float, batch: list, count: int) -> None:
        """Raise at a non-finite loss, unless `skip_nonfinite_batches` allows skipping this one (logged)."""
        allowed = self.config.skip_nonfinite_batches
        pairs = "; ".join(f"{ex.query.label()} -> {ex.positive.label()}" for ex in batch[:4])
        pairs += f" (+{len(batch) - 4} more pairs)" if len(batch) > 4 else ""
        if count <= allowed:
            log.warning("step %d: the loss is %s; batch skipped (%d of skip_nonfinite_batches=%d): %s",
                        step, value, count, allowed, pairs)
            return
        latest = run_state.latest_checkpoint(self.run_dir)
        kept = (f"the last good checkpoint, {latest}, is kept and the next run resumes from it" if latest else
                f"no checkpoint was written before it (checkpoint_every={self.config.checkpoint_every})")
        skipped = f" after skipping {allowed} such batches" if allowed else ""
        raise OmniError(f"training stopped at step {step}{skipped}: the loss is {value} on the batch {pairs}; {kept}. "
                        "Lower the learning rate, check those items, or set skip_nonfinite_batches to skip such "
                        "batches")

    # -- checkpoints ----------------------------------------------------------------------------------
    def _checkpoint(self, step: int, losses) -> None:
        if self.world.is_main:
            run_state.save_state(self.run_dir, step, self.trained, self.optimizer, self.scheduler,
                                 {"config_digest": self.config_digest(), "losses": losses}, self.config.keep_checkpoints)
        barrier(self.world)

    def _resume(self) -> tuple[int, int | None]:
        self._resumed_losses: list[tuple[int, float]] = []
        latest = run_state.latest_checkpoint(self.run_dir)
        if latest is None:
            return 0, None
        info = json.loads((latest / "state.json").read_text())
        if info.get("config_digest") != self.config_digest():
            raise OmniError(f"{latest} was written with other training settings; remove {self.run_dir / run_state.CHECKPOINTS} "
                            "to start over, or rerun with the settings it was started with")
        info = run_state.load_state(latest, self.trained, self.optimizer, self.scheduler)
        self._resumed_losses = [tuple(x) for x in info.get("losses", [])]
        log.info("resuming from %s", latest)
        return int(info["step"]), int(info["step"])

    def config_digest(self) -> str:
        # Settings left at their defaults stay out, so a field added later does not orphan older runs.
        # skip_nonfinite_batches too: a run stopped at a NaN loss may be resumed with skipping allowed.
        payload = self.config.model_dump(exclude={"checkpoint_every", "keep_checkpoints", "log_every", "skip_nonfinite_batches"},
                                         exclude_defaults=True)
        payload["world_size"] = self.world.size
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def warmup_cosine(config: TrainConfig):
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0 at the last step."""
    warmup = int(round(config.warmup_ratio * config.steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
