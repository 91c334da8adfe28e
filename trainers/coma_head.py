"""The reconstruction objective of the CoMa warm-up for encoder backbones: a small causal decoder.

For one training pair, the item on the non-text side (an image, a clip, a page, a sound; or the
positive of a text pair) is encoded with the compression tokens appended; the decoder then predicts
the pair's text token by token, attending (cross-attention) to the compression tokens' last hidden
states only:

    L_rec = -1/T sum_t log p(y_t | y_<t, C),   C = the N compression tokens' hidden states (B, N, H)

The decoder's vocabulary is the backbone's word embedding matrix (tied: inputs are its rows, logits
are dot products with them), so the head adds only one decoder layer, a start vector and position
embeddings. It trains jointly with the model during the warm-up and is thrown away afterwards: it
is not an attribute of the model and never reaches the checkpoint.

Reference: Li et al. 2025, "Compression then Matching" (arXiv 2511.08480): there the MLLM itself
answers questions about an image from the compression tokens alone. A BERT-style encoder cannot
generate, hence this head (docs/methods.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReconstructionHead(nn.Module):
    """One pre-norm transformer decoder layer over tied word embeddings; returns the mean token loss."""

    def __init__(self, hidden_size: int, max_tokens: int, layers: int = 1):
        super().__init__()
        heads = max(1, hidden_size // 64)
        while hidden_size % heads:
            heads -= 1
        layer = nn.TransformerDecoderLayer(hidden_size, heads, dim_feedforward=2 * hidden_size, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.start = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.positions = nn.Embedding(max_tokens, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.max_tokens = max_tokens

    def forward(self, memory: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, words: nn.Embedding) -> torch.Tensor:
        """memory (B, N, H) compression states; ids, mask (B, T) the text to reconstruct (T <= max_tokens)."""
        batch, length = ids.shape
        if length > self.max_tokens:
            raise ValueError(f"{length} target tokens exceed the head's {self.max_tokens}; truncate the text first")
        shifted = words(ids[:, :-1]).to(memory.dtype)  # teacher forcing: token t sees tokens < t
        inputs = torch.cat([self.start.to(memory.dtype).expand(batch, 1, -1), shifted], dim=1)
        inputs = inputs + self.positions.weight[:length].to(memory.dtype)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=ids.device, dtype=memory.dtype)
        out = self.norm(self.decoder(inputs, memory, tgt_mask=causal, tgt_is_causal=True))
        logits = out @ words.weight.to(out.dtype).T
        keep = mask.bool()
        return F.cross_entropy(logits[keep].float(), ids[keep])
