"""The built-in audio encoder's `input_norm`: per-clip standardised log-mels and a normed conv front end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("torchaudio")

from media.audio import tone_item as clip  # noqa: E402

from omnisdk.model import OmniModel  # noqa: E402
from omnisdk.plugins.audio_encoder import standardize  # noqa: E402



@pytest.fixture(scope="module")
def normed(tiny_model_factory) -> OmniModel:
    return tiny_model_factory(modalities=["audio"], overrides={"audio": {"input_norm": True}})


def test_standardize_uses_real_frames_only_and_keeps_padding_zero():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 10) * 3 + 5
    lengths = torch.tensor([6, 10])
    features[0, :, 6:] = 0.0  # padding, as featurize leaves it
    out = standardize(features, lengths)
    real = out[0, :, :6]
    assert abs(float(real.mean())) < 1e-5 and abs(float(real.std(unbiased=False)) - 1) < 1e-4
    assert torch.equal(out[0, :, 6:], torch.zeros(8, 4))
    # the short row standardises the same whatever padding sits beside it
    torch.testing.assert_close(standardize(features[:1, :, :6], lengths[:1]), out[:1, :, :6])


def test_input_norm_adds_a_front_norm_and_is_off_by_default(tiny_model_factory, normed):
    names = {n for n, _ in normed.named_parameters()}
    assert "adapters.audio.encoder.front_norm.weight" in names
    plain = tiny_model_factory(modalities=["audio"])
    assert not any("front_norm" in n for n, _ in plain.named_parameters())
    assert plain.plugins["audio"].config.input_norm is False


def test_a_quieter_copy_embeds_the_same_only_with_input_norm(tiny_model_factory, normed):
    items = [clip(0.5), clip(0.05), clip(0.5, freq=1760.0)]
    loud, quiet, other = normed.encode(items)
    np.testing.assert_allclose(loud, quiet, atol=1e-4)
    assert float(loud @ other) < 0.9999  # still tells a different pitch apart
    plain = tiny_model_factory(modalities=["audio"]).encode(items)
    assert float(plain[0] @ plain[1]) < 0.9999  # the fixed (x + 4) / 4 scaling moves with loudness


def test_a_clip_embeds_the_same_alone_or_beside_a_longer_one(normed):
    alone = normed.encode([clip(0.5)], batch_size=1)
    together = normed.encode([clip(0.5), clip(0.3, seconds=3.0, freq=880.0)], batch_size=2)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)


def test_the_setting_survives_save_and_load(normed, tmp_path):
    items = [clip(0.5), clip(0.2, seconds=2.0, freq=660.0)]
    before = normed.encode(items)
    normed.save(tmp_path / "ckpt")
    loaded = OmniModel.load(tmp_path / "ckpt", device="cpu")
    assert loaded.plugins["audio"].config.input_norm is True
    np.testing.assert_array_equal(loaded.encode(items), before)
