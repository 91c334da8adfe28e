"""What `encode` accepts: `Item`, a typed input with an optional locator into a larger file."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Locator:
    """Where a chunk sits inside its file.

    - `page`: a PDF page or an e-book chapter (1-based), as the document plugin counts them.
    - `t0`, `t1`: a time span in seconds (audio, video).
    - `line0`, `line1`: a text chunk's lines (1-based, inclusive) in the file as read;
      `heading`: the Markdown / reStructuredText / HTML headings the chunk sits under, outermost
      first; `part`: a piece of one line too long for one window (1-based), else None.

    Only the fields that are set appear in `to_dict`, so the stored form (and the point ids built
    from it) of page and time locators is what it was before text locators existed.
    """

    page: int | None = None
    t0: float | None = None
    t1: float | None = None
    line0: int | None = None
    line1: int | None = None
    heading: tuple[str, ...] | None = None
    part: int | None = None

    def __post_init__(self) -> None:
        if self.heading is not None and not isinstance(self.heading, tuple):
            object.__setattr__(self, "heading", tuple(self.heading))  # JSON gives a list; keep it hashable

    def __str__(self) -> str:
        if self.page is not None:
            return f"page {self.page}"
        if self.t0 is not None:
            return f"{self.t0:.2f}-{self.t1:.2f}s" if self.t1 is not None else f"from {self.t0:.2f}s"
        if self.line0 is not None:
            return self.lines_text() + (f" ({' > '.join(self.heading)})" if self.heading else "")
        return "whole"

    def lines_text(self) -> str:
        """'line 7', 'lines 7-42', 'line 7, part 2': the line range in words."""
        if self.line0 is None:
            return ""
        text = f"line {self.line0}" if self.line1 in (None, self.line0) else f"lines {self.line0}-{self.line1}"
        return text + (f", part {self.part}" if self.part is not None else "")

    def to_dict(self) -> dict[str, Any]:
        fields = (("page", self.page), ("t0", self.t0), ("t1", self.t1), ("line0", self.line0), ("line1", self.line1),
                  ("heading", list(self.heading) if self.heading is not None else None), ("part", self.part))
        return {k: v for k, v in fields if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Locator | None:
        return cls(**data) if data else None


@dataclass(frozen=True)
class Item:
    """One input: text, a file path, or an in-memory object (PIL image, waveform), with its modality.

    `modality` is None until detection fills it in. `text` beside a file (or `data`) means:

    - for a text item, the file's passage at the locator (a chunk carries its text with it);
    - for any other modality, text that joins the file in one sequence: an *interleaved* item, such
      as an image with a question or an instruction (MMEB's queries). The file's tokens come first,
      then the text's (omnisdk.interleave); the vector differs from the file's alone.
    """

    modality: str | None = None
    text: str | None = None
    path: Path | None = None
    data: Any = field(default=None, compare=False)
    locator: Locator | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of_text(cls, text: str) -> Item:
        return cls(modality="text", text=text)

    @classmethod
    def of_file(cls, path: str | Path, modality: str | None = None, locator: Locator | None = None) -> Item:
        return cls(modality=modality, path=Path(path), locator=locator)

    @classmethod
    def of_interleaved(cls, file: str | Path | Any, text: str, modality: str | None = None) -> Item:
        """A file (a path) or an in-memory object with text that joins it in one sequence."""
        if isinstance(file, (str, Path)):
            return cls(modality=modality, path=Path(file), text=text)
        return cls(modality=modality, data=file, text=text)

    @property
    def is_interleaved(self) -> bool:
        """True for a file or object of a non-text modality that carries text as well."""
        return self.text is not None and (self.path is not None or self.data is not None) and self.modality != "text"

    def with_modality(self, modality: str) -> Item:
        return replace(self, modality=modality)

    def with_locator(self, locator: Locator | None) -> Item:
        return replace(self, locator=locator)

    def label(self) -> str:
        if self.path is not None:
            where = f" [{self.locator}]" if self.locator else ""
            said = f" + {_excerpt(self.text)}" if self.is_interleaved else ""
            # a pipe read into a temporary file is named as the user named it (special_files.PipeSpool)
            return printable(f"{self.meta.get('source', self.path)}{where}{said}")
        if self.text is not None:
            return repr(self.text)
        return f"<{type(self.data).__name__}>" + (f" + {_excerpt(self.text)}" if self.is_interleaved else "")


def _excerpt(text: str | None, width: int = 24) -> str:
    text = text or ""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def printable(text: str) -> str:
    """`text` fit for one line of a terminal or log: control characters and undecodable bytes escaped.

    A file may be named with a newline, or with bytes in no encoding (Python holds those as lone
    surrogates, which a strict UTF-8 stdout cannot print).
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch == " " or ch.isprintable():
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def as_item(obj: Any) -> Item:
    """Wrap what a user passed: `str` is text, `Path` is a file, `Item` passes, anything else is data."""
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, str):
        return Item.of_text(obj)
    if isinstance(obj, Path):
        return Item.of_file(obj)
    if isinstance(obj, dict):
        return item_from_dict(obj)
    return Item(data=obj)


def item_from_dict(data: dict[str, Any], root: Path | None = None) -> Item:
    """Build an item from the dataset format's JSON object (`modality`, `text`, `path`, `locator`)."""
    path = data.get("path")
    if path is not None:
        path = Path(path) if root is None else Path(root) / path
    return Item(
        modality=data.get("modality"),
        text=data.get("text"),
        path=path,
        locator=Locator.from_dict(data.get("locator")),
    )
