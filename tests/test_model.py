"""OmniModel.encode: order, normalisation, pooling, framing, truncation, error policies."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from omnisdk.errors import ItemErrors
from omnisdk.items import Item
from omnisdk.modality import TokenEmbeddings
from omnisdk.model import OmniModel


def write_png(path: Path, colour=(255, 0, 0), size=(40, 30)) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill=colour)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(["text", "image"])


def test_mixed_batch_is_in_input_order_and_unit_norm(model, tmp_path):
    red, blue = write_png(tmp_path / "red.png"), write_png(tmp_path / "blue.png", (0, 0, 255))
    items = ["a red circle", red, "a much longer sentence about a blue square at the top", blue, "x"]
    vectors = model.encode(items, batch_size=2)
    assert vectors.shape == (5, model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i, item in enumerate(items):  # each row is that item's own embedding
        np.testing.assert_allclose(model.encode([item])[0], vectors[i], atol=1e-5)
    assert not np.allclose(vectors[1], vectors[3])


def test_token_concatenation_packs_real_tokens_left():
    a = TokenEmbeddings(torch.tensor([[[1.0], [2.0], [0.0]], [[5.0], [0.0], [0.0]]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    b = TokenEmbeddings(torch.tensor([[[3.0]], [[6.0]]]), torch.tensor([[1], [1]]))
    out = TokenEmbeddings.cat([a, b])
    assert out.mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out.embeds[:, :, 0].tolist() == [[1.0, 2.0, 3.0], [5.0, 6.0, 0.0]]


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_pooling_is_independent_of_padding_on_bert_and_qwen2(pooling, tiny_model_factory):
    from transformers import Qwen2Config, Qwen2Model

    bert = tiny_model_factory(["text", "image"])
    torch.manual_seed(0)
    qwen = Qwen2Model(Qwen2Config(vocab_size=len(bert.tokenizer), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, intermediate_size=64))
    for backbone, tokenizer in ((bert.backbone, bert.tokenizer), (qwen, bert.tokenizer)):
        model = OmniModel.create(backbone, tokenizer, ["text"], pooling=pooling)
        texts = ["short", "a considerably longer text with many more tokens in it"]
        batched = model.encode(texts)
        single = np.stack([model.encode([t])[0] for t in texts])
        np.testing.assert_allclose(batched, single, atol=1e-5)


def test_text_longer_than_max_length_is_truncated_at_the_end(tiny_model_factory):
    model = tiny_model_factory(["text"], overrides={"text": {"max_length": 12}})
    head = "red circle blue square " * 10
    a, b, short = model.encode([head + "green star", head + "yellow triangle", "red circle"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the differing tail lies past the 12 tokens kept
    assert not np.allclose(a, short, atol=1e-3)
    ids = model.prepare("text", [Item.of_text(head)]).batch["input_ids"]
    assert ids.shape[1] == 12 and ids[0, -1].item() == model.tokenizer.sep_token_id


def test_roles_prepend_the_plugins_instructions(model, tmp_path):
    png = write_png(tmp_path / "a.png")
    plain, query = model.encode([png])[0], model.encode([png], role="query")[0]
    assert not np.allclose(plain, query, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(query), 1.0, atol=1e-5)


def test_a_text_file_keeps_its_content_under_a_role_instruction(model, tmp_path):
    from omnisdk.modality import Instructions

    note = tmp_path / "note.txt"
    note.write_text("the red circle sits on the left of the page")
    text_plugin = model.plugins["text"]
    saved = text_plugin.instructions
    text_plugin.instructions = Instructions(query="query: ", document="")
    try:
        from_file = model.encode([Item.of_file(note, "text")], role="query")[0]
        from_text = model.encode([note.read_text()], role="query")[0]
        instruction_only = model.encode([""], role="query")[0]
    finally:
        text_plugin.instructions = saved
    np.testing.assert_allclose(from_file, from_text, atol=1e-5)
    assert not np.allclose(from_file, instruction_only, atol=1e-3)


def test_encode_reports_decode_and_model_time_to_a_timer(model, tmp_path):
    from omnisdk.timing import PhaseTimer

    timer = PhaseTimer()
    model.encode([write_png(tmp_path / "a.png"), "some text"], timer=timer)
    assert set(timer.seconds) == {"decode", "encode"} and min(timer.seconds.values()) > 0


def test_error_policies_keep_good_rows(model, tmp_path):
    good = write_png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    vectors, errors = model.encode([good, bad, "text"], errors="ignore", return_errors=True)
    assert [e.index for e in errors] == [1] and "cannot identify image" in errors[0].cause
    assert np.isnan(vectors[1]).all() and not np.isnan(vectors[[0, 2]]).any()
    with pytest.warns(UserWarning, match="bad.png"):
        model.encode([good, bad])
    with pytest.raises(ItemErrors) as info:
        model.encode([good, bad], errors="raise")
    assert info.value.errors[0].index == 1 and not np.isnan(info.value.embeddings[0]).any()


def test_unknown_and_absent_modalities_are_reported_per_item(model, tmp_path):
    weird = tmp_path / "data.xyz"
    weird.write_bytes(b"not a known format")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vectors, errors = model.encode(["ok", weird, Item(modality="audio", text="beep")], return_errors=True)
    causes = {e.index: e.cause for e in errors}
    assert "no installed plugin accepts file type '.xyz'" in causes[1]
    assert "modality 'audio' is not part of this model" in causes[2]
    assert not np.isnan(vectors[0]).any()


def test_magic_bytes_and_python_objects_are_detected(model, tmp_path):
    from PIL import Image

    disguised = write_png(tmp_path / "picture.png").rename(tmp_path / "picture.dat")
    assert model.detect(Item.of_file(disguised)) == "image"
    assert model.detect(Item(data=Image.new("RGB", (8, 8)))) == "image"
    assert model.detect(Item.of_text("hello")) == "text"


def test_a_convolutional_tower_gives_pooled_grid_tokens(tiny_model_factory, tmp_path):
    # Convnets return [N, C, H, W] feature maps with no prefix tokens: the adapter pools them to the grid.
    model = tiny_model_factory(["image"], overrides={"image": {"tower": "resnet10t", "tower_kwargs": {},
                                                             "image_size": 64, "token_grid": 2}})
    pixels = model.prepare("image", [Item.of_file(write_png(tmp_path / "a.png"))]).batch["pixels"]
    tokens = model.adapters["image"].encode_pixels(pixels)
    assert tokens.shape == (1, 4, model.backbone.config.hidden_size)
    red, blue = model.encode([write_png(tmp_path / "r.png"), write_png(tmp_path / "b.png", (0, 0, 255))])
    assert np.isfinite(red).all() and not np.allclose(red, blue, atol=1e-4)
