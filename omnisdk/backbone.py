"""The shared dense backbone: safe loading of any Hugging Face model, special-token framing, pooling."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, model_validator

from omnisdk import vlm
from omnisdk.aspects import AspectSpec
from omnisdk.errors import CheckpointError, UnsafeCheckpointError

#: "compression": the mean of the CoMa compression tokens (omnisdk/compression.py) appended to every input.
Pooling = Literal["mean", "cls", "last", "compression"]
PaddingSide = Literal["left", "right"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class BackboneSpec(BaseModel):
    """The backbone's architecture (a transformers config as a dict) and how its output is pooled."""

    model_type: str
    config: dict[str, Any]
    pooling: Pooling = "mean"
    #: decoder LLMs pool their last token: padding goes left so that token is the final position
    padding_side: PaddingSide = "right"
    max_length: int = 256
    source: str | None = None  # where the weights first came from, for the lineage
    #: learned compression tokens inside the backbone (CoMa warm-up); 0: none.
    compression_tokens: int = 0
    #: AGFF: K aspect vectors per item (omnisdk/aspects.py); None: one vector per item.
    aspects: AspectSpec | None = None
    #: every input framed by the tokenizer's chat template, instructions as its system message (omnisdk/chat.py)
    chat_template: bool = False

    @model_validator(mode="after")
    def _compression_pooling_needs_tokens(self) -> "BackboneSpec":
        if self.pooling == "compression" and self.compression_tokens < 1:
            raise ValueError("pooling 'compression' needs compression tokens: run `omnisdk warmup --method coma` first")
        return self


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
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from omnisdk import hub

    hub.check_local_dir(source, "backbone")
    try:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        if vlm.is_vision_language(config):  # checked before gigabytes of weights load
            vlm.check_supported(config, source)
        model = AutoModel.from_pretrained(
            str(source), use_safetensors=True, trust_remote_code=trust_remote_code, attn_implementation="sdpa"
        )
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        if vlm.is_vision_language(config):  # instructions go through the processor's chat template
            from omnisdk import chat

            chat.adopt_processor_template(tokenizer, str(source), trust_remote_code)
    except (OSError, ValueError) as exc:
        raise hub.load_error("backbone", source, exc) from exc
    ensure_pad_token(tokenizer)
    return model, tokenizer


def build_from_spec(spec: BackboneSpec) -> Any:
    """An untrained backbone of the given architecture; the checkpoint's weights are loaded into it."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(spec.model_type, **_config_kwargs(spec.config))
    return AutoModel.from_config(config, attn_implementation="sdpa")


def spec_of(model: Any, pooling: Pooling, max_length: int, source: str | None, padding_side: PaddingSide = "right") -> BackboneSpec:
    return BackboneSpec(
        model_type=model.config.model_type,
        config=model.config.to_diff_dict(),
        pooling=pooling,
        padding_side=padding_side,
        max_length=max_length,
        source=source,
    )


def is_decoder_only(config: Any) -> bool:
    """A causal LM backbone (Qwen2/3, Llama, Mistral, ...): a causal-LM class and no masked-LM one (BERT has both)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    if kind in vlm.SUPPORTED:  # a Qwen-VL's language model is a decoder LLM
        return True
    if getattr(config, "is_encoder_decoder", False):
        return False
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def decoder_setup(model: Any, tokenizer: Any, pooling: Pooling | None) -> tuple[Any, Pooling, PaddingSide]:
    """Tokenizer, pooling and padding for a new base: decoders pool an appended end token, left-padded.

    Encoders (and decoders given another pooling) mean-pool, right-padded. The end token goes into
    the tokenizer's post-processor, so the text path, framing and the saved tokenizer all carry it;
    left padding is the tokenizer's setting, saved with it. The caller's tokenizer is not changed.
    """
    if not is_decoder_only(model.config) or pooling not in (None, "last"):
        return tokenizer, pooling or "mean", "right"
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    append_end_token(tokenizer)
    return tokenizer, "last", "left"


def restore_tokenizer(tokenizer: Any, spec: BackboneSpec) -> None:
    """Re-assert a loaded decoder's left padding and end token: a tokenizer class may rebuild its post-processor."""
    if spec.padding_side == "left":
        tokenizer.padding_side = "left"
        if spec.pooling == "last":
            append_end_token(tokenizer)


def append_end_token(tokenizer: Any) -> None:
    """Make the tokenizer end every text with its EOS token (unless it ends them with one already); last-token pooling reads it."""
    if special_token_frame(tokenizer)[1]:
        return  # it already ends texts with a special token (EOS, or BERT's [SEP]): that one is pooled
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None:
        raise CheckpointError("a decoder backbone with last-token pooling needs an EOS token; its tokenizer has none")
    from tokenizers import processors

    # One template that keeps what the tokenizer put around a text (Llama's BOS) and appends the EOS;
    # it replaces the old post-processor, whose other work (byte-level offsets) ids do not depend on.
    prefix, suffix = special_token_frame(tokenizer)
    ids = {tokenizer.convert_ids_to_tokens(i): i for i in [*prefix, *suffix, eos_id]}
    around = [tokenizer.convert_ids_to_tokens(i) for i in prefix], [tokenizer.convert_ids_to_tokens(i) for i in suffix]
    single = " ".join([*around[0], "$A", *around[1], eos])
    pair = " ".join([*around[0], "$A", *around[1], eos, "$B:1", *[f"{t}:1" for t in around[1]], f"{eos}:1"])
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=list(ids.items())
    )
    if special_token_frame(tokenizer)[1][-1:] != [eos_id]:
        raise CheckpointError(f"could not make the {type(tokenizer).__name__} tokenizer append its end token {eos!r}")


def left_pad(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's padding to the front, keeping token order; also the position ids counting real tokens."""
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # padding (0) first, real tokens in order
    embeds = torch.gather(embeds, 1, order.unsqueeze(-1).expand_as(embeds))
    mask = torch.gather(mask, 1, order)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return embeds, mask, positions


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
    if how == "compression":
        raise ValueError("compression pooling needs the tokens' positions: use omnisdk.compression.pool")
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        # The last real token, wherever the padding is (left for decoders, right elsewhere).
        steps = torch.arange(1, mask.size(1) + 1, device=mask.device)
        last = (mask.to(steps.dtype) * steps).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
