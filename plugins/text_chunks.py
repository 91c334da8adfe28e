"""Blocks -> overlapping windows of at most a token budget, each with its lines and heading path.

Windows pack whole blocks (paragraphs, rows, definitions; see `text_blocks`) and never cross a
section boundary; consecutive windows of a section share trailing blocks up to `overlap` tokens.
A block larger than a window is cut at its lines, and a line larger than a window at token
boundaries (`part` in the locator). Token counts come from the model's tokenizer, batched, so a
file costs one tokenizer pass plus linear bookkeeping whatever its size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from omnisdk.plugins.text_blocks import Block, Split

#: Characters per token assumed when no tokenizer is at hand (a plugin used outside a model).
CHARS_PER_TOKEN = 4
_BATCH = 1024  # texts per tokenizer call: bounds the memory of the token id lists
#: Characters one tokenizer call may take: a longer text (one 50 MB line) is counted and cut in slices of
#: this size, since the tokenizer holds per-character alignments (gigabytes for such a line in one call).
_SLICE = 100_000
#: Characters a chunk may hold per token of its window. WordPiece reads any word over 100 characters
#: (a 5 MB run of one letter, a base64 blob) as one [UNK] token, so token counts alone would let one
#: "token" carry megabytes into a chunk; real text averages about 4 characters a token.
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class TextChunk:
    line0: int
    line1: int
    heading: tuple[str, ...] | None
    text: str
    part: int | None = None


class TokenCounter:
    """Token counts and token-boundary cuts from a Hugging Face tokenizer, or a character estimate."""

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer

    def counts(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]
        if any(len(t) > _SLICE for t in texts):  # slices' counts add up (give or take a token at each cut)
            return [sum(self.counts(_slices(t))) if len(t) > _SLICE else self.counts([t])[0] for t in texts]
        out: list[int] = []
        for start in range(0, len(texts), _BATCH):
            batch = texts[start : start + _BATCH]
            enc = self.tokenizer(batch, add_special_tokens=False, truncation=False, verbose=False)
            # never fewer than the character cap allows, so an [UNK] run is cut like text of its length
            out.extend(max(len(ids), math.ceil(len(t) / MAX_CHARS_PER_TOKEN)) for ids, t in zip(enc["input_ids"], batch))
        return out

    def pieces(self, text: str, size: int, overlap: int) -> list[str]:
        """`text` cut into pieces of at most `size` tokens, consecutive ones sharing `overlap`."""
        step = max(1, size - overlap)
        if self.tokenizer is None or not getattr(self.tokenizer, "is_fast", False):
            width, stride = size * CHARS_PER_TOKEN, step * CHARS_PER_TOKEN
            starts = list(range(0, max(len(text) - width, 0) + 1, stride))
            if starts[-1] + width < len(text):  # the tail, in a last full-width piece
                starts.append(len(text) - width)
            return [text[s : s + width] for s in starts if text[s : s + width].strip()]
        if len(text) > _SLICE:
            return [piece for part in _slices(text) for piece in self.pieces(part, size, overlap)]
        offsets = self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False,
                                 return_offsets_mapping=True)["offset_mapping"]
        pieces = []
        for s in range(0, len(offsets), step):
            e = min(s + size, len(offsets))
            pieces.append(text[offsets[s][0] : offsets[e - 1][1]])
            if e == len(offsets):
                break
        cap = size * MAX_CHARS_PER_TOKEN
        return [p[k : k + cap] for p in pieces for k in range(0, len(p), cap)] if any(len(p) > cap for p in pieces) else pieces


def _slices(text: str) -> list[str]:
    return [text[s : s + _SLICE] for s in range(0, len(text), _SLICE)]


def chunk_split(split: Split, counter: TokenCounter, size: int, overlap: int) -> list[TextChunk]:
    """Windows of at most `size` tokens (the prefix included) over a file's blocks."""
    if size < 1:
        raise ValueError(f"a chunk window needs at least 1 token, not {size}")
    overlap = min(max(overlap, 0), size // 2)
    prefix = split.prefix
    room = size
    if prefix:
        room = size - counter.counts([prefix + split.joiner])[0]
        if room < max(8, size // 4):  # a header row that fills the window is not worth repeating
            prefix, room = "", size
    blocks = _drop_bare_titles(split.blocks)
    blocks, tokens = _fit(blocks, counter.counts([b.text for b in blocks]), counter, room, overlap)
    sep = counter.counts([split.joiner])[0] if blocks else 0
    chunks: list[TextChunk] = []
    seen: set[tuple] = set()
    start = 0
    while start < len(blocks):
        stop = start + 1
        while stop < len(blocks) and blocks[stop].section == blocks[start].section:
            stop += 1
        for i, j in _windows(tokens[start:stop], room, overlap, sep):
            chunks.append(_chunk(split, blocks[start + i : start + j], prefix, seen))
        start = stop
    return chunks


def _drop_bare_titles(blocks: list[Block]) -> list[Block]:
    """A heading directly followed by a subheading is only a title: its path reaches the chunks below."""
    bodies = {b.section for b in blocks if not b.title}
    kept = [b for b in blocks if not b.title or b.section in bodies]
    return kept or blocks


def _fit(blocks: list[Block], tokens: list[int], counter: TokenCounter, room: int, overlap: int) -> tuple[list[Block], list[int]]:
    """Blocks over `room` tokens cut at lines, then lines over it at token boundaries."""
    if all(t <= room for t in tokens):
        return blocks, tokens
    out_blocks: list[Block] = []
    out_tokens: list[int] = []
    for block, count in zip(blocks, tokens):
        if count <= room:
            out_blocks.append(block)
            out_tokens.append(count)
            continue
        if block.by_lines and block.line1 > block.line0:
            lines = [Block(block.line0 + k, block.line0 + k, block.section, line, title=block.title)
                     for k, line in enumerate(block.text.split("\n")) if line.strip()]
            sub_blocks, sub_tokens = _fit(lines, counter.counts([b.text for b in lines]), counter, room, overlap)
        else:
            pieces = counter.pieces(block.text, room, overlap)
            sub_blocks = [replace(block, text=p, part=k) for k, p in enumerate(pieces, start=1)]
            sub_tokens = [room] * len(pieces)  # full windows: each piece is a chunk of its own
        out_blocks += sub_blocks
        out_tokens += sub_tokens
    return out_blocks, out_tokens


def _windows(tokens: list[int], room: int, overlap: int, sep: int) -> list[tuple[int, int]]:
    """Greedy [i, j) windows over one section's blocks; the next starts where `overlap` tokens of blocks remain."""
    windows = []
    i, n = 0, len(tokens)
    while i < n:
        j, total = i + 1, tokens[i]
        while j < n and total + sep + tokens[j] <= room:
            total += sep + tokens[j]
            j += 1
        windows.append((i, j))
        if j >= n:
            break
        k, back = j, 0
        while k - 1 > i and back + tokens[k - 1] <= overlap:
            back += tokens[k - 1]
            k -= 1
        i = k
    return windows


def _chunk(split: Split, blocks: list[Block], prefix: str, seen: set[tuple]) -> TextChunk:
    text = split.joiner.join(b.text for b in blocks)
    if prefix:
        text = prefix + split.joiner + text
    heading = split.headings[blocks[0].section] or None
    part = blocks[0].part if len(blocks) == 1 else None
    line0, line1 = blocks[0].line0, max(b.line1 for b in blocks)
    # Point ids come from the locator: two windows over the same lines (minified HTML, say) get parts.
    while (line0, line1, heading, part) in seen:
        part = (part or 1) + 1
    seen.add((line0, line1, heading, part))
    return TextChunk(line0, line1, heading, text, part)
