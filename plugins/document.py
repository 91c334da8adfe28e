"""Documents through PyMuPDF: each page gives its text layer and a rendered image, both fed to the backbone.

PDF, and every other format MuPDF opens (EPUB, XPS, MOBI, FB2, CBZ, SVG): a reflowable e-book is
laid out into pages by MuPDF, and its pages are located, chunked and previewed like a PDF's.

The page image goes through the image plugin's vision tower (`ImageAdapter.encode_pixels`), the text
layer through the backbone's own token embeddings; the adapter concatenates the two, so it has no
parameters of its own and fusion treats the document modality as a user of shared weights.

MuPDF parses hostile input in C: it can crash the interpreter or loop forever. Every MuPDF call
therefore runs in a child process (`IsolatedRunner`) where a crash, a hang (`timeout_s`) or a
runaway allocation (`max_memory_mb`) costs the one item in flight, never the batch or the caller.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from pydantic import Field
from torch import nn

from omnisdk import isolation
from omnisdk.errors import OmniError
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
from omnisdk.plugins.image import image_to_tensor

log = logging.getLogger(__name__)

#: The PDF spec lets the "%PDF-" header sit anywhere in the first 1024 bytes.
_HEADER_WINDOW = 1024
#: Formats other than PDF that MuPDF opens, by extension -> MuPDF's filetype name.
OTHER_FORMATS = {".epub": "epub", ".xps": "xps", ".oxps": "xps", ".mobi": "mobi", ".fb2": "fb2", ".cbz": "cbz",
                 ".svg": "svg"}
#: Whole-document text is gathered up to max_text_tokens * this many characters: generous for any
#: tokenizer (English averages about 4), and it keeps a 1000-page book from being read in full
#: only to be truncated to a few hundred tokens.
_CHARS_PER_TOKEN = 8


class DocumentConfig(PluginConfig):
    #: pixels of the rendered page's longer side; the render is then letterboxed to the image tower's
    #: input size. The pixmap is at most render_size^2 RGB pixels whatever the page's declared size.
    render_size: int = Field(224, ge=16, le=4096)
    #: tokens of the text layer kept per item (0: image only); the backbone's max_length also bounds it.
    max_text_tokens: int = Field(192, ge=0)
    #: the page's patch tokens are pooled to a grid of this side; None: the image plugin's token_grid.
    token_grid: int | None = Field(None, ge=1)
    #: PDFs with more pages are refused, by chunk() and by every item from them (hostile page counts).
    max_pages: int = Field(2000, ge=1)
    #: MuPDF rebuilds damaged files (a truncated PDF "opens" with blank, made-up pages); by default
    #: such a file is refused. True indexes whatever MuPDF recovers, with a logged warning.
    allow_repaired: bool = False
    #: run MuPDF in a child process; False runs it in this process (faster to debug, not crash-safe).
    isolate: bool = True
    #: seconds one page (or one page count) may take before its child process is killed.
    timeout_s: float = Field(30.0, gt=0)
    #: address space the child may grow by, in MiB (Linux); None: no limit.
    max_memory_mb: int | None = Field(2048, ge=64)


class DocumentError(OmniError):
    """A PDF (or one page of it) cannot be read; `cause` says why without naming the file."""

    def __init__(self, cause: str, where: str | None = None):
        self.cause = cause
        self.where = where
        super().__init__(f"{where}: {cause}" if where else cause)


# -- reading: these functions run inside the isolated child ------------------------------------------
@dataclass
class PageData:
    """What the child sends back: picklable and small (raw RGB samples, not a PIL image)."""

    text: str
    width: int
    height: int
    samples: bytes
    repaired: str | None = None


def filetype_of(source: str | bytes) -> str:
    """MuPDF's name for the format: by extension for a path, and PDF for bytes or any other path."""
    if isinstance(source, bytes):
        return "pdf"
    return OTHER_FORMATS.get(Path(source).suffix.lower(), "pdf")


def _open_pdf(source: str | bytes, config: DocumentConfig):
    import pymupdf

    pymupdf.TOOLS.reset_mupdf_warnings()
    filetype = filetype_of(source)
    if isinstance(source, bytes):
        doc = pymupdf.open(stream=source, filetype=filetype)
    else:
        doc = pymupdf.open(source, filetype=filetype)
    if filetype == "pdf" and not doc.is_pdf:
        raise DocumentError("not a PDF: MuPDF reads it as another format")
    if doc.needs_pass:
        raise DocumentError("encrypted PDF: a password is required (decrypt it first, e.g. qpdf --decrypt)")
    if doc.is_repaired and not config.allow_repaired:
        raise DocumentError(
            f"damaged PDF (truncated or corrupt: {_mupdf_reason('broken cross-reference table')}); MuPDF would "
            "rebuild it with missing or blank pages. Set the document plugin's allow_repaired = true to index "
            "what it recovers"
        )
    if doc.page_count > config.max_pages:
        raise DocumentError(
            f"the PDF has {doc.page_count} pages, over the limit of {config.max_pages} "
            "(raise the document plugin's max_pages to read it)"
        )
    if doc.page_count == 0:
        raise DocumentError("the PDF has no pages")
    return doc


def count_pages(source: str | bytes, config: DocumentConfig) -> int:
    """Pages of a readable PDF; raises DocumentError for one that every page read would refuse."""
    doc = _open_pdf(source, config)
    try:
        return doc.page_count
    finally:
        doc.close()


def read_page(source: str | bytes, page: int | None, config: DocumentConfig) -> PageData:
    """Text layer and rendered image of a 1-based page; `page=None`: all pages' text, first page's image."""
    import pymupdf

    doc = _open_pdf(source, config)
    try:
        if page is not None and not 1 <= page <= doc.page_count:
            hint = " (pages count from 1)" if page < 1 else ""
            raise DocumentError(f"page {page} of a {doc.page_count}-page PDF{hint}")
        shown = doc[(page or 1) - 1]
        if page is not None:
            text = _clean(shown.get_text())
        else:
            text = _document_text(doc, config.max_text_tokens * _CHARS_PER_TOKEN)
        rect = shown.rect
        if rect.is_empty or rect.is_infinite:
            raise DocumentError(f"page {page or 1} has no usable size ({rect})")
        # Fit the longer side to render_size: the pixmap stays small whatever size the page declares.
        zoom = config.render_size / max(rect.width, rect.height)
        pix = shown.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
        repaired = _mupdf_reason("repaired") if doc.is_repaired else None
        return PageData(text, pix.width, pix.height, bytes(pix.samples), repaired)
    finally:
        doc.close()


def _mupdf_reason(default: str) -> str:
    import pymupdf

    lines = pymupdf.TOOLS.mupdf_warnings().splitlines()
    return "; ".join(lines[:2]) or default


def _clean(text: str) -> str:
    # Layout whitespace (line breaks inside paragraphs, column gaps) costs tokens and carries nothing.
    return " ".join(text.split())


def _document_text(doc, budget: int) -> str:
    parts, used = [], 0
    for page in doc:
        if used >= budget:
            break
        part = _clean(page.get_text())
        if part:
            parts.append(part)
            used += len(part) + 1
    return "\n".join(parts)[:budget]


def failure_cause(exc: BaseException) -> str:
    """A short, user-facing cause for an exception raised while reading a PDF."""
    import pymupdf

    if isinstance(exc, DocumentError):
        return exc.cause
    if isinstance(exc, pymupdf.EmptyFileError):
        return "empty file (0 bytes)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, pymupdf.FileDataError):
        # pymupdf's own message only repeats the file name; MuPDF's warnings say what was wrong.
        return f"not a readable PDF (or e-book): MuPDF cannot parse it ({_mupdf_reason('corrupt or truncated')})"
    if isinstance(exc, MemoryError):
        return "MuPDF ran out of memory (over the document plugin's max_memory_mb?)"
    return f"MuPDF failed: {type(exc).__name__}: {exc}"


# -- isolation -----------------------------------------------------------------------------------------
class IsolatedRunner(isolation.IsolatedRunner):
    """MuPDF jobs one at a time in a child process (omnisdk.isolation): a crash, a hang (`timeout_s`)
    or a memory blow-up (`max_memory_mb`) costs one job, raised as DocumentError with the cause."""

    def __init__(self, isolate: bool = True, timeout_s: float = 30.0, max_memory_mb: int | None = None):
        super().__init__(isolate, timeout_s, max_memory_mb, what="MuPDF", error=DocumentError,
                         preload=("pymupdf",), child_setup=_quiet_mupdf, describe=failure_cause)


def _quiet_mupdf() -> None:
    import pymupdf

    # MuPDF prints repair chatter to stderr; the causes that matter reach the parent in the reply.
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)


# -- the plugin ------------------------------------------------------------------------------------------
def pdf_source(item: Item) -> str | bytes:
    """The path (as str) or bytes MuPDF should open, after cheap checks that need no parser."""
    if item.path is not None:
        path = Path(item.path)
        if not path.exists():
            raise DocumentError("file not found")
        if not path.is_file():
            raise DocumentError("not a file")
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_WINDOW)
        source: str | bytes = str(path)
    elif isinstance(item.data, (bytes, bytearray)):
        source = head = bytes(item.data)
    else:
        raise DocumentError(f"a document item needs a PDF path or PDF bytes, not {type(item.data).__name__}")
    if not head:
        raise DocumentError("empty file (0 bytes)")
    if filetype_of(source) == "pdf" and b"%PDF-" not in head[:_HEADER_WINDOW]:
        raise DocumentError(f"not a PDF: no %PDF- header (it starts with {head[:8]!r})")
    return source


def _page_of(item: Item) -> int | None:
    if item.locator is None:
        return None
    if item.locator.page is None:
        raise DocumentError(f"a document item takes a page locator, not {item.locator}")
    return item.locator.page


class DocumentAdapter(nn.Module):
    """Page pixels -> the image tower's tokens, then the page's text tokens; no parameters of its own."""

    def __init__(self, max_text_tokens: int, token_grid: int | None = None):
        super().__init__()
        self.max_text_tokens = max_text_tokens
        self.token_grid = token_grid
        self._warned = False

    def forward(self, batch: dict, runtime: Runtime) -> TokenEmbeddings:
        tower = runtime.adapter("image")
        if hasattr(tower, "pixel_tokens"):  # a vision-language backbone's tower: tokens with their patch grid
            parts = [tower.pixel_tokens(batch["pixels"], token_grid=self.token_grid)]
        else:
            image = tower.encode_pixels(batch["pixels"], token_grid=self.token_grid)
            parts = [TokenEmbeddings(image, torch.ones(image.shape[:2], dtype=torch.long, device=image.device))]
        image = parts[0].embeds
        # The text gets what the image leaves of the backbone's sequence, so a page never overflows it.
        budget = runtime.content_budget("document")
        room = budget - image.size(1)
        if room < self.max_text_tokens and not self._warned:
            self._warned = True
            log.warning(
                "document pages keep %d text tokens, not max_text_tokens=%d: %d image tokens fill the %d the "
                "backbone leaves for content (lower the document or image token_grid, or raise max_length)",
                max(room, 0), self.max_text_tokens, image.size(1), budget,
            )
        room = min(room, self.max_text_tokens)
        texts = batch["texts"]
        if room > 0 and any(texts):  # a scanned page has no text layer: image tokens alone
            parts.append(runtime.embed_text(texts, max_length=room))
        return TokenEmbeddings.cat(parts)


class DocumentPlugin(ModalityPlugin):
    """PDF pages: the text layer and the rendered page, both fed to the backbone.

    - An item with `Locator(page=n)` (1-based) is that page. An item without a locator is the whole
      document as one vector: the text of all its pages, joined and truncated to max_text_tokens,
      with the image of its first page. `chunk()` gives one located item per page, the way to index.
    - Per-item errors (in `Prepared.errors`, never raised for the batch): missing, empty or non-PDF
      file; encrypted ("encrypted PDF: a password is required"); damaged (truncated, corrupt; see
      allow_repaired); page out of range ("page 5 of a 3-page PDF"); over max_pages; MuPDF crash or
      timeout. A PDF over max_pages is refused whole rather than indexed in part: a silently missing
      tail is worse than a clear error.
    - `chunk()` of a PDF that cannot be read raises DocumentError naming the file and the cause, so
      an indexer can skip that file and go on.
    """

    name = "document"
    version = "0.1.0"
    description = "PDF and e-book pages (EPUB, XPS, MOBI, FB2, CBZ, SVG; text layer and rendered page) through PyMuPDF"
    extra = "document"
    requires = ("pymupdf", "PIL", "timm")
    extensions = (".pdf", *OTHER_FORMATS)
    uses = ("image",)
    Config = DocumentConfig
    instructions = Instructions(query="Find a document page that matches: ", document="A document page: ")
    aspect_prompts = ("the whole page", "its title and topic", "its key terms and figures", "its layout and sections")
    fusion = FusionSpec(shared=["*"])
    training = TrainingDefaults(learning_rate=5e-5, steps=300, batch_size=16)

    def preprocess(self, items: Sequence[Item], runtime: Runtime) -> Prepared:
        from PIL import Image

        adapter = runtime.adapter("image")
        size = runtime.plugin("image").config.image_size  # the tower's input square
        texts, pixels, ok, errors = [], [], [], {}
        with self.runner() as runner:
            for i, item in enumerate(items):
                try:
                    page = runner.run(read_page, pdf_source(item), _page_of(item), self.config)
                except DocumentError as exc:
                    errors[i] = exc.cause
                    continue
                if page.repaired:
                    log.warning("%s: damaged PDF read anyway (allow_repaired): %s", item.label(), page.repaired)
                image = Image.frombytes("RGB", (page.width, page.height), page.samples)
                pixels.append(image_to_tensor(image, size, adapter.mean, adapter.std))
                texts.append(page.text)
                ok.append(i)
        batch = {"pixels": torch.stack(pixels), "texts": texts} if ok else None
        return Prepared(batch=batch, ok=ok, errors=errors)

    def build_adapter(self, ctx: BuildContext) -> nn.Module:
        return DocumentAdapter(self.config.max_text_tokens, self.config.token_grid)

    def preview(self, item: Item, side: int) -> Any:
        """The hit's page (the first without a locator), rendered with its longer side at `side`."""
        from PIL import Image

        config = self.config.model_copy(update={"render_size": side, "max_text_tokens": 0, "isolate": False})
        data = read_page(pdf_source(item), _page_of(item) or 1, config)
        return Image.frombytes("RGB", (data.width, data.height), data.samples)

    def runner(self) -> IsolatedRunner:
        """A context manager that reads PDFs under this plugin's isolation settings."""
        return IsolatedRunner(self.config.isolate, self.config.timeout_s, self.config.max_memory_mb)

    def chunk(self, item: Item) -> list[Item]:
        """One item per page, `Locator(page=n)` from 1; a located item is returned as it is."""
        if item.locator is not None:
            return [item]
        try:
            with self.runner() as runner:
                count = runner.run(count_pages, pdf_source(item), self.config)
        except DocumentError as exc:
            raise DocumentError(exc.cause, where=item.label()) from None
        return [item.with_locator(Locator(page=n)) for n in range(1, count + 1)]

    def length_hint(self, item: Item) -> int:
        return 0


@hookimpl
def omnisdk_register_modalities(register):
    register(DocumentPlugin)
