"""Real PDF files for tests, written with PyMuPDF: text pages, an embedded PNG, a scanned-like page,
an encrypted file, and the damaged kinds (truncated, empty, not a PDF at all)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pymupdf

A4 = (595, 842)  # points


@dataclass(frozen=True)
class PageSpec:
    """One page: an optional heading and paragraph, an optional embedded PNG, an optional drawn shape."""

    heading: str | None = None
    body: str | None = None
    image_rgb: tuple[int, int, int] | None = None
    shape: bool = False


#: Three distinct pages: text only, text with a picture, and no text layer at all (like a scan).
SAMPLE_PAGES = (
    PageSpec(
        heading="Solar Energy Report",
        body="Photovoltaic panels convert sunlight into electricity. Output rises with irradiance and "
        "falls with temperature; this page compares crystalline and thin film modules.",
    ),
    PageSpec(
        heading="Harbour Logistics",
        body="Container cranes unload ships at the quay. The figure shows the berth layout and the "
        "queue of trucks waiting at the terminal gate.",
        image_rgb=(220, 40, 40),
    ),
    PageSpec(shape=True),
)


def png_bytes(rgb: tuple[int, int, int], side: int = 48) -> bytes:
    """A small PNG: a solid square with a contrasting band, so it renders as more than one colour."""
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, side, side), False)
    pix.set_rect(pix.irect, rgb)
    pix.set_rect(pymupdf.IRect(0, side // 3, side, 2 * side // 3), tuple(255 - c for c in rgb))
    return pix.tobytes("png")


def _draw_page(doc: pymupdf.Document, spec: PageSpec, size: tuple[float, float]) -> None:
    page = doc.new_page(width=size[0], height=size[1])
    margin = 0.1 * size[0]
    if spec.heading:
        page.insert_text((margin, margin + 20), spec.heading, fontsize=20)
    if spec.body:
        box = pymupdf.Rect(margin, margin + 40, size[0] - margin, size[1] / 2)
        left = page.insert_textbox(box, spec.body, fontsize=11)
        assert left >= 0, "test paragraph does not fit its box"
    if spec.image_rgb is not None:
        where = pymupdf.Rect(margin, size[1] / 2, size[0] / 2, size[1] / 2 + size[0] / 3)
        page.insert_image(where, stream=png_bytes(spec.image_rgb))
    if spec.shape:
        band = pymupdf.Rect(margin, margin, size[0] - margin, size[1] / 3)
        page.draw_rect(band, color=(0, 0, 0), fill=(0.1, 0.3, 0.8))
        page.draw_circle((size[0] / 2, 2 * size[1] / 3), size[0] / 5, color=(0, 0, 0), fill=(0.9, 0.7, 0.1))


def _document(pages, size) -> pymupdf.Document:
    doc = pymupdf.open()
    for spec in pages:
        _draw_page(doc, spec, size)
    return doc


def write_pdf(path: str | Path, pages: tuple[PageSpec, ...] | list[PageSpec] = SAMPLE_PAGES, size=A4) -> Path:
    """Write a PDF with one page per spec (default: SAMPLE_PAGES) and return its path."""
    path = Path(path)
    with _document(pages, size) as doc:
        doc.save(path, garbage=3, deflate=True)
    return path


def write_encrypted_pdf(path: str | Path, user_pw: str = "secret", pages=SAMPLE_PAGES) -> Path:
    """A PDF that needs a user password to read (AES-256)."""
    path = Path(path)
    with _document(pages, A4) as doc:
        doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=user_pw, owner_pw=user_pw + "-owner")
    return path


def write_truncated_pdf(path: str | Path, source: str | Path, keep: float | int) -> Path:
    """A copy of `source` cut short: `keep` is a fraction of its size (float) or a byte count (int)."""
    data = Path(source).read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    path = Path(path)
    path.write_bytes(data[:size])
    return path


def write_empty_pdf(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_not_pdf(path: str | Path) -> Path:
    """A PNG saved under a .pdf name: MuPDF would happily open it as an image document."""
    path = Path(path)
    path.write_bytes(png_bytes((10, 200, 10)))
    return path
