"""LoRA on the backbone through peft, merged back into plain weights before anyone takes task vectors."""
from __future__ import annotations

from torch import nn

from omnisdk.errors import OmniError
from omnisdk.trainers.config import LoraSettings

#: attention projections per backbone family, by the names their modules carry.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "qwen2": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
}


def attach_lora(model, settings: LoraSettings) -> None:
    """Wrap model.backbone in a peft LoRA model; only the LoRA factors of the backbone then train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise OmniError("LoRA training needs peft: pip install 'omnisdk[train]'") from exc
    family = getattr(model.backbone.config, "model_type", "")
    targets = settings.target_modules or DEFAULT_TARGETS.get(family)
    if not targets:
        raise OmniError(f"no default LoRA targets for backbone family '{family}'; set lora.target_modules "
                        f"(known families: {', '.join(DEFAULT_TARGETS)})")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none")
    model.backbone = get_peft_model(model.backbone, config)


def merge_lora(model) -> None:
    """Fold the LoRA factors into the backbone weights and drop the wrapper (no-op without LoRA)."""
    backbone = model.backbone
    if hasattr(backbone, "merge_and_unload"):
        merged: nn.Module = backbone.merge_and_unload()
        model.backbone = merged
