"""Text formats -> blocks: the units a chunk never cuts inside when it can help it.

A splitter reads a file's lines and returns `Block`s: a paragraph, a fenced code block, a CSV row,
a top-level entry of a JSON or YAML file, a top-level definition of source code, an HTML element's
text. Each block knows its source lines (1-based, inclusive) and its section, the heading path it
sits under; windows (see `text_chunks`) pack whole blocks and never cross a section boundary.

Every splitter is a single pass over the lines, so chunking stays linear in the file's size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: How a file is split, by extension; anything else the text plugin reads is prose.
KIND_BY_SUFFIX: dict[str, str] = {
    **dict.fromkeys((".md", ".markdown", ".mdown", ".mkd"), "markdown"),
    ".rst": "rst",
    **dict.fromkeys((".html", ".htm", ".xhtml"), "html"),
    **dict.fromkeys((".csv", ".tsv"), "csv"),
    **dict.fromkeys((".jsonl", ".ndjson", ".log"), "lines"),
    **dict.fromkeys((".json", ".yaml", ".yml", ".toml", ".ini", ".cfg"), "data"),
    **dict.fromkeys((
        ".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala", ".c", ".h", ".cc", ".cpp",
        ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".m", ".r", ".jl", ".lua", ".pl", ".sh", ".bash",
        ".zsh", ".sql", ".css", ".scss", ".tex",
    ), "code"),
}
#: What joins two blocks in a chunk's text: a blank line between paragraphs, a newline between rows.
JOINER = {"csv": "\n", "lines": "\n", "data": "\n", "code": "\n"}


@dataclass
class Block:
    """Source lines [line0, line1] (1-based, inclusive) of one section, and their text."""

    line0: int
    line1: int
    section: int
    text: str
    #: a multi-line block too long for a window may be cut at its lines (not an HTML element's text).
    by_lines: bool = True
    #: the heading that opens a section: a section of nothing else gives no chunk of its own.
    title: bool = False
    #: a piece (1-based) of a block cut at token boundaries because one line of it overflows a window.
    part: int | None = None


@dataclass
class Split:
    """A file's blocks, the heading path of each section, and text every chunk of the file starts with."""

    blocks: list[Block]
    headings: list[tuple[str, ...]]
    kind: str
    prefix: str = ""

    @property
    def joiner(self) -> str:
        return JOINER.get(self.kind, "\n\n")


def kind_of(path: Path | None) -> str:
    return KIND_BY_SUFFIX.get(path.suffix.lower(), "prose") if path is not None else "prose"


def split_text(text: str, kind: str) -> Split:
    """Blocks of `text` read as `kind` (see KIND_BY_SUFFIX)."""
    if kind == "html":
        from omnisdk.plugins.text_html import split_html

        return split_html(text)
    lines = text.splitlines()
    return _SPLITTERS.get(kind, _prose)(lines)


# -- prose, Markdown, reStructuredText: paragraphs under headings --------------------------------
class _Sections:
    """Collects blocks while tracking the heading path, one section per heading."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.blocks: list[Block] = []
        self.headings: list[tuple[str, ...]] = [()]
        self._stack: list[tuple[int, str]] = []  # (level, title)
        self._start: int | None = None  # 0-based first line of the open paragraph

    def heading(self, level: int, title: str, at: int, span: int) -> None:
        """A heading of `span` lines at line `at` (0-based) opens a section, its text the section's first block."""
        self.close(at)
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self.headings.append(tuple(t for _, t in self._stack))
        self.add(at, at + span, title=True)

    def line(self, i: int) -> None:
        if self._start is None:
            self._start = i

    def close(self, end: int) -> None:
        """End the open paragraph before line `end` (0-based, exclusive)."""
        if self._start is not None:
            self.add(self._start, end)
            self._start = None

    def add(self, start: int, stop: int, title: bool = False) -> None:
        text = "\n".join(self.lines[start:stop])
        if text.strip():
            self.blocks.append(Block(start + 1, stop, len(self.headings) - 1, text, title=title))


def _paragraphs(lines: list[str], sections: _Sections, is_heading: Callable[[int], tuple[int, str, int] | None]) -> None:
    """Blank-line separated paragraphs; `is_heading(i)` -> (level, title, lines it spans) or None."""
    i, n = 0, len(lines)
    while i < n:
        found = is_heading(i)
        if found is not None:
            level, title, span = found
            sections.heading(level, title, i, span)
            i += span
            continue
        if not lines[i].strip():
            sections.close(i)
        else:
            sections.line(i)
        i += 1
    sections.close(n)


def _prose(lines: list[str]) -> Split:
    sections = _Sections(lines)
    _paragraphs(lines, sections, lambda i: None)
    return Split(sections.blocks, sections.headings, "prose")


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _markdown(lines: list[str]) -> Split:
    sections = _Sections(lines)
    fence: str | None = None
    fence_start = 0
    n = len(lines)
    i = 0
    while i < n:
        line = lines[i]
        if fence is not None:  # inside a fenced block: one block, no headings
            if line.strip().startswith(fence):
                sections.add(fence_start, i + 1)
                fence = None
            i += 1
            continue
        opened = _FENCE.match(line)
        if opened:
            sections.close(i)
            fence, fence_start = opened.group(1), i
            i += 1
            continue
        atx = _ATX.match(line)
        setext = i + 1 < n and line.strip() and sections._start is None and _SETEXT.match(lines[i + 1])
        if atx or setext:
            level, title, span = (len(atx.group(1)), atx.group(2), 1) if atx else (1 if lines[i + 1].strip()[0] == "=" else 2, line.strip(), 2)
            sections.heading(level, title.strip() or "(untitled)", i, span)
            i += span
            continue
        if not line.strip():
            sections.close(i)
        else:
            sections.line(i)
        i += 1
    if fence is not None:  # an unclosed fence runs to the end of the file
        sections.add(fence_start, n)
    sections.close(n)
    return Split(sections.blocks, sections.headings, "markdown")


_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def _rst(lines: list[str]) -> Split:
    """Section titles are a line underlined (optionally overlined) with one punctuation character;
    levels follow the order in which adornment styles first appear, as docutils does."""
    styles: list[tuple[str, bool]] = []
    n = len(lines)

    def is_heading(i: int) -> tuple[int, str, int] | None:
        over = bool(_RST_ADORNMENT.match(lines[i]))
        title_at = i + 1 if over else i
        if title_at + 1 >= n or not lines[title_at].strip() or _RST_ADORNMENT.match(lines[title_at]):
            return None
        under = _RST_ADORNMENT.match(lines[title_at + 1])
        if not under or len(lines[title_at + 1].rstrip()) < len(lines[title_at].rstrip()):
            return None
        if over and lines[i].strip()[0] != under.group(1):
            return None
        style = (under.group(1), over)
        if style not in styles:
            styles.append(style)
        return styles.index(style) + 1, lines[title_at].strip(), title_at + 2 - i

    sections = _Sections(lines)
    _paragraphs(lines, sections, is_heading)
    return Split(sections.blocks, sections.headings, "rst")


# -- line-oriented formats ----------------------------------------------------------------------------
def _rows(lines: list[str], kind: str, header: bool) -> Split:
    first = 1 if header and len(lines) > 1 else 0
    blocks = [Block(i + 1, i + 1, 0, line) for i, line in enumerate(lines) if i >= first and line.strip()]
    # Every chunk of a table repeats its header row, so the values keep their column names.
    return Split(blocks, [()], kind, prefix=lines[0] if first else "")


def _indented(lines: list[str], kind: str) -> Split:
    """JSON, YAML, TOML, INI: a block starts at each entry of the outermost level that has several
    (a line indented no deeper than that level, not a closing bracket); source code: at a line of
    the outermost indentation after a blank line, so a definition keeps its comments and decorators."""
    indents = [len(line) - len(line.lstrip()) for line in lines]
    content = [i for i, line in enumerate(lines) if line.strip() and not _closer(line)]
    if kind == "data" and len(content) > 2:
        base = min(indents[i] for i in content[1:-1])  # skip a document's opening and closing bracket
    else:
        base = min((indents[i] for i in content), default=0)
    starts = []
    for i in content:
        if indents[i] > base:
            continue
        if kind == "code" and i > 0 and lines[i - 1].strip():
            continue
        starts.append(i)
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    blocks = []
    for start, stop in zip(starts, starts[1:] + [len(lines)]):
        text = "\n".join(lines[start:stop])
        if text.strip():
            blocks.append(Block(start + 1, stop, 0, text))
    return Split(blocks, [()], kind)


def _closer(line: str) -> bool:
    return not line.strip().strip("}]),;")


_SPLITTERS: dict[str, Callable[[list[str]], Split]] = {
    "prose": _prose,
    "markdown": _markdown,
    "rst": _rst,
    "csv": lambda lines: _rows(lines, "csv", header=True),
    "lines": lambda lines: _rows(lines, "lines", header=False),
    "data": lambda lines: _indented(lines, "data"),
    "code": lambda lines: _indented(lines, "code"),
}
