"""Vision-language backbones (Qwen2-VL, Qwen2.5-VL): their vision tokens and M-RoPE positions.

Such a backbone is the whole transformers `*VLModel`: the language model and its own vision tower
(`backbone.visual`), so the tower's weights are backbone weights and fusion merges them as shared.
The visual plugins hand pixels to that tower (omnisdk.plugins.image_vlm) and the merged patch
embeddings stand where the model's `<|image_pad|>` placeholders would, between `<|vision_start|>`
and `<|vision_end|>`. Positions are the model's own multimodal RoPE, from its `get_rope_index`
given which token is text and which image, and each image's patch grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from omnisdk.errors import CheckpointError

#: model types whose forward is "language model on inputs_embeds with 3D (t, h, w) positions".
SUPPORTED = ("qwen2_vl", "qwen2_5_vl")
#: get_rope_index's token types.
TEXT, IMAGE, VIDEO = 0, 1, 2


def is_vision_language(config: Any) -> bool:
    """A config with a vision tower of its own (a Qwen-VL, LLaVA, ...), not a vision-only model."""
    return getattr(config, "vision_config", None) is not None and getattr(config, "text_config", None) is not None


def check_supported(config: Any, source: Any) -> None:
    """Refuse a vision-language model whose forward omnisdk does not reproduce, before its weights load."""
    if config.model_type not in SUPPORTED:
        raise CheckpointError(
            f"the backbone '{source}' is a vision-language model ({config.model_type}); omnisdk supports "
            f"{', '.join(SUPPORTED)} as a vision-language backbone. Pass one of those, or a text model as --backbone "
            "with a vision tower such as openai/clip-vit-base-patch32 as --image-encoder"
        )


def is_vision_backbone(backbone: Any) -> bool:
    """A loaded backbone whose own vision tower the visual plugins use."""
    return getattr(backbone, "visual", None) is not None and getattr(backbone.config, "model_type", None) in SUPPORTED


@dataclass(frozen=True)
class VisionTokens:
    """The ids of the tokens that frame and stand for an image in the backbone's vocabulary."""

    start: int
    end: int
    image: int

    @classmethod
    def of(cls, config: Any, vocab_size: int) -> VisionTokens:
        ids = cls(config.vision_start_token_id, config.vision_end_token_id, config.image_token_id)
        if max(ids.start, ids.end, ids.image) >= vocab_size:
            raise CheckpointError(
                f"the vision token ids ({ids.start}, {ids.end}, {ids.image}) of this {config.model_type} are outside "
                f"its vocabulary of {vocab_size}: the config and the weights do not belong together"
            )
        return ids


def text_config(config: Any) -> Any:
    """The language model's config (a VLM keeps hidden_size and layers there)."""
    return getattr(config, "text_config", None) or config


def rope_positions(backbone: Any, types: torch.Tensor, mask: torch.Tensor, grids: list[torch.Tensor] | None) -> torch.Tensor:
    """M-RoPE position ids [3, B, T] from the model's own get_rope_index.

    `types` holds get_rope_index's token types (0 text, 1 image) aligned with `mask`; `grids` each
    row's image grids (t, h, w in patches), in order. Padding (mask 0) is skipped, as the model does.
    """
    found = [g for g in (grids or []) if g.numel()]
    image_grid = torch.cat(found).to(types.device) if found else None
    position_ids, _ = backbone.get_rope_index(
        input_ids=types.long(), mm_token_type_ids=types.int(), image_grid_thw=image_grid, attention_mask=mask
    )
    return position_ids


def types_of(tokens: Any) -> torch.Tensor:
    """A sequence's token types (all text when no adapter marked any image token)."""
    if tokens.mm_types is not None:
        return tokens.mm_types
    return torch.zeros_like(tokens.mask, dtype=torch.long)


def left_padded_types(tokens: Any) -> torch.Tensor:
    """The token types in the order omnisdk.backbone.left_pad puts the tokens (padding first, a stable sort)."""
    order = torch.argsort(tokens.mask.to(torch.int8), dim=1, stable=True)
    return torch.gather(types_of(tokens), 1, order)
