"""Documents: PDFs of one to three pages; each page is one retrievable item (its locator names it).

A page holds a heading (a standard-library name such as `shutil.copytree`) and a paragraph of real
prose (that name's docstring, vendored in assets/stdlib_docs.json so pages do not change with the
Python version). About half the pages also show a rendered scene with its caption below it.

Queries are key sentences of a page: its first sentence, a later sentence, and for a page with a
picture, the picture's caption; each finds exactly that page. Every paragraph is used once in the
whole dataset, and train, dev and test draw from disjoint modules, so no test page's subject was
seen in training.
"""
from __future__ import annotations

import io
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from omnisdk.datasets.omniworld.common import SPLITS, DomainSettings, Sample, relpath
from omnisdk.datasets.omniworld.scenes import scene_spec
from omnisdk.errors import OmniError

DOMAIN = "documents"
ASSET = Path(__file__).with_name("assets") / "stdlib_docs.json"
PAGE_WIDTH, PAGE_HEIGHT = 420, 595  # points: A5 portrait
MARGIN = 36
PICTURE_SIZE = 160  # points
PICTURE_PROBABILITY = 0.5
# Fixed metadata: PyMuPDF would otherwise stamp the current time and a random file id.
METADATA = {"title": "", "author": "OmniWorld", "subject": "", "keywords": "", "creator": "omnisdk",
            "producer": "omnisdk", "creationDate": "D:20260101000000Z", "modDate": "D:20260101000000Z"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=['\"A-Z])")


@lru_cache(maxsize=1)
def paragraphs() -> tuple[dict[str, str], ...]:
    """The vendored (name, module, text) entries, in file order."""
    return tuple(json.loads(ASSET.read_text(encoding="utf-8"))["entries"])


def generate(root: Path, settings: DomainSettings) -> list[Sample]:
    """Write documents/<split>/<id>.pdf; `settings.counts` counts pages. Samples (pages) sorted by id."""
    import pymupdf

    pools = split_entries(settings)
    samples: list[Sample] = []
    total = sum(settings.counts.get(split, 0) for split in SPLITS)
    with tqdm(total=total, desc=DOMAIN, unit="page", disable=not sys.stderr.isatty(), leave=False) as bar:
        for split in SPLITS:
            folder = root / DOMAIN / split
            folder.mkdir(parents=True, exist_ok=True)
            entries = iter(pools[split])
            remaining, index = settings.counts.get(split, 0), 0
            while remaining > 0:
                rng = settings.rng(f"{DOMAIN}:{split}:{index}")
                pages = [next(entries) for _ in range(min(remaining, int(rng.integers(1, 4))))]
                doc_id = f"{DOMAIN}-{split}-{index:05d}"
                path = folder / f"{doc_id}.pdf"
                samples += write_document(pymupdf, path, root, doc_id, split, pages, rng, settings)
                remaining -= len(pages)
                index += 1
                bar.update(len(pages))
    _drop_ambiguous_picture_queries(samples)
    return sorted(samples, key=lambda s: s.id)


def _drop_ambiguous_picture_queries(samples: list[Sample]) -> None:
    """A figure caption that two pages of one split share would find both: keep it as a query of neither."""
    counts: dict[tuple[str, str], int] = {}
    for s in samples:
        for q in s.queries[2:]:
            counts[(s.split, q)] = counts.get((s.split, q), 0) + 1
    for s in samples:
        s.queries = s.queries[:2] + [q for q in s.queries[2:] if counts[(s.split, q)] == 1]


def split_entries(settings: DomainSettings) -> dict[str, list[dict[str, str]]]:
    """Paragraphs per split, from disjoint sets of modules, each list in a seeded order.

    Modules are dealt to test, dev and train in proportion to the pages each split needs; a split
    whose modules run short of paragraphs borrows none from another (that would leak subjects).
    """
    entries = paragraphs()
    wanted = {split: settings.counts.get(split, 0) for split in SPLITS}
    if sum(wanted.values()) > len(entries):
        raise OmniError(f"the documents domain has {len(entries)} paragraphs; {sum(wanted.values())} pages "
                        f"were asked for ({wanted}); lower the counts")
    rng = settings.rng(f"{DOMAIN}:splits")
    by_module: dict[str, list[dict[str, str]]] = {}
    for entry in entries:
        by_module.setdefault(entry["module"], []).append(entry)
    modules = [sorted(by_module)[i] for i in rng.permutation(len(by_module))]
    total = sum(wanted.values()) or 1
    out: dict[str, list[dict[str, str]]] = {split: [] for split in SPLITS}
    for module in modules:  # each module goes to the split furthest below its share of paragraphs
        split = min(SPLITS, key=lambda s: (len(out[s]) - len(entries) * wanted[s] / total, SPLITS.index(s)))
        out[split] += by_module[module]
    for split in SPLITS:
        order = rng.permutation(len(out[split]))
        out[split] = [out[split][i] for i in order]
        if len(out[split]) < wanted[split]:
            raise OmniError(f"the documents domain has only {len(out[split])} paragraphs for the {split} split, "
                            f"{wanted[split]} pages were asked for; lower the counts")
    return out


def write_document(pymupdf, path: Path, root: Path, doc_id: str, split: str, pages: list[dict[str, str]],
                   rng: np.random.Generator, settings: DomainSettings) -> list[Sample]:
    """Write one PDF with these pages; one Sample per page."""
    doc = pymupdf.open()
    samples = []
    for number, entry in enumerate(pages, start=1):
        page = doc.new_page(width=PAGE_WIDTH, height=PAGE_HEIGHT)
        picture = None
        if rng.random() < PICTURE_PROBABILITY:
            picture = scene_spec(settings, split, _picture_index(doc_id, number), salt=f"{DOMAIN}:figure")
        _lay_out(pymupdf, page, entry, picture, number, len(pages))
        samples.append(_page_sample(entry, picture, doc_id, split, number, relpath(path, root), rng))
    doc.set_metadata(METADATA)
    doc.save(path, garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return samples


def _picture_index(doc_id: str, page: int) -> int:
    return int(doc_id.rsplit("-", 1)[1]) * 3 + page  # at most 3 pages per document: distinct per page


def _lay_out(pymupdf, page, entry: dict[str, str], picture: dict[str, Any] | None, number: int, count: int) -> None:
    width = PAGE_WIDTH - 2 * MARGIN
    # Long dotted names shrink to one line (down to 10 pt) rather than run off the page.
    size = 15.0
    while size > 10 and pymupdf.get_text_length(entry["name"], fontname="hebo", fontsize=size) > width:
        size -= 0.5
    page.insert_text((MARGIN, MARGIN + 16), entry["name"], fontname="hebo", fontsize=size)
    body = pymupdf.Rect(MARGIN, MARGIN + 32, MARGIN + width, PAGE_HEIGHT - MARGIN - 24)
    if picture is not None:
        body.y1 = PAGE_HEIGHT - MARGIN - PICTURE_SIZE - 66
    spare = page.insert_textbox(body, entry["text"], fontname="helv", fontsize=10.5, align=0)
    if spare < 0:
        raise OmniError(f"the paragraph of {entry['name']} does not fit its page")
    if picture is not None:
        top = body.y1 - spare + 14  # just below the paragraph's last line
        left = (PAGE_WIDTH - PICTURE_SIZE) / 2
        png = io.BytesIO()
        Image.fromarray(picture["pixels"]).save(png, format="PNG")
        page.insert_image(pymupdf.Rect(left, top, left + PICTURE_SIZE, top + PICTURE_SIZE), stream=png.getvalue())
        caption = pymupdf.Rect(MARGIN, top + PICTURE_SIZE + 4, MARGIN + width, top + PICTURE_SIZE + 40)
        if page.insert_textbox(caption, f"Figure: {picture['captions'][0]}", fontname="heit", fontsize=9, align=1) < 0:
            raise OmniError(f"the figure caption of {entry['name']} does not fit its page")
    page.insert_text((PAGE_WIDTH / 2 - 20, PAGE_HEIGHT - MARGIN / 2), f"page {number} of {count}",
                     fontname="helv", fontsize=8)


def _page_sample(entry: dict[str, str], picture: dict[str, Any] | None, doc_id: str, split: str, number: int,
                 path: str, rng: np.random.Generator) -> Sample:
    sentences = SENTENCE_END.split(entry["text"])
    queries = [sentences[0]]
    if len(sentences) > 1:
        queries.append(sentences[1 + int(rng.integers(len(sentences) - 1))])
    if picture is not None:
        queries.append(f"the page with a picture of {picture['captions'][0]}")
    attributes: dict[str, Any] = {"name": entry["name"], "module": entry["module"], "page": number}
    if picture is not None:
        attributes["picture"] = [{k: o[k] for k in ("colour", "shape", "size", "position")}
                                 for o in picture["objects"]]
    return Sample(id=f"{doc_id}-p{number}", domain=DOMAIN, split=split, modality="document", path=path,
                  captions=[f"{entry['name']}: {sentences[0]}"], locator={"page": number}, queries=queries,
                  attributes=attributes)
