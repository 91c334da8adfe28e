"""The image adapter of a vision-language backbone (Qwen2-VL, Qwen2.5-VL): the backbone's own vision tower.

Images go through the checkpoint's image processor (Qwen2VLImageProcessor: resized to whole merged
patches within a pixel budget, cut into flattened patches, one (t, h, w) grid per image). Video
frames and document pages arrive as letterboxed squares and are cut into patches here, the same way
(`patchify`). The tower's merged patch embeddings stand where the model's `<|image_pad|>` tokens
would, between the `<|vision_start|>` and `<|vision_end|>` embeddings, and each token is marked
text or image with its grid, so the model's M-RoPE positions them (omnisdk.vlm).

The tower is `backbone.visual`: its weights are backbone weights, shared, and merged by fusion like
the language model. This adapter holds no parameters and no second reference in the state dict.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from omnisdk import vlm
from omnisdk.errors import CheckpointError
from omnisdk.modality import BuildContext, TokenEmbeddings, Runtime


class BackboneVisionAdapter(nn.Module):
    """Pixels -> the backbone's vision tower -> merged patch embeddings framed by the vision start/end tokens."""

    def __init__(self, backbone: nn.Module, processor: Any):
        super().__init__()
        # Not a submodule: the tower's parameters belong to the backbone, once, under backbone.visual.
        object.__setattr__(self, "_backbone", backbone)
        self.processor = processor
        self.tokens = vlm.VisionTokens.of(backbone.config, backbone.get_input_embeddings().num_embeddings)
        vision = backbone.config.vision_config
        self.patch_size, self.merge_size = int(vision.patch_size), int(vision.spatial_merge_size)
        self.temporal_patch_size = int(vision.temporal_patch_size)
        self.factor = self.patch_size * self.merge_size  # pixels per merged token, along each side
        self.mean, self.std = tuple(processor.image_mean), tuple(processor.image_std)

    def prepare_images(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """PIL images -> {"patches": [N, most patches, D] zero-padded, "grid_thw": [N, 3]}, by the checkpoint's processor."""
        out = self.processor(images=list(images), return_tensors="pt")
        grid = out["image_grid_thw"]
        patches = out["pixel_values"].float().split(grid.prod(-1).tolist())
        return {"patches": pad_sequence(list(patches), batch_first=True), "grid_thw": grid}

    def forward(self, batch: dict, runtime: Runtime) -> TokenEmbeddings:
        return self.image_tokens(batch["patches"], batch["grid_thw"])

    def image_tokens(self, patches: torch.Tensor, grid_thw: torch.Tensor) -> TokenEmbeddings:
        """Each image as [vision_start, merged patches..., vision_end], right-padded, with its token types and grid."""
        counts = grid_thw.prod(-1).tolist()
        flat = torch.cat([patches[i, :c] for i, c in enumerate(counts)])
        visual = self._backbone.visual
        merged = visual(flat.to(visual.dtype), grid_thw=grid_thw).pooler_output
        embed = self._backbone.get_input_embeddings()
        merged = merged.to(embed.weight.dtype)
        frame = embed(torch.tensor([self.tokens.start, self.tokens.end], device=merged.device))
        sizes = [c // self.merge_size**2 for c in counts]
        rows = [torch.cat([frame[:1], image, frame[1:]]) for image in merged.split(sizes)]
        types = [torch.tensor([vlm.TEXT] + [vlm.IMAGE] * n + [vlm.TEXT], device=merged.device) for n in sizes]
        masks = [torch.ones(n + 2, dtype=torch.long, device=merged.device) for n in sizes]
        return TokenEmbeddings(pad_sequence(rows, batch_first=True), pad_sequence(masks, batch_first=True),
                               mm_types=pad_sequence(types, batch_first=True),
                               grids=[g.view(1, 3) for g in grid_thw.long()])

    def pixel_tokens(self, pixels: torch.Tensor, token_grid: int | None = None) -> TokenEmbeddings:
        """Normalised squares [N, 3, S, S] (video frames, pages) as image tokens; `token_grid` caps merged tokens per side."""
        side = pixels.size(-1) // self.factor
        if token_grid is not None:
            side = min(side, token_grid)
        side = max(side, 1) * self.factor
        if side != pixels.size(-1) or side != pixels.size(-2):  # whole merged patches, and the token cap
            pixels = nn.functional.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        patches = patchify(pixels, self.patch_size, self.merge_size, self.temporal_patch_size)
        grid = torch.tensor([[1, side // self.patch_size, side // self.patch_size]] * pixels.size(0), device=pixels.device)
        return self.image_tokens(patches, grid)

    def encode_pixels(self, pixels: torch.Tensor, token_grid: int | None = None) -> torch.Tensor:
        """ImageAdapter's interface, for plugins that take plain tokens: [N, T, hidden], positioned as text."""
        return self.pixel_tokens(pixels, token_grid).embeds


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, H/p * W/p, C * temporal * p * p], in Qwen2VLImageProcessor's order for one still image.

    A still image is repeated `temporal` times to fill the tower's temporal patch, and patches are
    ordered so that each merge x merge block is contiguous, as the processor does.
    """
    n, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.unsqueeze(1).expand(n, temporal, c, h, w)
    x = x.reshape(n, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(n, gh * gw, c * temporal * patch * patch)


def build(config: Any, ctx: BuildContext) -> tuple[BackboneVisionAdapter, Any]:
    """The adapter, and the image config that rebuilds it: on first build the processor is read from the backbone's source."""
    if config.tower_kind != "backbone":
        processor = _source_processor(ctx.backbone, ctx.backbone_source)
        # A checkpoint's own budget (Qwen2-VL: up to 12.8 MP, 16k tokens an image) is far past what retrieval needs.
        size = dict(processor.size)
        size["longest_edge"] = min(int(size.get("longest_edge") or config.vlm_max_pixels), config.vlm_max_pixels)
        size["shortest_edge"] = min(int(size.get("shortest_edge") or 0), size["longest_edge"])
        processor.size = size
        factor = int(processor.patch_size) * int(processor.merge_size)
        side = max(1, int(config.vlm_max_pixels**0.5) // factor) * factor  # pages and frames: whole merged patches
        config = config.model_copy(update={
            "tower_kind": "backbone", "tower": type(ctx.backbone.visual).__name__, "tower_kwargs": {},
            "tower_resolved": True, "processor_config": processor.to_dict(), "hf_config": None, "image_size": side,
            "mean": list(processor.image_mean), "std": list(processor.image_std),
        })
    return BackboneVisionAdapter(ctx.backbone, _rebuild_processor(config.processor_config)), config


def _source_processor(backbone: nn.Module, source: str | None) -> Any:
    """The checkpoint's image processor; for a backbone given as a module, Qwen2-VL's default at its patch sizes."""
    from transformers import AutoImageProcessor, Qwen2VLImageProcessor

    from omnisdk import hub

    if source is None:
        vision = backbone.config.vision_config
        return Qwen2VLImageProcessor(patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
                                     temporal_patch_size=vision.temporal_patch_size)
    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise hub.load_error("image processor of the backbone", source, exc) from exc


def _rebuild_processor(record: dict[str, Any] | None) -> Any:
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    name = (record or {}).get("image_processor_type")
    processor_class = get_image_processor_class_from_name(name) if name else None
    if processor_class is None:
        raise CheckpointError(f"the image processor type {name!r} is not one this transformers version knows")
    return processor_class.from_dict({k: v for k, v in record.items() if k != "image_processor_type"})
