"""The issue's acceptance test: one call, five modalities, good files beside hostile ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media.audio import write_empty, write_wav
from media.pdf import write_encrypted_pdf, write_pdf
from media.video import truncated_copy, write_mp4
from PIL import Image, ImageDraw

from omnisdk.model import OmniModel


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(["text", "image", "video", "document", "audio"])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixed")
    png = root / "circle.png"
    image = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill="red")
    image.save(png)
    jpeg = root / "photo.jpg"
    image.convert("RGB").save(jpeg, quality=90)
    corrupt_png = root / "corrupt.png"
    corrupt_png.write_bytes(png.read_bytes()[:40])
    mp4 = write_mp4(root / "clip.mp4", frames=16)
    truncated_mp4 = truncated_copy(mp4, root / "truncated.mp4", size=mp4.stat().st_size // 3)
    unknown = root / "notes.xyz"
    unknown.write_bytes(b"\x00\x01 some proprietary format")
    return {
        "png": png,
        "jpeg": jpeg,
        "mp4": mp4,
        "pdf": write_pdf(root / "doc.pdf"),
        "wav": write_wav(root / "beep.wav", seconds=1.0),
        "corrupt_png": corrupt_png,
        "truncated_mp4": truncated_mp4,
        "encrypted_pdf": write_encrypted_pdf(root / "locked.pdf"),
        "empty_wav": write_empty(root / "empty.wav"),
        "unknown": unknown,
    }


def test_five_modalities_in_one_call_give_unit_vectors_in_input_order(model, files):
    inputs = ["a red circle", files["png"], files["mp4"], files["pdf"], files["wav"], files["jpeg"], "a beep"]
    vectors, errors = model.encode(inputs, batch_size=3, return_errors=True)
    assert errors == []
    assert vectors.shape == (len(inputs), model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i, item in enumerate(inputs):  # row i is item i, whatever the grouping and sorting did
        np.testing.assert_allclose(model.encode([item])[0], vectors[i], atol=1e-5)


def test_bad_files_are_reported_with_their_cause_and_good_ones_embedded(model, files):
    inputs = [
        files["png"], files["corrupt_png"], files["mp4"], files["truncated_mp4"], files["pdf"],
        files["encrypted_pdf"], files["wav"], files["empty_wav"], files["unknown"], "plain text",
    ]
    vectors, errors = model.encode(inputs, batch_size=4, errors="ignore", return_errors=True)
    causes = {e.index: e.cause for e in errors}
    assert set(causes) == {1, 3, 5, 7, 8}
    assert "image" in causes[1].lower() or "truncated" in causes[1].lower()
    assert "video" in causes[3].lower()
    assert "encrypted" in causes[5].lower() and "password" in causes[5].lower()
    assert "empty" in causes[7].lower()
    assert "no installed plugin accepts file type '.xyz'" in causes[8]
    for e in errors:  # every report names its file
        assert str(inputs[e.index]) in str(e)
    good = [0, 2, 4, 6, 9]
    assert not np.isnan(vectors[good]).any() and np.isnan(vectors[sorted(causes)]).all()
    np.testing.assert_allclose(np.linalg.norm(vectors[good], axis=1), 1.0, atol=1e-5)
    clean = model.encode([inputs[i] for i in good])
    np.testing.assert_allclose(vectors[good], clean, atol=1e-5)  # bad neighbours changed nothing


def test_all_modalities_survive_save_and_load(model, files, tmp_path):
    inputs = ["text", files["png"], files["mp4"], files["pdf"], files["wav"]]
    model.save(tmp_path / "ckpt")
    loaded = OmniModel.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(model.encode(inputs), loaded.encode(inputs))
    owners = {loaded.parameter_owner(n) for n, _ in loaded.named_parameters()}
    assert ("audio", "owned") in owners and ("image", "shared") in owners and ("backbone", "shared") in owners
