"""CoMa warm-up: compression pre-training before contrastive learning (`omnisdk warmup --method coma`).

    base -> N compression tokens appended to every input, trained with the whole model and a small
    decoder head (trainers/coma_head.py) to reconstruct each pair's text from those tokens alone
    -> a checkpoint with pooling "compression" and lineage stage "warmup"

Every training pair with a text side gives one example: its other item is compressed and the text
is reconstructed (text-to-text pairs compress the positive and reconstruct the query); pairs with no
text are skipped. The warm-up runs in one process; its loss is measured on a fixed probe batch (the
first) before and after, and both values go into the lineage.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from omnisdk import checkpoint as ckpt
from omnisdk import compression
from omnisdk.datasets.format import Dataset, TrainExample, load_dataset
from omnisdk.errors import OmniError
from omnisdk.items import Item
from omnisdk.trainers.coma_head import ReconstructionHead
from omnisdk.trainers.contrastive import warmup_cosine
from omnisdk.trainers.data import BatchSchedule, PairPool

log = logging.getLogger(__name__)


class CoMaConfig(BaseModel):
    """Settings of the warm-up; the defaults follow the paper's scripts where they apply (32 tokens,
    learning rate 5e-5, no weight decay, 5% warm-up, cosine decay)."""

    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(compression.DEFAULT_TOKENS, ge=1)
    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    max_grad_norm: float | None = 1.0
    max_target_tokens: int = Field(64, ge=2)
    head_layers: int = Field(1, ge=1)
    seed: int = 0
    precision: Literal["fp32", "bf16"] | None = None  # None: bf16 on CUDA, fp32 on CPU
    log_every: int = Field(10, ge=1)


@dataclass
class WarmupResult:
    steps: int
    final_loss: float
    probe_loss_before: float
    probe_loss_after: float
    seconds: float
    pairs_seen: int
    fingerprint: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "losses"}


def coma_warmup(model_dir: str | Path, data: str | Path | Dataset, out: str | Path,
                overrides: dict[str, Any] | None = None, *, show_progress: bool | None = None,
                cache: Any = None, device: str | None = None) -> WarmupResult:
    """Warm `model_dir` up with CoMa on `data`'s training pairs; write the checkpoint to `out`.

    `cache` is a prepared-input cache (a directory, "default" or a PreparedCache; None decodes each step).
    """
    from omnisdk.model import OmniModel

    out = Path(out)
    if (out / ckpt.MANIFEST).is_file():
        raise OmniError(f"{out} already holds a finished checkpoint; choose another --out or remove it")
    config = _config(overrides)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    from omnisdk.precision import resolve_device

    model = OmniModel.load(model_dir, device=resolve_device(device)).use_cache(cache)
    parent = model.fingerprint
    add_compression_tokens(model, config.tokens, config.seed)
    pool = _reconstruction_pool(dataset, model)
    schedule = BatchSchedule(pool, config.batch_size, config.seed)
    torch.manual_seed(config.seed)
    head = ReconstructionHead(model.hidden_size, config.max_target_tokens, config.head_layers).to(model.device)
    params = [p for p in model.parameters()] + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config))
    probe = schedule.batch(0)
    before = _probe_loss(model, head, probe, config)
    result = _loop(model, head, schedule, optimizer, scheduler, params, config, show_progress)
    result.probe_loss_before, result.probe_loss_after = before, _probe_loss(model, head, probe, config)
    model._fingerprint = None
    result.fingerprint = model.fingerprint
    lineage = ckpt.Lineage(
        stage="warmup", parents=[parent], method="coma", data_hash=dataset.content_hash(),
        settings={**config.model_dump(), "pairs": {m: len(v) for m, v in pool.by_modality.items()},
                  "head": "causal decoder over the compression tokens (dropped after warm-up)"},
        metrics={"final_loss": result.final_loss, "probe_loss_before": before,
                 "probe_loss_after": result.probe_loss_after, "seconds": result.seconds,
                 "pairs_seen": result.pairs_seen, "losses": result.losses})
    model.save(out, lineage=lineage)  # the head is not part of the model, so it is not saved
    return result


def add_compression_tokens(model, count: int, seed: int = 0) -> None:
    """Give `model` `count` compression tokens and switch its pooling to them (kept if already there)."""
    existing = compression.tokens_of(model.backbone)
    if existing is not None and existing.count != count:
        raise OmniError(f"the model already has {existing.count} compression tokens; warm it up with --tokens "
                        f"{existing.count} or start from a model without them")
    if existing is None:
        module = compression.attach(model.backbone, count)
        module.init_from(model.backbone.get_input_embeddings().weight, seed)
    model.spec = model.spec.model_copy(update={"compression_tokens": count, "pooling": "compression"})
    model._fingerprint = None


def _loop(model, head, schedule, optimizer, scheduler, params, config: CoMaConfig, show_progress) -> WarmupResult:
    from tqdm.auto import tqdm

    model.train()
    head.train()
    losses: list[tuple[int, float]] = []
    started, pairs, value = time.perf_counter(), 0, float("nan")
    bar = tqdm(total=config.steps, desc="warmup", unit="step", file=sys.stderr,
               mininterval=0.1 if sys.stderr.isatty() else 30.0, disable=show_progress is False)
    for step in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        batch = schedule.batch(step)
        with _autocast(model, config):
            loss, used = reconstruction_loss(model, head, batch, config.max_target_tokens)
        loss.backward()
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        value, pairs = float(loss.detach()), pairs + used
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            losses.append((step + 1, round(value, 6)))
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        bar.update()
    bar.close()
    model.eval()
    return WarmupResult(steps=config.steps, final_loss=value, probe_loss_before=float("nan"),
                        probe_loss_after=float("nan"), seconds=round(time.perf_counter() - started, 2),
                        pairs_seen=pairs, losses=losses)


def reconstruction_loss(model, head: ReconstructionHead, batch: Sequence[TrainExample],
                        max_tokens: int) -> tuple[torch.Tensor, int]:
    """Mean token loss of reconstructing each pair's text from its other item's compression tokens."""
    sources, texts, roles = [], [], []
    for example in batch:
        split = compressed_and_text(example)
        if split is not None:
            sources.append(split[0])
            texts.append(split[1])
            roles.append(split[2])
    memory, ok = _compressed_states(model, sources, roles)
    if not ok:
        raise OmniError(f"no item of a batch of {len(batch)} pairs could be read; check the training files")
    enc = model.tokenizer([texts[i] for i in ok], add_special_tokens=False, padding=True, truncation=True,
                          max_length=max_tokens, return_tensors="pt").to(model.device)
    words = model.backbone.get_input_embeddings()
    return head(memory, enc["input_ids"], enc["attention_mask"], words), len(ok)


def compressed_and_text(example: TrainExample) -> tuple[Item, str, str] | None:
    """(item to compress, text to reconstruct, the item's role) of a pair, or None when it has no text."""
    query, positive = example.query, example.positive
    if query.modality == "text" and query.text:
        return positive, query.text, "document"
    if positive.modality == "text" and positive.text:
        return query, positive.text, "query"
    return None


def _compressed_states(model, items: Sequence[Item], roles: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
    """(compression hidden states (K, N, H) of the readable items, their positions in `items`)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (item, role) in enumerate(zip(items, roles)):
        if item.modality in model.plugins:
            groups[(item.modality, role)].append(i)
    states, order = [], []
    for (modality, role), indices in groups.items():
        prepared = model.prepare(modality, [items[i] for i in indices], role)
        for local, cause in prepared.errors.items():
            log.warning("warm-up item skipped: %s", cause)
        if not prepared.ok:
            continue
        hidden, _, positions = model.forward_tokens(modality, prepared.batch, role)
        states.append(compression.gather(hidden, positions).float())
        order += [indices[j] for j in prepared.ok]
    if not states:
        return torch.empty(0), []
    return torch.cat(states), order


def _probe_loss(model, head, batch, config: CoMaConfig) -> float:
    model.eval()
    head.eval()
    with torch.no_grad(), _autocast(model, config):
        loss, _ = reconstruction_loss(model, head, batch, config.max_target_tokens)
    return round(float(loss), 6)


def _reconstruction_pool(dataset: Dataset, model) -> PairPool:
    pool = PairPool.from_dataset(dataset, modalities=list(model.plugins))
    kept = {m: [e for e in v if compressed_and_text(e) is not None] for m, v in pool.by_modality.items()}
    kept = {m: v for m, v in kept.items() if v}
    if not kept:
        raise OmniError(f"{dataset.root} has no training pair with a text side; CoMa reconstructs text")
    return PairPool(kept)


def _autocast(model, config: CoMaConfig):
    from omnisdk.precision import default_precision

    if (config.precision or default_precision(model.device)) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)


def _config(overrides: dict[str, Any] | None) -> CoMaConfig:
    from pydantic import ValidationError

    try:
        return CoMaConfig(**(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise OmniError(f"bad warm-up settings: {problems}") from None
