"""The built-in audio encoder's `front_end = "pitch_timbre"`: shared 2-D filters max-pooled over frequency."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("torchaudio")

from media.audio import tone_item as clip  # noqa: E402

from omnisdk.model import OmniModel  # noqa: E402
from omnisdk.plugins.audio_encoder import PitchTimbreFront  # noqa: E402



@pytest.fixture(scope="module")
def model(tiny_model_factory) -> OmniModel:
    return tiny_model_factory(modalities=["audio"], overrides={"audio": {"input_norm": True, "front_end": "pitch_timbre"}})


def test_the_front_end_replaces_the_mel_bin_convolutions(tiny_model_factory, model):
    names = {n for n, _ in model.named_parameters()}
    assert "adapters.audio.encoder.front.conv1.weight" in names
    assert not any(n.startswith("adapters.audio.encoder.conv1.") for n in names)
    plain = tiny_model_factory(modalities=["audio"])
    assert plain.plugins["audio"].config.front_end == "conv1d"
    assert not any(".front." in n for n, _ in plain.named_parameters())


def test_the_timbre_part_does_not_move_with_pitch():
    """A spectrum shifted up the mel axis gives the same max-pooled filter responses (away from the
    edges), while the band energies, which carry the pitch, change."""
    torch.manual_seed(0)
    front = PitchTimbreFront(n_mels=64, dim=16).eval()
    pattern = torch.zeros(1, 64, 40)
    pattern[0, 10:16, :] = torch.randn(6, 40)  # a harmonic-like motif low in the spectrum
    shifted = torch.roll(pattern, shifts=30, dims=1)  # the same motif 30 bins (an even number) higher
    lengths = torch.tensor([40])
    out_low, _ = front(pattern, lengths)
    out_high, _ = front(shifted, lengths)
    # the mix layer sees [timbre | bands]: undo it with a zero band weight to read the timbre part alone
    with torch.no_grad():
        front.mix.weight[:, -front.bands:] = 0
        timbre_low, _ = front(pattern, lengths)
        timbre_high, _ = front(shifted, lengths)
    torch.testing.assert_close(timbre_low, timbre_high, atol=1e-5, rtol=1e-5)
    assert (out_low - out_high).abs().max() > 1e-3


def test_a_clip_embeds_the_same_alone_or_beside_a_longer_one(model):
    alone = model.encode([clip(0.5)], batch_size=1)
    together = model.encode([clip(0.5), clip(0.3, seconds=3.0, freq=880.0)], batch_size=2)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)


def test_different_pitches_embed_apart_and_the_setting_survives_save_and_load(model, tmp_path):
    items = [clip(0.5), clip(0.5, freq=1760.0)]
    before = model.encode(items)
    assert float(before[0] @ before[1]) < 0.9999
    model.save(tmp_path / "ckpt")
    loaded = OmniModel.load(tmp_path / "ckpt", device="cpu")
    assert loaded.plugins["audio"].config.front_end == "pitch_timbre"
    np.testing.assert_array_equal(loaded.encode(items), before)
