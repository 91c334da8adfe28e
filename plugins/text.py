"""Text: the backbone's own tokenizer and input embeddings; the one modality every model has.

Files: .txt and .md, and as a fallback (a plugin that lists the extension wins it) reStructuredText,
HTML, CSV/TSV, JSON/JSONL, YAML, TOML, INI, logs and source code. `chunk()` splits a file into
overlapping windows of the model's content budget that respect its structure (see text_blocks
and text_chunks); each chunk carries its passage as `text` and its lines and heading path as its
locator.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from pydantic import Field
from torch import nn

from omnisdk.hookspecs import hookimpl
from omnisdk.items import Item, Locator
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
from omnisdk.plugins.text_blocks import KIND_BY_SUFFIX, kind_of, split_text
from omnisdk.plugins.text_chunks import TokenCounter, chunk_split

#: Characters read of a file embedded whole (no locator): far more than any max_length keeps.
_WHOLE_FILE_CHARS_PER_TOKEN = 16


class TextConfig(PluginConfig):
    #: Tokens kept per text, special tokens included; longer texts are cut at the end.
    #: None means the backbone's max_length.
    max_length: int | None = None
    #: tokens per chunk of a long file; None (and anything larger) means the model's content budget
    #: for text, so a chunk is never truncated.
    chunk_tokens: int | None = Field(None, ge=8)
    #: share of a chunk's tokens that the next chunk of the same section repeats.
    chunk_overlap: float = Field(0.15, ge=0.0, le=0.5)
    #: files larger than this are refused by chunk() and preprocess ("over max_file_mb").
    max_file_mb: float = Field(64.0, gt=0)


class TextAdapter(nn.Module):
    """Looks token ids up in the backbone's input embeddings; it has no parameters of its own."""

    def forward(self, batch: dict, runtime: Runtime) -> TokenEmbeddings:
        embeds = runtime.embed_token_ids(batch["input_ids"])
        return TokenEmbeddings(embeds, batch["attention_mask"], framed=True)


class TextPlugin(ModalityPlugin):
    name = "text"
    version = "0.2.0"
    description = "Plain text, Markdown, reStructuredText, HTML, tables, data files and source code, chunked by structure"
    extensions = (".txt", ".md")
    fallback_extensions = tuple(sorted(set(KIND_BY_SUFFIX) - {".txt", ".md"}))
    python_types = ("builtins.str",)
    Config = TextConfig
    instructions = Instructions(query="", document="")
    aspect_prompts = ("the overall meaning", "the things it mentions", "the attributes it describes", "the relations and positions it states")
    fusion = FusionSpec(shared=["*"])
    training = TrainingDefaults(learning_rate=2e-5, steps=200, batch_size=64)

    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        texts, ok, errors = [], [], {}
        for i, item in enumerate(items):
            try:
                texts.append(self.text_of(item, runtime))
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

    # -- chunking -----------------------------------------------------------------------------------------
    def window(self) -> tuple[int, int]:
        """(tokens per chunk, overlap tokens): the model's content budget for text, or chunk_tokens if smaller."""
        budget = self.runtime.content_budget(self.name) if self.runtime is not None else 256
        if self.config.max_length is not None:
            budget = min(budget, self.config.max_length - 2)  # a cap of the plugin's own, special tokens aside
        size = max(8, min(self.config.chunk_tokens or budget, budget))
        return size, int(size * self.config.chunk_overlap)

    def chunk(self, item: Item) -> list[Item]:
        """One item per window of the file, with its passage as `text` and `Locator(line0, line1, heading)`.

        An item with a locator, or without a file, is returned as it is; so is an empty file. A file
        that cannot be read as text raises ValueError or OSError naming the cause.
        """
        if item.locator is not None or item.path is None:
            return [item]
        chunks = self._chunks(Path(item.path))
        if not chunks:
            return [item]
        return [
            replace(item, text=c.text, locator=Locator(line0=c.line0, line1=c.line1, heading=c.heading, part=c.part))
            for c in chunks
        ]

    def _chunks(self, path: Path):
        size, overlap = self.window()
        tokenizer = self.runtime.tokenizer if self.runtime is not None else None
        return chunk_split(split_text(self._read(path), kind_of(path)), TokenCounter(tokenizer), size, overlap)

    # -- reading ------------------------------------------------------------------------------------------
    def text_of(self, item: Item, runtime: Runtime) -> str:
        """The item's text: its own, a file's chunk at the locator, or the start of a whole file."""
        if item.text is not None:  # a plain text, or a chunk carrying its passage
            return item.text
        if item.path is None:
            raise ValueError("a text item needs text or a file path")
        path = Path(item.path)
        if item.locator is not None:
            if item.locator.line0 is None:
                raise ValueError(f"a text file takes a line locator, not {item.locator}")
            for c in self._chunks(path):
                if (c.line0, c.line1, c.heading, c.part) == (item.locator.line0, item.locator.line1,
                                                              item.locator.heading, item.locator.part):
                    return c.text
            raise ValueError(f"the file has no chunk at {item.locator} (did it change since it was chunked?)")
        limit = (self.config.max_length or runtime.max_length) * _WHOLE_FILE_CHARS_PER_TOKEN
        text = self._read(path, limit)
        if kind_of(path) == "html":
            from omnisdk.plugins.text_html import html_text

            text = html_text(text)
        return text

    def _read(self, path: Path, chars: int | None = None) -> str:
        """The file as text (UTF-8, a BOM dropped), or its first `chars` characters."""
        size = path.stat().st_size
        cap = int(self.config.max_file_mb * 1024 * 1024)
        if chars is None and size > cap:
            raise ValueError(f"the text file is {size / 1e6:.1f} MB, over the text plugin's max_file_mb={self.config.max_file_mb:g}")
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read(-1 if chars is None else chars)
        if "\x00" in text:
            raise ValueError("binary data (NUL bytes), not text: is the extension right?")
        return text


@hookimpl
def omnisdk_register_modalities(register):
    register(TextPlugin)
