"""Images: Pillow decoding (EXIF orientation, any colour mode, a pixel limit) and a timm vision tower.

The vision tower and its projection are *shared*: video frames and rendered PDF pages go through
the same adapter (`ImageAdapter.encode_pixels`), so fusion merges it like the backbone.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn

from omnisdk.hookspecs import hookimpl
from omnisdk.items import Item
from omnisdk.vlm import is_vision_backbone
from omnisdk.modality import (
    BuildContext,
    FusionSpec,
    Instructions,
    ModalityPlugin,
    PluginConfig,
    Prepared,
    Runtime,
    TokenEmbeddings,
    TrainingDefaults,
    run_per_item,
)


class ImageConfig(PluginConfig):
    #: timm model name of the vision tower.
    tower: str = "vit_tiny_patch16_224"
    #: keyword arguments for timm.create_model (img_size, depth, embed_dim, ...).
    tower_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: a local safetensors file of pretrained tower weights (timm's own key names), or None.
    tower_weights: str | None = None
    #: a pretrained tower: a transformers vision model (local directory or hub id, e.g.
    #: openai/clip-vit-base-patch32) or a timm one (`timm:NAME`, `hf-hub:ORG/NAME`, a timm name).
    #: Read once, when the base model is created; see omnisdk.plugins.image_tower.
    tower_source: str | None = None
    #: which library the tower comes from; set from tower_source on first build. "backbone": a
    #: vision-language backbone's own tower (omnisdk.plugins.image_vlm), chosen when there is no tower_source.
    tower_kind: Literal["timm", "hf", "backbone"] = "timm"
    #: recorded on first build from tower_source, so the manifest rebuilds the tower without it.
    tower_resolved: bool = False
    hf_config: dict[str, Any] | None = None
    processor_config: dict[str, Any] | None = None
    #: normalisation of the tower's inputs; None: the timm tower's pretrained_cfg.
    mean: list[float] | None = None
    std: list[float] | None = None
    #: side of the square the image is letterboxed into.
    image_size: int = 224
    #: spatial tokens are average-pooled to a grid of this side; None keeps them all.
    token_grid: int | None = None
    #: images with more pixels are refused before decoding (decompression-bomb guard).
    max_pixels: int = 64_000_000
    #: with a vision-language backbone: most pixels an image is resized to (Qwen2-VL: 784 per token), and
    #: the square that pages and video frames are letterboxed into.
    vlm_max_pixels: int = 448 * 448


def load_image(source: Path | Any, max_pixels: int):
    """An RGB PIL image from a path or a PIL image: EXIF orientation applied, transparency on white."""
    from PIL import Image, ImageOps

    if isinstance(source, (str, Path)):
        image = Image.open(source)  # lazy: only the header is read here
    elif isinstance(source, Image.Image):
        image = source
    else:
        raise TypeError(f"expected an image file or PIL image, got {type(source).__name__}")
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(decompression-bomb guard; raise the image plugin's max_pixels to allow it)"
        )
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def to_rgb(image):
    """Convert any Pillow mode to RGB; transparent areas become white rather than black."""
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = float(array.max() - array.min()) or 1.0
        return Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def image_to_tensor(image, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Letterbox an RGB image into a `size` square (nothing cropped) and normalise: [3, size, size]."""
    from PIL import Image

    width, height = image.size
    scale = size / max(width, height)
    resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BICUBIC)
    fill = tuple(int(round(m * 255)) for m in mean)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - resized.size[0]) // 2, (size - resized.size[1]) // 2))
    array = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class ImageAdapter(nn.Module):
    """Vision tower (timm, or a transformers model) -> optional token pooling -> linear projection to the backbone width."""

    def __init__(self, config: ImageConfig, hidden_size: int, tower: nn.Module | None = None, processor: Any = None):
        super().__init__()
        self.processor = processor  # a transformers image processor, for towers that come with one
        if tower is not None:  # already loaded from tower_source
            self.tower = tower
        elif config.tower_kind == "hf":
            from omnisdk.plugins.image_tower import build_hf_vision

            self.tower, self.processor = build_hf_vision(config.hf_config, config.processor_config)
        else:
            self.tower = _timm_tower(config)
        self.token_grid = config.token_grid
        self.projector = nn.Sequential(nn.LayerNorm(self.tower.num_features), nn.Linear(self.tower.num_features, hidden_size))
        cfg = getattr(self.tower, "pretrained_cfg", {}) or {}
        self.mean = tuple(config.mean or cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(config.std or cfg.get("std", (0.229, 0.224, 0.225)))

    def encode_pixels(self, pixels: torch.Tensor, token_grid: int | None = None) -> torch.Tensor:
        """Images [N, 3, S, S] -> tokens [N, T, hidden]; video frames and PDF pages come here too.

        `token_grid` overrides the configured grid (video pools each frame harder than an image).
        """
        token_grid = token_grid or self.token_grid
        features = self.tower.forward_features(pixels)
        if features.dim() == 4:  # convnets give [N, C, H, W] and no prefix tokens
            prefix, grid = features.new_zeros(features.size(0), 0, features.size(1)), features
        else:
            n_prefix = int(getattr(self.tower, "num_prefix_tokens", 0))
            prefix, patches = features[:, :n_prefix], features[:, n_prefix:]
            side = int(math.isqrt(patches.size(1)))
            grid = patches.transpose(1, 2).reshape(patches.size(0), -1, side, side) if side * side == patches.size(1) else None
            if grid is None:
                return self.projector(features)
        if token_grid is not None and grid.size(-1) > token_grid:
            grid = nn.functional.adaptive_avg_pool2d(grid, token_grid)
        tokens = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
        return self.projector(tokens)

    def forward(self, batch: dict, runtime: Runtime) -> TokenEmbeddings:
        tokens = self.encode_pixels(batch["pixels"])
        return TokenEmbeddings(tokens, torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device))


def _timm_tower(config: ImageConfig) -> nn.Module:
    import timm

    kwargs = dict(config.tower_kwargs)
    kwargs.setdefault("num_classes", 0)
    if "vit" in config.tower or "deit" in config.tower:
        kwargs.setdefault("img_size", config.image_size)
    if config.tower_weights:
        return timm.create_model(
            config.tower, pretrained=True, pretrained_cfg_overlay={"file": config.tower_weights}, **kwargs
        )
    return timm.create_model(config.tower, pretrained=False, **kwargs)


class ImagePlugin(ModalityPlugin):
    name = "image"
    version = "0.1.0"
    description = "PNG, JPEG, GIF, WebP, BMP, TIFF images through a timm vision tower"
    extra = "image"
    requires = ("PIL", "timm")
    extensions = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
    python_types = ("PIL.Image.Image",)
    Config = ImageConfig
    instructions = Instructions(query="Find an image that matches: ", document="An image: ")
    fusion = FusionSpec(shared=["*"])
    training = TrainingDefaults(learning_rate=1e-4, steps=300, batch_size=32)

    def preview(self, item: Item, side: int) -> Any:
        """The image itself (the app shrinks it to `side`)."""
        return load_image(item.path if item.path is not None else item.data, self.config.max_pixels)

    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        adapter = runtime.adapter(self.name)
        size = self.config.image_size

        def load(item: Item):
            image = load_image(item.path if item.path is not None else item.data, self.config.max_pixels)
            # A pretrained transformers tower gets its own processor's resize, crop and normalisation.
            return image if adapter.processor is not None else image_to_tensor(image, size, adapter.mean, adapter.std)

        loaded, ok, errors = run_per_item(items, load)
        if not loaded:
            return Prepared(batch=None, ok=ok, errors=errors)
        if hasattr(adapter, "prepare_images"):  # a vision-language backbone's processor: patches and grids
            return Prepared(batch=adapter.prepare_images(loaded), ok=ok, errors=errors)
        if adapter.processor is not None:
            pixels = adapter.processor(images=loaded, return_tensors="pt")["pixel_values"].float()
        else:
            pixels = torch.stack(loaded)
        return Prepared(batch={"pixels": pixels}, ok=ok, errors=errors)

    def build_adapter(self, ctx: BuildContext) -> nn.Module:
        if self.config.tower_source and not self.config.tower_resolved:
            return self._adapter_from_source(ctx.hidden_size)
        if self.config.tower_kind == "backbone" or (not self.config.tower_source and is_vision_backbone(ctx.backbone)):
            from omnisdk.plugins import image_vlm

            adapter, self.config = image_vlm.build(self.config, ctx)
            return adapter
        return ImageAdapter(self.config, ctx.hidden_size)

    def _adapter_from_source(self, hidden_size: int) -> nn.Module:
        """Read tower_source once: load the pretrained tower and record what rebuilds it without the source."""
        from omnisdk.plugins import image_tower

        source = self.config.tower_source
        update: dict[str, Any] = {"tower_resolved": True, "tower_kind": image_tower.source_kind(source)}
        if update["tower_kind"] == "hf":
            tower, processor, hf_config, processor_config = image_tower.load_hf_vision(source)
            update |= {"hf_config": hf_config, "processor_config": processor_config,
                       "tower": type(tower.model).__name__, "tower_kwargs": {},
                       "image_size": image_tower.processor_size(processor),
                       "mean": list(processor.image_mean), "std": list(processor.image_std)}
        else:
            # The source fixes the architecture: a preset's tower_kwargs describe its random tower, not this one.
            tower, record = image_tower.load_timm(source, {"num_classes": 0})
            update |= record
            update["image_size"] = int(tower.pretrained_cfg.get("input_size", (3, self.config.image_size))[-1])
            processor = None
        self.config = self.config.model_copy(update=update)
        return ImageAdapter(self.config, hidden_size, tower=tower, processor=processor)

    def length_hint(self, item: Item) -> int:
        return 0


@hookimpl
def omnisdk_register_modalities(register):
    register(ImagePlugin)
