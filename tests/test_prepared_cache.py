"""The prepared-input cache: identical batches, hits across processes' stores, misses on changed
settings, corrupt shards rebuilt, and training that gives the same weights with or without it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnisdk.items import Item, Locator
from omnisdk.prepared import PreparedCache, namespace
from omnisdk.presets import build_base
from media.audio import write_wav
from media.pdf import write_pdf
from media.video import write_mp4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate([(40, 30), (64, 64), (20, 90)]):
        path = root / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        images.append(path)
    return {
        "root": root,
        "image": images,
        "audio": [write_wav(root / "a0.wav", 0.7, freq=300), write_wav(root / "a1.wav", 1.3, freq=900)],
        "video": [write_mp4(root / "v0.mp4")],
        "document": [write_pdf(root / "d0.pdf")],
    }


def _items(files) -> dict[str, list[Item]]:
    return {
        "image": [Item.of_file(p, modality="image") for p in files["image"]],
        "audio": [Item.of_file(p, modality="audio") for p in files["audio"]],
        "video": [Item.of_file(p, modality="video") for p in files["video"]],
        "document": [Item.of_file(files["document"][0], modality="document", locator=Locator(page=n)) for n in (1, 2)],
        "text": [Item.of_text("a red circle"), Item.of_text("a much longer caption about a green square moving left")],
    }


def _assert_same_batch(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            _assert_same_batch(a[key], b[key])
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("modality", ["image", "audio", "video", "document", "text"])
def test_cached_batches_equal_freshly_prepared_ones(files, tmp_path, modality):
    model = build_base("tiny")
    items = _items(files)[modality]
    plain = model.prepare(modality, items, "query")
    model.use_cache(tmp_path / "cache")
    first = model.prepare(modality, items, "query")
    assert model.prepared_cache.stats.misses == len(items) and model.prepared_cache.stats.hits == 0
    model.prepared_cache.flush()
    # A new cache object over the same directory reads the shards from disk.
    again = build_base("tiny").use_cache(tmp_path / "cache")
    second = again.prepare(modality, items, "query")
    assert again.prepared_cache.stats.hits == len(items) and again.prepared_cache.stats.misses == 0
    assert plain.ok == first.ok == second.ok == list(range(len(items)))
    _assert_same_batch(plain.batch, first.batch)
    _assert_same_batch(plain.batch, second.batch)


def test_rows_mix_cached_and_fresh_items_and_bad_items_keep_their_cause(files, tmp_path):
    model = build_base("tiny").use_cache(tmp_path / "cache")
    images = _items(files)["image"]
    model.prepare("image", images[:2])
    missing = Item.of_file(files["root"] / "nope.png", modality="image")
    mixed = [images[2], missing, images[0]]
    prepared = model.prepare("image", mixed)
    assert prepared.ok == [0, 2] and "nope.png" in prepared.errors[1]
    _assert_same_batch(prepared.batch, build_base("tiny").prepare("image", [images[2], images[0]]).batch)


def test_a_changed_plugin_setting_misses(files, tmp_path):
    items = _items(files)["image"]
    small = build_base("tiny").use_cache(tmp_path / "cache")
    small.prepare("image", items)
    small.prepared_cache.flush()
    bigger = build_base("tiny", overrides={"image": {"image_size": 48}}).use_cache(tmp_path / "cache")
    assert namespace(bigger, "image") != namespace(small, "image")
    # The video and document plugins use the image plugin's settings, so their rows change with it too.
    assert namespace(bigger, "video") != namespace(small, "video")
    prepared = bigger.prepare("image", items)
    assert bigger.prepared_cache.stats.misses == len(items) and bigger.prepared_cache.stats.hits == 0
    assert prepared.batch["pixels"].shape[-1] == 48


def test_a_corrupt_shard_is_detected_removed_and_rebuilt(files, tmp_path):
    items = _items(files)["image"]
    model = build_base("tiny").use_cache(tmp_path / "cache")
    expected = model.prepare("image", items).batch
    model.prepared_cache.flush()
    shards = list((tmp_path / "cache").glob("image-*/*.safetensors"))
    assert len(shards) == 1
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit inside the pixel data
    shards[0].write_bytes(bytes(data))

    reader = build_base("tiny").use_cache(tmp_path / "cache")
    prepared = reader.prepare("image", items)
    assert reader.prepared_cache.store.rebuilt == [str(shards[0])] and not shards[0].exists()
    assert reader.prepared_cache.stats.misses == len(items)
    _assert_same_batch(prepared.batch, expected)
    reader.prepared_cache.flush()
    assert len(list((tmp_path / "cache").glob("image-*/*.safetensors"))) == 1


def test_a_batch_that_cannot_be_stored_is_served_uncached(tmp_path):
    """A third-party plugin whose batch is a bare tensor still works; it is just not cached."""
    from omnisdk.modality import Prepared

    model = build_base("tiny", modalities=["text"]).use_cache(tmp_path / "cache")
    plugin = model.plugins["text"]
    original = type(plugin).preprocess

    def bare(self, items, runtime):
        prepared = original(self, items, runtime)
        return Prepared(batch=prepared.batch["input_ids"], ok=prepared.ok, errors=prepared.errors)

    type(plugin).preprocess = bare
    try:
        prepared = model.prepare("text", [Item.of_text("hello")])
        again = model.prepare("text", [Item.of_text("hello")])
    finally:
        type(plugin).preprocess = original
    assert isinstance(prepared.batch, torch.Tensor) and torch.equal(prepared.batch, again.batch)
    assert model.prepared_cache.stats.uncached == 2 and model.prepared_cache.stats.hits == 0


def test_training_with_the_cache_gives_the_same_weights_as_decoding_every_step(tmp_path):
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.trainers.stages import train_specialist

    data = tmp_path / "data"
    make_omniworld(data, domains=("scenes",))
    base = tmp_path / "base"
    build_base("tiny", modalities=["text", "image"]).save(base)
    settings = {"steps": 3, "batch_size": 4, "hard_negatives": 1, "learning_rate": 1e-3}
    plain = train_specialist(base, "image", data, tmp_path / "plain", settings, show_progress=False, cache=None)
    cached = train_specialist(base, "image", data, tmp_path / "cached", settings, show_progress=False,
                              cache=tmp_path / "cache")
    assert plain.fingerprint == cached.fingerprint
    assert any((tmp_path / "cache").glob("image-*/*.safetensors"))
    manifest = json.loads((tmp_path / "cached" / "omnisdk.json").read_text())
    assert manifest["fingerprint"] == cached.fingerprint
