"""Text: the backbone's own tokenizer and input embeddings; the one modality every model has."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from omnisdk.hookspecs import hookimpl
from omnisdk.items import Item
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
)

MAX_TEXT_FILE_BYTES = 10_000_000


class TextConfig(PluginConfig):
    #: Tokens kept per text, special tokens included; longer texts are cut at the end.
    #: None means the backbone's max_length.
    max_length: int | None = None


class TextAdapter(nn.Module):
    """Looks token ids up in the backbone's input embeddings; it has no parameters of its own."""

    def forward(self, batch: dict, runtime: Runtime) -> TokenEmbeddings:
        embeds = runtime.embed_token_ids(batch["input_ids"])
        return TokenEmbeddings(embeds, batch["attention_mask"], framed=True)


class TextPlugin(ModalityPlugin):
    name = "text"
    version = "0.1.0"
    description = "Plain text and .txt/.md files, through the backbone's tokenizer"
    extensions = (".txt", ".md")
    mime_types = ("text/plain", "text/markdown")
    python_types = ("builtins.str",)
    Config = TextConfig
    instructions = Instructions(query="", document="")
    fusion = FusionSpec(shared=["*"])
    training = TrainingDefaults(learning_rate=2e-5, steps=200, batch_size=64)

    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        texts, ok, errors = [], [], {}
        for i, item in enumerate(items):
            try:
                texts.append(self._text_of(item))
                ok.append(i)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
        if not texts:
            return Prepared(batch=None, ok=[], errors=errors)
        enc = runtime.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.config.max_length or runtime.max_length,
            return_tensors="pt",
        )
        return Prepared(batch={"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, ok=ok, errors=errors)

    def build_adapter(self, ctx: BuildContext) -> nn.Module:
        return TextAdapter()

    def split_rows(self, batch: dict, count: int) -> list[dict]:
        """One row per text holding its real tokens only, so a cached row carries no batch padding."""
        keep = batch["attention_mask"].bool()
        return [{"input_ids": batch["input_ids"][i][keep[i]].clone(),
                 "attention_mask": batch["attention_mask"][i][keep[i]].clone()} for i in range(count)]

    def collate_rows(self, rows: Sequence[dict], runtime: Runtime) -> dict:
        """Pad rows to the longest with the tokenizer's pad id, on the tokenizer's padding side."""
        import torch

        tokenizer = runtime.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=rows[0]["input_ids"].dtype)
        mask = torch.zeros((len(rows), width), dtype=rows[0]["attention_mask"].dtype)
        left = getattr(tokenizer, "padding_side", "right") == "left"
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            span = slice(width - n, width) if left else slice(0, n)
            ids[i, span] = row["input_ids"]
            mask[i, span] = row["attention_mask"]
        return {"input_ids": ids, "attention_mask": mask}

    def length_hints(self, items: Sequence[Item], runtime: Runtime) -> list[int]:
        """Token counts from one batched tokenizer call: a tighter sort than characters, so less padding."""
        texts = [item.text for item in items]
        if any(t is None for t in texts):  # files are read in preprocess; characters are a fine guess there
            return [self.length_hint(item) for item in items]
        encoded = runtime.tokenizer(texts, add_special_tokens=False, truncation=True,
                                    max_length=self.config.max_length or runtime.max_length)
        return [len(ids) for ids in encoded["input_ids"]]

    @staticmethod
    def _text_of(item: Item) -> str:
        if item.path is not None:
            path = Path(item.path)
            if path.stat().st_size > MAX_TEXT_FILE_BYTES:
                raise ValueError(f"text file is over {MAX_TEXT_FILE_BYTES} bytes")
            return path.read_text(encoding="utf-8")
        if item.text is None:
            raise ValueError("a text item needs text")
        return item.text


@hookimpl
def omnisdk_register_modalities(register):
    register(TextPlugin)
