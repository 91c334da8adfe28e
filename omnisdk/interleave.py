"""Interleaved items: a file (or in-memory image, waveform) and text in one sequence, as MMEB's queries are.

An item of a non-text modality that also holds `text` (an image with a question or an instruction)
is one input, not two: the file's tokens, from its plugin's adapter, and then the text's tokens, from
the backbone's own embeddings, go into the backbone as one sequence that is framed, positioned
(M-RoPE on a vision-language backbone: the text after an image continues from its grid) and pooled
like any other. This is how VLM2Vec and GME feed `<image> question` to Qwen2-VL, and how the
document plugin already joins a page's image and its text layer.

The file part is prepared by its plugin exactly as a plain file item (so the prepared-input cache
holds one row per file, whatever text comes with it); the texts ride along in `WithText`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Sequence

from omnisdk.items import Item
from omnisdk.modality import Prepared, TokenEmbeddings

log = logging.getLogger(__name__)


@dataclass
class WithText:
    """A prepared batch of files whose rows carry text that joins their sequence ("" for a row with none)."""

    batch: Any
    texts: list[str]


def split(items: Sequence[Item]) -> tuple[list[Item], list[str]] | None:
    """(the items without their text, the texts) when any item is interleaved, else None."""
    if not any(item.is_interleaved for item in items):
        return None
    return [replace(item, text=None) for item in items], [item.text or "" for item in items]


def attach(prepared: Prepared, texts: Sequence[str]) -> Prepared:
    """The plugin's batch of the file parts, with each good row's text attached."""
    if prepared.batch is not None and prepared.ok:
        prepared.batch = WithText(prepared.batch, [texts[i] for i in prepared.ok])
    return prepared


def tokens(model: Any, modality: str, batch: WithText) -> TokenEmbeddings:
    """The file's tokens from its adapter, then its text's tokens, in the room the backbone leaves."""
    parts = [model.adapters[modality](batch.batch, model.runtime)]
    if any(batch.texts):
        room = model.content_budget(modality) - parts[0].embeds.size(1)
        if room <= 0:
            log.warning("the text of an interleaved %s item is dropped: %d file tokens fill the backbone's %d "
                        "(lower the plugin's token_grid or raise max_length)", modality, parts[0].embeds.size(1),
                        model.content_budget(modality))
        else:
            parts.append(model.embed_text_tokens(batch.texts, max_length=room))
    return TokenEmbeddings.cat(parts) if len(parts) > 1 else parts[0]
