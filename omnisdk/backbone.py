"""The shared dense backbone: safe loading of any Hugging Face model, special-token framing, pooling."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel

from omnisdk.errors import CheckpointError, UnsafeCheckpointError

Pooling = Literal["mean", "cls", "last"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class BackboneSpec(BaseModel):
    """The backbone's architecture (a transformers config as a dict) and how its output is pooled."""

    model_type: str
    config: dict[str, Any]
    pooling: Pooling = "mean"
    max_length: int = 256
    source: str | None = None  # where the weights first came from, for the lineage


def refuse_pickles(directory: Path) -> None:
    """Raise if a directory offers only pickled weights: loading them can run arbitrary code."""
    has_safe = any(directory.glob("*.safetensors"))
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not has_safe:
        raise UnsafeCheckpointError(
            f"{directory} holds pickled weights ({', '.join(pickles)}); omnisdk loads safetensors only. "
            "Convert them once, in an environment you trust, with transformers' save_pretrained(..., safe_serialization=True)."
        )


def load_pretrained(source: str | Path, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load a Hugging Face backbone and its tokenizer from a local directory or a hub id (through the HF cache)."""
    from transformers import AutoModel, AutoTokenizer

    from omnisdk import hub

    hub.check_local_dir(source, "backbone")
    try:
        model = AutoModel.from_pretrained(
            str(source), use_safetensors=True, trust_remote_code=trust_remote_code, attn_implementation="sdpa"
        )
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise hub.load_error("backbone", source, exc) from exc
    ensure_pad_token(tokenizer)
    return model, tokenizer


def build_from_spec(spec: BackboneSpec) -> Any:
    """An untrained backbone of the given architecture; the checkpoint's weights are loaded into it."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(spec.model_type, **_config_kwargs(spec.config))
    return AutoModel.from_config(config, attn_implementation="sdpa")


def spec_of(model: Any, pooling: Pooling, max_length: int, source: str | None) -> BackboneSpec:
    return BackboneSpec(
        model_type=model.config.model_type,
        config=model.config.to_diff_dict(),
        pooling=pooling,
        max_length=max_length,
        source=source,
    )


def _config_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    drop = {"model_type", "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"}
    return {k: v for k, v in config.items() if k not in drop}


def ensure_pad_token(tokenizer: Any) -> None:
    """Decoder-only tokenizers often lack a pad token; batching needs one."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (e.g. [CLS] ... [SEP]), found by probing."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Reduce token states [B, T, H] to one vector per row, counting only real tokens."""
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        # Sequences are right-padded with real tokens packed left, so the last real one is at len-1.
        last = mask.sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
