"""OmniWorld's still domains: scenes (PNG), digits (real PNG) and documents (PDF), read back with real decoders."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnisdk.datasets.omniworld import digits, documents, scenes
from omnisdk.datasets.omniworld.common import DomainSettings
from omnisdk.datasets.omniworld.draw import COLOURS, nearest_colour

COUNTS = {"train": 24, "dev": 8, "test": 12}


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("module", [scenes, digits, documents], ids=lambda m: m.DOMAIN)
def test_the_same_seed_gives_byte_identical_files_and_another_seed_does_not(module, tmp_path):
    settings = DomainSettings(counts=COUNTS, seed=3)
    first = module.generate(tmp_path / "a", settings)
    second = module.generate(tmp_path / "b", settings)
    other = module.generate(tmp_path / "c", DomainSettings(counts=COUNTS, seed=4))
    assert hashes(tmp_path / "a") == hashes(tmp_path / "b") and len(hashes(tmp_path / "a")) > 0
    assert hashes(tmp_path / "a") != hashes(tmp_path / "c")
    assert [s.id for s in first] == [s.id for s in second]
    assert all((tmp_path / "a" / s.path).is_file() for s in first)


def test_scene_pixels_agree_with_their_captions(tmp_path):
    settings = DomainSettings(counts=COUNTS, seed=0)
    samples = scenes.generate(tmp_path, settings)
    for sample in samples:
        split, index = sample.split, int(sample.id.rsplit("-", 1)[1])
        spec = scenes.scene_spec(settings, split, index)
        pixels = np.asarray(Image.open(tmp_path / sample.path).convert("RGB"))
        assert pixels.shape == (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, 3)
        for obj in spec["objects"]:
            # The median over a small patch at the centre removes the pixel noise.
            x, y = int(round(obj["x"])), int(round(obj["y"]))
            patch = pixels[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3)
            assert nearest_colour(np.median(patch, axis=0)) == obj["colour"], (sample.id, obj)
            phrase = f"{obj['size']} {obj['colour']} {obj['shape']} {scenes.POSITION_WORDS[obj['position']]}"
            assert phrase in sample.captions[0]
        assert 1 <= len(spec["objects"]) <= 3 and len(sample.captions) >= 3


def test_held_out_colour_shape_pairs_never_train_and_lead_every_evaluation_scene(tmp_path):
    settings = DomainSettings(counts={"train": 120, "dev": 20, "test": 30}, seed=1)
    held = set(scenes.scene_held_out(settings))
    assert len(held) == scenes.HELD_OUT
    assert len({c for c, _ in held}) == len(held) == len({s for _, s in held})  # parts still seen in train
    for sample in scenes.generate(tmp_path, settings):
        pairs = {(o["colour"], o["shape"]) for o in sample.attributes["objects"]}
        if sample.split == "train":
            assert not pairs & held, sample.id
        else:
            assert pairs & held, sample.id


def test_digits_are_balanced_real_and_disjoint_across_splits(tmp_path):
    from sklearn.datasets import load_digits

    targets = load_digits().target
    samples = digits.generate(tmp_path, DomainSettings(counts={"train": 50, "dev": 20, "test": 30}, seed=0))
    for split, expected in (("dev", 2), ("test", 3), ("train", 5)):
        assert Counter(s.label for s in samples if s.split == split) == {w: expected for w in digits.WORDS}
    sources = [s.attributes["source_index"] for s in samples]
    assert len(sources) == len(set(sources))  # no image in two splits
    for sample in samples:
        assert digits.WORDS[targets[sample.attributes["source_index"]]] == sample.label
        assert sample.captions[0] == f"a handwritten digit {sample.label}"
        image = Image.open(tmp_path / sample.path)
        assert image.size == (digits.IMAGE_SIZE, digits.IMAGE_SIZE) and image.mode == "RGB"
        assert np.asarray(image).min() < 100  # there is ink on the page


def test_digits_refuse_more_images_than_exist(tmp_path):
    from omnisdk.errors import OmniError

    with pytest.raises(OmniError, match="holds 1797 images"):
        digits.generate(tmp_path, DomainSettings(counts={"train": 1800}, seed=0))


def test_document_pages_hold_their_heading_paragraph_queries_and_picture(tmp_path):
    import pymupdf

    samples = documents.generate(tmp_path, DomainSettings(counts=COUNTS, seed=2))
    assert Counter(s.split for s in samples) == COUNTS  # counts are pages
    by_file: dict[str, list] = {}
    for s in samples:
        by_file.setdefault(s.path, []).append(s)
    for path, pages in by_file.items():
        with pymupdf.open(tmp_path / path) as doc:
            assert doc.page_count == len(pages) and 1 <= doc.page_count <= 3
            assert doc.metadata["creationDate"] == documents.METADATA["creationDate"]
            for sample in pages:
                page = doc[sample.locator["page"] - 1]
                text = " ".join(page.get_text().split())
                assert sample.attributes["name"] in text
                for query in sample.queries:
                    assert query.removeprefix("the page with a picture of ") in text, (sample.id, query)
                assert len(page.get_images()) == (1 if "picture" in sample.attributes else 0)
    modules = {split: {s.attributes["module"] for s in samples if s.split == split} for split in COUNTS}
    assert not modules["train"] & modules["test"] and not modules["train"] & modules["dev"]
    for split in COUNTS:  # a query finds one page only
        texts = [q for s in samples if s.split == split for q in s.queries]
        assert len(texts) == len(set(texts))


def test_the_vendored_paragraphs_are_prose_and_unique():
    entries = documents.paragraphs()
    assert len(entries) > 1000
    assert len({e["text"] for e in entries}) == len(entries)
    assert all(e["text"].isascii() and e["name"].startswith(e["module"]) for e in entries)


def test_colour_palette_is_far_apart():
    values = np.array(list(COLOURS.values()), dtype=float)
    distances = np.linalg.norm(values[:, None] - values[None], axis=-1)
    assert distances[~np.eye(len(values), dtype=bool)].min() > 60
