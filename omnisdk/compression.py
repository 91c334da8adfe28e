"""CoMa compression tokens: N learned embeddings appended to every input, pooled as the item's vector.

The CoMa warm-up (trainers/coma.py) trains them to carry an item's content; afterwards the backbone
spec says `pooling = "compression"` and every forward pass appends them after the item's real tokens
(behind the backbone's own special tokens) and averages their last hidden states, as the paper's
"avg" pooling does. Causal backbones see the whole item from these positions; bidirectional ones see
it anyway.

The embeddings live inside the backbone module (`backbone.compression_tokens.embeddings`), so they
are saved with the checkpoint, count as the shared backbone in fusion (their task vectors merge
like any backbone weight) and train wherever the backbone trains.
"""
from __future__ import annotations

import torch
from torch import nn

from omnisdk.modality import TokenEmbeddings

ATTRIBUTE = "compression_tokens"
#: CoMa's default (TOTAL_COMPRESS_TOKENS = 32 in the authors' training scripts).
DEFAULT_TOKENS = 32


class CompressionTokens(nn.Module):
    """N learned input embeddings of the backbone's width."""

    def __init__(self, count: int, hidden_size: int):
        super().__init__()
        if count < 1:
            raise ValueError(f"compression tokens: count must be at least 1, got {count}")
        self.embeddings = nn.Parameter(torch.zeros(count, hidden_size))

    @property
    def count(self) -> int:
        return self.embeddings.size(0)

    def init_from(self, word_embeddings: torch.Tensor, seed: int = 0) -> None:
        """Draw each token around the mean word embedding with the vocabulary's spread, so they start
        at the scale the backbone expects from real tokens (zeros would all look alike)."""
        generator = torch.Generator().manual_seed(seed)
        words = word_embeddings.detach().float().cpu()
        noise = torch.randn(self.embeddings.shape, generator=generator) * words.std()
        with torch.no_grad():
            self.embeddings.copy_((words.mean(0) + noise).to(self.embeddings.dtype))


def attach(backbone: nn.Module, count: int) -> CompressionTokens | None:
    """Give `backbone` N compression tokens (no-op for 0); returns the module, or None."""
    if count <= 0:
        return None
    existing = tokens_of(backbone)
    if existing is not None:
        if existing.count != count:
            raise ValueError(f"the backbone already has {existing.count} compression tokens, not {count}")
        return existing
    module = CompressionTokens(count, int(backbone.config.hidden_size))
    weight = backbone.get_input_embeddings().weight
    module.to(device=weight.device, dtype=weight.dtype)
    setattr(backbone, ATTRIBUTE, module)
    return module


def tokens_of(backbone: nn.Module) -> CompressionTokens | None:
    return getattr(backbone, ATTRIBUTE, None)


def append(tokens: TokenEmbeddings, module: CompressionTokens) -> tuple[TokenEmbeddings, torch.Tensor]:
    """The sequence with the compression tokens right after each row's real tokens, and their
    positions (B, N) in it."""
    batch = tokens.embeds.size(0)
    lengths = tokens.mask.sum(dim=1).to(torch.long)
    extra = module.embeddings.to(tokens.embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
    ones = torch.ones(batch, module.count, dtype=tokens.mask.dtype, device=tokens.mask.device)
    joined = TokenEmbeddings.cat([tokens, TokenEmbeddings(extra, ones)])  # packs them behind the real tokens
    joined.framed = True
    positions = lengths.unsqueeze(1) + torch.arange(module.count, device=lengths.device).unsqueeze(0)
    return joined, positions


def gather(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The hidden states (B, N, H) at the compression tokens' positions."""
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    return torch.gather(hidden, 1, index)


def pool(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean of the compression tokens' hidden states: one vector per row."""
    return gather(hidden, positions).mean(dim=1)
