"""AGFF aspect tokens: K learned embeddings per modality appended to every input, one vector each.

An AGFF model (`BackboneSpec.aspects` set) appends its modality's K aspect tokens after an item's
real tokens (behind the special tokens, and behind CoMa's compression tokens when there are any)
and reads the last hidden state at each of them: K unit vectors per item from ONE forward pass.
Each token starts as the mean input embedding of its prompt's words ("the objects in it", "their
layout and relations", ...), which the plugin declares (`ModalityPlugin.aspect_prompts`) and the
model config may override; training then moves it where the contrastive loss wants it. Aspect k of
a text query is compared with aspect k of an image (omnisdk/aggregation.py), so the prompts of one
index describe the same kind of aspect in every modality.

The module lives inside the backbone (`backbone.aspect_tokens`), like the compression tokens: it
is saved with the checkpoint, fused as shared backbone parameters, and trains where the backbone
trains. It also holds the aggregation's learned temperature and pair weights, so search and eval
score with exactly the trained aggregation.

The single pooled vector of an AGFF item (what `encode` returns by default, and what plain clients
query) is the normalised mean of its K aspect vectors.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from omnisdk import aggregation
from omnisdk.modality import TokenEmbeddings

ATTRIBUTE = "aspect_tokens"
#: K when `omnisdk init --aspects` is given without a number of prompts to match.
DEFAULT_ASPECTS = 4
#: the aggregation temperature's start: differences of a few hundredths of a cosine still move
#: the weights of the softmax, and it is far from both clamps (see omnisdk/aggregation.py).
DEFAULT_TEMPERATURE = 0.1


class AspectSpec(BaseModel):
    """An AGFF model's aspects: K, each modality's prompts, and the aggregation's form."""

    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=1)
    #: modality -> its K prompts (what the tokens were initialised from; kept for the record)
    prompts: dict[str, list[str]]
    pairs: aggregation.Pairs = "all"
    learn_weights: bool = True
    temperature: float = Field(DEFAULT_TEMPERATURE, gt=0)


class AspectTokens(nn.Module):
    """Per modality (K, H) aspect embeddings, the log-temperature and the pair weight logits."""

    def __init__(self, spec: AspectSpec, hidden_size: int):
        super().__init__()
        self.spec = spec
        self.embeddings = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(spec.count, hidden_size)) for m in sorted(spec.prompts)}
        )
        # shape (1,), not a 0-d scalar: every merge method handles 1-d tensors the same way
        self.log_temperature = nn.Parameter(torch.tensor([math.log(spec.temperature)]))
        pairs = aggregation.pair_count(spec.count, spec.pairs)
        self.weight_logits = nn.Parameter(torch.zeros(pairs)) if spec.learn_weights else None

    @property
    def count(self) -> int:
        return self.spec.count

    def tokens(self, modality: str) -> torch.Tensor:
        if modality not in self.embeddings:
            raise KeyError(f"this AGFF model has no aspect tokens for modality '{modality}' "
                           f"(it has: {', '.join(self.embeddings)})")
        return self.embeddings[modality]

    def aggregate(self, sims: torch.Tensor) -> torch.Tensor:
        """The aggregated similarity of aspect-pair similarities (..., |P|) -> (...)."""
        return aggregation.aggregate(sims, self.log_temperature, self.weight_logits)


def resolve_prompts(plugins: Mapping[str, Any], count: int,
                    overrides: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """K prompts per modality: the override, else the plugin's `aspect_prompts`, cut or extended to K."""
    out = {}
    for name, plugin in plugins.items():
        declared = list((overrides or {}).get(name) or getattr(plugin, "aspect_prompts", ()) or ())
        if not declared:
            declared = ["the whole item"]
        prompts = declared[:count] + [f"aspect {k + 1} of it" for k in range(len(declared), count)]
        out[name] = prompts
    return out


def attach(backbone: nn.Module, spec: AspectSpec | None) -> AspectTokens | None:
    """Give `backbone` the aspect tokens of `spec` (no-op for None); returns the module, or None."""
    if spec is None:
        return None
    existing = tokens_of(backbone)
    if existing is not None:
        return existing
    module = AspectTokens(spec, int(backbone.config.hidden_size))
    weight = backbone.get_input_embeddings().weight
    module.to(device=weight.device)
    setattr(backbone, ATTRIBUTE, module)
    return module


def init_from_prompts(module: AspectTokens, tokenizer: Any, word_embeddings: nn.Module) -> None:
    """Each token = the mean input embedding of its prompt's words (no special tokens)."""
    with torch.no_grad():
        for modality, prompts in module.spec.prompts.items():
            rows = []
            for prompt in prompts:
                ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id or 0]
                index = torch.tensor(ids, device=word_embeddings.weight.device)
                rows.append(word_embeddings(index).float().mean(dim=0))
            module.embeddings[modality].copy_(torch.stack(rows).to(module.embeddings[modality].dtype))


def tokens_of(backbone: nn.Module) -> AspectTokens | None:
    return getattr(backbone, ATTRIBUTE, None)


def append(tokens: TokenEmbeddings, embeddings: torch.Tensor) -> tuple[TokenEmbeddings, torch.Tensor]:
    """The sequence with the K aspect tokens right after each row's real tokens, and their positions (B, K)."""
    batch = tokens.embeds.size(0)
    lengths = tokens.mask.sum(dim=1).to(torch.long)
    count = embeddings.size(0)
    extra = embeddings.to(tokens.embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    ones = torch.ones(batch, count, dtype=tokens.mask.dtype, device=tokens.mask.device)
    joined = TokenEmbeddings.cat([tokens, TokenEmbeddings(extra, ones)])  # packs them behind the real tokens
    joined.framed = True
    positions = lengths.unsqueeze(1) + torch.arange(count, device=lengths.device).unsqueeze(0)
    return joined, positions


def pooled(aspect_vectors: torch.Tensor) -> torch.Tensor:
    """The single vector of an AGFF item: the normalised mean of its unit aspect vectors (..., K, D) -> (..., D)."""
    return torch.nn.functional.normalize(aspect_vectors.mean(dim=-2), dim=-1)
