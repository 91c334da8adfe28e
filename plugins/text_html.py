"""HTML -> blocks through the standard library's `html.parser` (a tolerant, maintained parser).

Each block-level element's text is one block (tables: one row per block, cells joined by " | "),
with the source lines it came from; h1-h6 open sections, so chunks carry their heading path.
Script, style and other non-content elements are dropped; character references are decoded.
"""
from __future__ import annotations

from html.parser import HTMLParser

from omnisdk.plugins.text_blocks import Block, Split

_BLOCK = frozenset((
    "p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "li", "ul", "ol", "dl", "dt", "dd",
    "pre", "blockquote", "figure", "figcaption", "table", "tr", "caption", "br", "hr", "title", "form", "fieldset",
    "address", "details", "summary", "body", "html",
))
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SKIP = frozenset(("script", "style", "noscript", "template", "svg", "math", "head", "iframe", "object"))
_VOID = frozenset(("br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"))


class _BlockParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.headings: list[tuple[str, ...]] = [()]
        self._stack: list[tuple[int, str]] = []
        self._parts: list[str] = []
        self._lines: tuple[int, int] | None = None
        self._skip: list[str] = []  # open non-content elements (nested ones counted)
        self._pre = 0
        self._heading: int | None = None
        self._title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP and tag not in _VOID:
            if tag != "head" or not self._skip:
                self._skip.append(tag)
            return
        if tag == "title" and self._skip == ["head"]:
            self._skip.pop()  # the title is content: read it, then skip the rest of <head>
            self._title = True
        if tag in _HEADINGS:
            self._flush()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCK:
            self._flush()
        elif tag in ("td", "th") and self._parts:
            self._parts.append(" | ")
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag in _HEADINGS and self._heading is not None:
            title = " ".join("".join(self._parts).split())
            level, self._heading = self._heading, None
            if title:
                while self._stack and self._stack[-1][0] >= level:
                    self._stack.pop()
                self._stack.append((level, title))
                self.headings.append(tuple(t for _, t in self._stack))
            self._flush(title=True)
        elif tag in _BLOCK:
            self._flush()
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag == "title" and self._title:
            self._title = False
            self._skip.append("head")

    def handle_data(self, data: str) -> None:
        if self._skip or not data:
            return
        if data.strip():
            line = self.getpos()[0]  # where this run of text starts in the source
            stripped = data.strip()
            first = line + data[: data.index(stripped[0])].count("\n")
            last = line + data[: data.rindex(stripped[-1])].count("\n")
            self._lines = (self._lines[0], last) if self._lines else (first, last)
        self._parts.append(data)

    def _flush(self, title: bool = False) -> None:
        text = "".join(self._parts)
        text = text.strip("\n") if self._pre else " ".join(text.split())
        if text and self._lines is not None:
            first, last = self._lines
            self.blocks.append(Block(first, max(first, last), len(self.headings) - 1, text, by_lines=False, title=title))
        self._parts, self._lines = [], None

    def close(self) -> None:
        super().close()
        self._flush()


def split_html(text: str) -> Split:
    parser = _BlockParser()
    parser.feed(text)
    parser.close()
    return Split(parser.blocks, parser.headings, "html")


def html_text(text: str) -> str:
    """An HTML document's readable text, one block per paragraph."""
    return "\n\n".join(b.text for b in split_html(text).blocks)
