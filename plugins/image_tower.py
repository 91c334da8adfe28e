"""Pretrained vision towers for the image adapter: a transformers vision model with its image processor, or timm.

`tower_source` names where the weights come from; it is read once, when a base model is created,
and what rebuilds the tower without it (its config, the processor's settings, the normalisation) is
recorded in the image plugin's config. Later loads build the architecture empty and take the
weights from the omnisdk checkpoint, so a saved model never needs the source again.

    transformers: a local directory or hub id of CLIP, SigLIP, DINOv2, ... (any AutoModel whose
                  config is, or holds, a vision config); full CLIP/SigLIP checkpoints give their tower
    timm:         `timm:NAME[.TAG]` or a bare timm model name (pretrained weights by timm's registry),
                  `hf-hub:ORG/NAME`, `local-dir:/path`, or a local directory in timm's format
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from omnisdk import hub
from omnisdk.errors import CheckpointError

TowerKind = Literal["timm", "hf"]


def source_kind(source: str) -> TowerKind:
    """Which library loads `source`: timm's own prefixes, timm-format directories and timm names go to timm."""
    if source.startswith(("timm:", "hf-hub:", "local-dir:")):
        return "timm"
    if hub.is_local(source):
        config = Path(source).expanduser() / "config.json"
        if config.is_file() and "architecture" in json.loads(config.read_text()):
            return "timm"  # timm's save format: {"architecture": ..., "pretrained_cfg": ...}
        return "hf"
    if "/" not in source:
        import timm

        if timm.is_model(source.split(".")[0]):
            return "timm"
    return "hf"


# -- transformers vision models ------------------------------------------------------------------------
class HFVisionTower(nn.Module):
    """A transformers vision model behind timm's `forward_features` interface, as ImageAdapter expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        config = model.config
        self.num_features = int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])
        self.patch_size = getattr(config, "patch_size", None)
        self.num_prefix_tokens = 0
        params = inspect.signature(model.forward).parameters
        # Lets a tower run at another resolution than it was trained at (CLIP and SigLIP refuse otherwise).
        self._interpolate = "interpolate_pos_encoding" in params

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        features = self.model(pixel_values=pixels, **kwargs).last_hidden_state
        if features.dim() == 3 and self.patch_size:
            patch = self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0]
            grid = (pixels.size(-2) // patch) * (pixels.size(-1) // patch)
            # CLS and register tokens come first (CLIP 1, SigLIP 0, DINOv2 1 + registers).
            self.num_prefix_tokens = max(0, features.size(1) - grid)
        return features


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


def _model_class(config: Any) -> type:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_class = MODEL_MAPPING.get(type(config), None)
    if model_class is None or getattr(model_class, "main_input_name", None) != "pixel_values":
        raise CheckpointError(
            f"{type(config).__name__} ({model_class.__name__ if model_class else 'no AutoModel class'}) is not a "
            "vision model taking pixel_values; use a CLIP, SigLIP, DINOv2 or another AutoModel vision checkpoint"
        )
    return model_class


def load_hf_vision(source: str) -> tuple[HFVisionTower, Any, dict[str, Any], dict[str, Any]]:
    """Tower, image processor, and the two config dicts that rebuild them; safetensors only, no remote code."""
    from transformers import AutoConfig, AutoImageProcessor

    hub.check_local_dir(source, "image encoder")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    try:
        config = _vision_config(AutoConfig.from_pretrained(source, trust_remote_code=False))
        # A whole CLIP or SigLIP holds a text tower too: its keys are "unexpected" by design, so the
        # load report is silenced; missing keys, which would mean random weights, are checked below.
        hf_logging.set_verbosity_error()
        model, info = _model_class(config).from_pretrained(
            source, config=config, use_safetensors=True, output_loading_info=True
        )
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise hub.load_error("image encoder", source, exc) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        # A vision class applied to a checkpoint whose keys it does not know loads random weights: refuse.
        missing = sorted(info["missing_keys"])
        raise CheckpointError(
            f"the image encoder '{source}' lacks {len(missing)} weights of {type(model).__name__} "
            f"(e.g. {missing[:3]}); its tower is stored under other names: pass a vision-only checkpoint"
        )
    return HFVisionTower(model), processor, hub.clean_config(config.to_dict()), processor.to_dict()


def build_hf_vision(config_dict: dict[str, Any], processor_dict: dict[str, Any]) -> tuple[HFVisionTower, Any]:
    """Rebuild the tower (empty) and processor from recorded dicts; the weights come from the checkpoint."""
    from transformers import AutoConfig
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    kwargs = {k: v for k, v in config_dict.items() if k not in hub.CONFIG_NOISE}
    config = AutoConfig.for_model(config_dict["model_type"], **kwargs)
    model = _model_class(config)._from_config(config)
    name = processor_dict.get("image_processor_type")
    processor_class = get_image_processor_class_from_name(name) if name else None
    if processor_class is None:
        raise CheckpointError(f"the image processor type {name!r} is not one this transformers version knows")
    fields = {k: v for k, v in processor_dict.items() if k != "image_processor_type"}
    return HFVisionTower(model), processor_class.from_dict(fields)


def processor_size(processor: Any) -> int:
    """The side of the square the processor outputs (crop if it crops, else its resize target)."""
    for size in (getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None,
                 getattr(processor, "size", None)):
        if not size:
            continue
        size = dict(size) if not isinstance(size, dict) else size
        for key in ("height", "shortest_edge", "width"):
            if size.get(key):
                return int(size[key])
    return 224


# -- timm -------------------------------------------------------------------------------------------------
def timm_source_name(source: str) -> str:
    """What timm.create_model takes: `timm:NAME` loses its prefix, a timm-format directory gains `local-dir:`."""
    if source.startswith("timm:"):
        return source[len("timm:") :]
    if hub.is_local(source) and not source.startswith("local-dir:"):
        return f"local-dir:{Path(source).expanduser().resolve()}"
    return source


def load_timm(source: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """A pretrained timm tower and what rebuilds it: architecture, model arguments, mean and std."""
    import timm

    name = timm_source_name(source)
    model_args: dict[str, Any] = {}
    try:
        if name.startswith("hf-hub:"):
            from timm.models._hub import load_model_config_from_hf

            _, _, model_args = load_model_config_from_hf(name[len("hf-hub:") :])
        elif name.startswith("local-dir:"):
            from timm.models._hub import load_model_config_from_path

            _, _, model_args = load_model_config_from_path(name[len("local-dir:") :])
        tower = timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        raise hub.load_error("image encoder", source, exc) from exc
    cfg = tower.pretrained_cfg
    record = {
        "tower": cfg.get("architecture") or name.split(".")[0],
        "tower_kwargs": {**dict(model_args or {}), **{k: v for k, v in kwargs.items() if k != "num_classes"}},
        "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": list(cfg.get("std", (0.229, 0.224, 0.225))),
    }
    return tower, record
