"""Settings of one contrastive training run; every stage (specialist, recovery, rehearsal, joint) uses it."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LoraSettings(BaseModel):
    """Low-rank adapters on the backbone's attention; merged into the weights when training ends."""

    model_config = ConfigDict(extra="forbid")
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    #: module-name suffixes to adapt; None picks the backbone family's attention projections.
    target_modules: list[str] | None = None


class EgaSettings(BaseModel):
    """Explicit Gradient Amplifier (trainers/ega.py): hard negatives' logit gradients are multiplied by
    1 + (factor - 1) * hardness; the loss value stays plain InfoNCE."""

    model_config = ConfigDict(extra="forbid")
    factor: float = Field(2.0, ge=1.0)
    #: relative: by cosine distance below the positive (within `margin`); topk: the `top_k` most
    #: similar negatives per row; mined: the explicit hard negatives of train.jsonl only.
    rule: Literal["relative", "topk", "mined"] = "relative"
    margin: float = Field(0.1, gt=0)
    top_k: int = Field(1, ge=1)


class TrainConfig(BaseModel):
    """One contrastive run. Steps count optimiser updates; a step sees batch_size x grad_accumulation pairs."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=2)  # in-batch negatives need at least two pairs
    grad_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    #: learning rate of adapter parameters (towers, projectors); None: learning_rate. Freshly
    #: initialised towers need a larger step than a pretrained backbone.
    adapter_learning_rate: float | None = Field(None, gt=0)
    #: plugin -> learning rate of that plugin's adapter, over adapter_learning_rate (a transformer
    #: encoder trained from scratch may want a smaller step than a convolutional tower).
    plugin_learning_rates: dict[str, float] | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float | None = 1.0
    temperature: float = Field(0.05, gt=0)
    learn_temperature: bool = False
    hard_negatives: int = Field(1, ge=0)  # per pair, from train.jsonl; 0 uses in-batch negatives only
    #: per pair, items of other modalities than its positive, drawn from the pool's positives (issue 16:
    #: a mixed index ranks by modality unless training sets modalities against each other); 0: none.
    cross_modal_negatives: int = Field(0, ge=0)
    #: also draw them from the pool's queries (read as documents): a text -> image pair then meets texts
    cross_modal_queries: bool = False
    symmetric: bool = True
    seed: int = 0
    #: fnmatch globs over full parameter names; only matching parameters train. None: the stage decides.
    trainable: list[str] | None = None
    lora: LoraSettings | None = None
    #: hard-negative gradient amplification; None: plain InfoNCE. TOML: ega = {factor = 2.0, rule = "relative"}
    ega: EgaSettings | None = None
    #: with several ranks, every rank's loss sees the whole global batch: the other ranks' positives
    #: and hard negatives are negatives too (embeddings all-gathered; gradients reach each rank's own rows).
    cross_rank_negatives: bool = True
    #: gradient caching (trainers/grad_cache.py): embed a micro-batch in chunks of this many items
    #: per role without a graph, backpropagate the loss to the embeddings, then re-run each chunk
    #: with a graph. Same gradients as the whole batch at one chunk's activation memory, for a
    #: second forward pass. None: one graph for the whole micro-batch.
    grad_cache_chunk: int | None = Field(None, ge=1)
    #: "bf16" runs forward passes under autocast (CPU and CUDA); master weights stay float32.
    #: None: bf16 on CUDA, fp32 on CPU.
    precision: Literal["fp32", "bf16"] | None = None
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    #: pairs of these tasks only (None: all); a specialist sets its modality's tasks.
    tasks: list[str] | None = None
    #: modality -> share of each batch (rehearsal); None draws pairs uniformly from the pool.
    quotas: dict[str, float] | None = None
    #: one modality per batch, modalities taking turns by their quotas (see BatchSchedule).
    modality_batches: bool = False
    log_every: int = Field(10, ge=1)
    #: at a NaN or infinite loss, training stops naming the step, the batch and the last good checkpoint
    #: (kept); N > 0 skips up to N such batches instead (no update for them) before stopping.
    skip_nonfinite_batches: int = Field(0, ge=0)
    #: modules none of whose parameters train (a frozen backbone, a frozen audio encoder) run in eval
    #: mode, as frozen feature extractors usually do: their dropout would only add noise to what the
    #: trained parts learn from. True keeps them in train mode.
    frozen_dropout: bool = False
    #: a modality whose whole path is frozen and in eval mode (text while the backbone is frozen, in
    #: alignment and recovery) is embedded once per item and looked up afterwards (FrozenRows)
    embed_frozen_once: bool = True
    #: BatchNorm layers keep their running statistics (eval-mode normalisation) while their weights
    #: train. Off by default: on the small pipeline's dev split, specialists trained with it fused
    #: worse (image nDCG@10 0.224 vs 0.487), as their weights then adapt to one modality instead.
    freeze_batchnorm_stats: bool = False

    @model_validator(mode="after")
    def _lora_needs_full_backbone_choice(self) -> "TrainConfig":
        if self.lora is not None and self.trainable is not None and not any(p.startswith("backbone") for p in self.trainable):
            raise ValueError("lora adapts the backbone, but trainable excludes every backbone parameter")
        return self
