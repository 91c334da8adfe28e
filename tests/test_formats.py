"""More formats on real files: e-books through MuPDF (page locators), text formats through the text
plugin, and hostile samples of each: a clear error per file, nothing else lost."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from omnisdk.items import Item, Locator

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"""
OPF = """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">test-book</dc:identifier>
<dc:title>Test book</dc:title><dc:language>en</dc:language></metadata>
<manifest>{items}</manifest><spine>{spine}</spine></package>"""
CHAPTER = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>"""


def write_epub(path: Path, chapters: int = 3, paragraphs: int = 40) -> Path:
    """A minimal valid EPUB 3, written as the spec says: an uncompressed mimetype first, then XHTML."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr("META-INF/container.xml", CONTAINER)
        items = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(chapters))
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(chapters))
        z.writestr("OEBPS/content.opf", OPF.format(items=items, spine=spine))
        for i in range(chapters):
            body = "".join(f"<p>Chapter {i} paragraph {k}: the lighthouse keeper logs the weather.</p>" for k in range(paragraphs))
            z.writestr(f"OEBPS/c{i}.xhtml", CHAPTER.format(title=f"Chapter {i}", body=body))
    return path


def write_fb2(path: Path) -> Path:
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0">'
        "<description><title-info><book-title>Tides</book-title></title-info></description>"
        "<body><section><title><p>One</p></title><p>The tide turns at noon.</p></section></body></FictionBook>\n"
    )
    return path


def write_svg(path: Path) -> Path:
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80">'
                    '<rect x="10" y="10" width="60" height="40" fill="red"/><text x="10" y="75">label</text></svg>')
    return path


def write_cbz(path: Path) -> Path:
    from PIL import Image

    with zipfile.ZipFile(path, "w") as z:
        for i, rgb in enumerate(((200, 40, 40), (40, 40, 200))):
            image = path.parent / f"p{i}.png"
            Image.new("RGB", (40, 60), rgb).save(image)
            z.write(image, f"page{i:02d}.png")
    return path


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(modalities=["text", "image", "document"])


def test_ebooks_and_other_mupdf_formats_chunk_by_page_and_embed(model, tmp_path):
    epub = write_epub(tmp_path / "book.epub")
    files = [epub, write_fb2(tmp_path / "tides.fb2"), write_svg(tmp_path / "figure.svg"), write_cbz(tmp_path / "comic.cbz")]
    plugin = model.plugins["document"]
    chunks = {}
    for path in files:
        assert model.detect(Item.of_file(path)) == "document"
        chunks[path.suffix] = plugin.chunk(Item.of_file(path, "document"))
    assert len(chunks[".epub"]) >= 3 and [c.locator.page for c in chunks[".epub"]] == list(range(1, len(chunks[".epub"]) + 1))
    assert len(chunks[".cbz"]) == 2 and len(chunks[".svg"]) == 1 and len(chunks[".fb2"]) >= 1
    from omnisdk.plugins.document import DocumentConfig, read_page

    page = read_page(str(epub), 1, DocumentConfig(render_size=64))
    assert "lighthouse keeper" in page.text and page.width > 0
    items = [c for group in chunks.values() for c in group]
    vectors, failures = model.encode(items, role="document", errors="ignore", return_errors=True, show_progress=False)
    assert not failures and np.isfinite(vectors).all()


def test_hostile_samples_fail_one_file_each_with_a_clear_cause(model, tmp_path):
    good_epub = write_epub(tmp_path / "good.epub", chapters=1, paragraphs=3)
    truncated = tmp_path / "truncated.epub"
    truncated.write_bytes(good_epub.read_bytes()[: good_epub.stat().st_size // 2])
    (tmp_path / "garbage.epub").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "garbage.fb2").write_bytes(b"\xff\xfe not xml at all \x00\x01")
    (tmp_path / "empty.mobi").write_bytes(b"")
    (tmp_path / "binary.json").write_bytes(b"\x00\x01\x02{" * 100)
    (tmp_path / "cut.html").write_text("<html><body><h1>Title</h1><p>unclosed <b>bold <i>text")
    (tmp_path / "notes.md").write_text("# Fine\n\nstill indexed\n")
    names = ["truncated.epub", "garbage.epub", "garbage.fb2", "empty.mobi", "binary.json", "cut.html", "notes.md", "good.epub"]
    causes: dict[str, str] = {}
    items = []
    for name in names:
        item = Item.of_file(tmp_path / name)
        modality = model.detect(item)
        try:
            items += model.plugins[modality].chunk(item.with_modality(modality))
        except Exception as exc:  # the indexer's contract: chunk() raises for this one file, with a cause
            causes[name] = getattr(exc, "cause", None) or str(exc)
    assert set(causes) == {"truncated.epub", "garbage.epub", "empty.mobi", "binary.json"}, causes
    assert causes["empty.mobi"] == "empty file (0 bytes)" and "NUL" in causes["binary.json"]
    assert all("MuPDF" in causes[n] for n in ("truncated.epub", "garbage.epub")), causes
    # MuPDF's XML reader is lenient: garbage named .fb2 opens as a blank page (embedded, harmless).
    assert [i.locator.page for i in items if i.path.name == "garbage.fb2"] == [1]
    vectors, failures = model.encode(items, role="document", errors="ignore", return_errors=True, show_progress=False)
    assert not failures and np.isfinite(vectors).all()
    cut = [i for i in items if i.path.name == "cut.html"]
    assert cut[0].text == "Title\n\nunclosed bold text" and cut[0].locator == Locator(line0=1, line1=1, heading=("Title",))
