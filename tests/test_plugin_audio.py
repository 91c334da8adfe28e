"""The audio plugin on real files: decoding, resampling, slicing, chunking, errors, the two encoders, save/load."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("torchaudio")

from media.audio import (  # noqa: E402
    tone,
    write_empty,
    write_ramp,
    write_silence,
    write_stereo_flac,
    write_text_as_audio,
    write_truncated,
    write_wav,
)

from omnisdk.items import Item, Locator  # noqa: E402
from omnisdk.model import OmniModel  # noqa: E402
from omnisdk.plugins.audio import AudioPlugin, Waveform  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio")
    return {
        "beep": write_wav(root / "beep.wav", seconds=1.0, rate=16_000),
        "long_beep": write_wav(root / "long_beep.wav", seconds=3.0, rate=16_000, freq=880.0),
        "stereo": write_stereo_flac(root / "stereo.flac", seconds=1.5, rate=44_100),
        "ramp": write_ramp(root / "ramp.wav", seconds=25.0),
        "silent": write_silence(root / "silent.wav"),
        "empty": write_empty(root / "empty.wav"),
        "truncated": write_truncated(root / "truncated.wav"),
        "text": write_text_as_audio(root / "text.wav"),
        "missing": root / "missing.wav",
    }


@pytest.fixture(scope="module")
def model(tiny_model_factory) -> OmniModel:
    return tiny_model_factory(modalities=["audio"])


def load(plugin: AudioPlugin, item: Item) -> torch.Tensor:
    return plugin.load(item, plugin.sample_rate, plugin.window_seconds)


# -- decoding ------------------------------------------------------------------------------------------
def test_wav_loads_as_mono_float_at_16k(media):
    wave = load(AudioPlugin(), Item.of_file(media["beep"]))
    assert wave.dtype == torch.float32 and wave.shape == (16_000,)
    assert 0.45 < float(wave.abs().max()) <= 0.5


def test_stereo_44k_flac_is_mixed_and_resampled(media):
    wave = load(AudioPlugin(), Item.of_file(media["stereo"]))
    assert wave.shape == (24_000,)  # 1.5 s at 16 kHz, from 66,150 frames at 44.1 kHz
    assert abs(float(wave.abs().max()) - 0.375) < 0.02  # mean of 0.5 and 0.25 peaks
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    assert abs(np.argmax(spectrum) * 16_000 / wave.numel() - 440) < 2  # the pitch survives resampling


def test_locator_slices_the_span(media):
    wave = load(AudioPlugin(), Item.of_file(media["ramp"], locator=Locator(t0=12.0, t1=14.5)))
    assert wave.shape == (40_000,)
    # The ramp's sample at t is t / 100, so the slice's ends say where it was cut.
    assert abs(float(wave[0]) - 0.12) < 1e-4 and abs(float(wave[-1]) - 0.145) < 1e-4


def test_locator_without_an_end_runs_one_window_or_to_the_end(media):
    wave = load(AudioPlugin(), Item.of_file(media["ramp"], locator=Locator(t0=20.0)))
    assert wave.shape == (80_000,) and abs(float(wave[0]) - 0.2) < 1e-4


def test_a_very_short_clip_is_padded_with_silence_and_embeds(model):
    wave = load(AudioPlugin(), Item(modality="audio", data=Waveform(tone(0.01, 16_000), 16_000)))
    assert wave.shape == (1_600,) and float(wave[160:].abs().max()) == 0.0
    vectors = model.encode([Waveform(tone(0.01, 16_000), 16_000), Waveform(tone(0.5, 16_000), 16_000)])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_no_locator_means_the_first_window(media):
    plugin = AudioPlugin({"window_seconds": 4.0})
    wave = load(plugin, Item.of_file(media["ramp"]))
    assert wave.shape == (64_000,) and float(wave[-1]) < 0.04


def test_waveform_in_memory(media):
    samples = tone(2.0, 8_000)
    plugin = AudioPlugin()
    assert load(plugin, Item(modality="audio", data=Waveform(samples, 8_000))).shape == (32_000,)
    stereo_int16 = (np.stack([samples, samples], axis=1) * 32767).astype(np.int16)
    wave = load(plugin, Item(modality="audio", data=(stereo_int16, 8_000)))
    assert wave.shape == (32_000,) and 0.45 < float(wave.abs().max()) <= 0.5
    with pytest.raises(ValueError, match=r"looks like \(channels, frames\)"):
        load(plugin, Item(modality="audio", data=Waveform(np.stack([samples, samples]), 8_000)))
    assert AudioPlugin.accepts_object(Waveform(samples, 8_000))


def test_float_samples_far_over_full_scale_are_refused_and_mild_overs_kept():
    """Samples at 1e30 are finite, but their spectrogram overflows: NaN vectors and NaN training gradients."""
    plugin = AudioPlugin()
    with pytest.raises(ValueError, match=r"reach 1.0e\+30, far outside full scale"):
        load(plugin, Item(modality="audio", data=Waveform(np.full(16_000, 1e30, dtype=np.float32), 16_000)))
    over = load(plugin, Item(modality="audio", data=Waveform(tone(1.0, 16_000, amplitude=1.5), 16_000)))  # a clipped master
    assert torch.isfinite(over).all() and float(over.abs().max()) > 1.0


@pytest.mark.parametrize(
    ("name", "locator", "config", "cause"),
    [
        ("empty", None, {}, "empty"),
        ("truncated", None, {}, "cannot decode truncated.wav"),
        ("text", None, {}, "cannot decode text.wav"),
        ("missing", None, {}, "no such file"),
        ("silent", None, {}, "silent"),
        ("ramp", None, {"max_seconds": 20}, "over max_seconds=20"),
        ("ramp", Locator(t0=30.0, t1=35.0), {}, "after the end of the 25.00 s clip"),
        ("ramp", Locator(t0=0.0, t1=15.0), {}, "longer than one window"),
        ("ramp", Locator(page=2), {}, "no pages"),
    ],
)
def test_bad_items_raise_with_their_cause(media, name, locator, config, cause):
    with pytest.raises((OSError, ValueError), match=cause):
        load(AudioPlugin(config), Item.of_file(media[name], locator=locator))


# -- chunking ------------------------------------------------------------------------------------------
def test_chunk_splits_long_audio_into_located_windows(media):
    chunks = AudioPlugin({"window_seconds": 10.0}).chunk(Item.of_file(media["ramp"]))
    assert [(c.locator.t0, c.locator.t1) for c in chunks] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert all(c.path == media["ramp"] for c in chunks)


def test_chunk_of_short_or_bad_audio_is_one_item(media):
    plugin = AudioPlugin()
    (short,) = plugin.chunk(Item.of_file(media["beep"]))
    assert (short.locator.t0, short.locator.t1) == (0.0, 1.0)
    assert plugin.chunk(Item.of_file(media["missing"])) == [Item.of_file(media["missing"])]
    located = Item.of_file(media["ramp"], locator=Locator(t0=1.0, t1=2.0))
    assert plugin.chunk(located) == [located]


def test_length_hint_is_the_embedded_duration(media):
    plugin = AudioPlugin()
    assert plugin.length_hint(Item.of_file(media["long_beep"])) == 3000
    assert plugin.length_hint(Item.of_file(media["ramp"])) == 10_000  # one window
    assert plugin.length_hint(Item.of_file(media["missing"])) == 0


# -- the built-in encoder in a model -------------------------------------------------------------------
def test_features_have_the_expected_shapes(model, media):
    items = [Item.of_file(media["beep"]), Item.of_file(media["long_beep"])]
    prepared = model.prepare("audio", items)
    assert prepared.ok == [0, 1] and not prepared.errors
    features = prepared.batch["inputs"]["features"]
    assert features.shape == (2, 32, 301)  # n_mels of the tiny preset; 3 s at 10 ms hops, centred
    assert prepared.batch["lengths"].tolist() == [101, 301]
    tokens = model.adapters["audio"](prepared.batch, model.runtime)
    # 301 mel frames -> 76 after two stride-2 convolutions -> 19 tokens pooled by 4.
    assert tokens.embeds.shape == (2, 19, model.hidden_size) and tokens.mask.sum(1).tolist() == [7, 19]


def test_mixed_batch_embeds_the_good_and_reports_the_bad(model, media):
    names = ["beep", "empty", "stereo", "truncated", "text", "missing", "silent"]
    items = [Item.of_file(media[n]) for n in names]
    items.append(Item(data=Waveform(tone(1.0, 22_050), 22_050)))
    vectors, errors = model.encode(items, errors="ignore", return_errors=True)
    good = [0, 2, 7]
    np.testing.assert_allclose(np.linalg.norm(vectors[good], axis=1), 1.0, atol=1e-5)
    causes = {e.index: e.cause for e in errors}
    assert set(causes) == {1, 3, 4, 5, 6}
    assert "empty" in causes[1] and "No 'data' chunk" in causes[3] and "not recognised" in causes[4]
    assert "no such file" in causes[5] and "silent" in causes[6]
    assert np.isnan(vectors[[1, 3, 4, 5, 6]]).all()


def test_a_clip_embeds_the_same_alone_or_beside_a_longer_one(model, media):
    alone = model.encode([media["beep"]], batch_size=1)
    together = model.encode([media["beep"], media["long_beep"]], batch_size=2)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)
    assert float(together[0] @ together[1]) < 0.99999


def test_audio_parameters_are_owned_and_recovery_trains_the_projector(model):
    names = [n for n, _ in model.named_parameters() if n.startswith("adapters.audio.")]
    assert names and all(model.parameter_owner(n) == ("audio", "owned") for n in names)
    plan = model.recovery_plan("audio")
    assert plan.trainable == ["adapters.audio.projector.*"]
    assert any(n.startswith("adapters.audio.projector.") for n in names)


def test_save_then_load_gives_identical_embeddings(model, media, tmp_path):
    items = [media["beep"], media["stereo"], Item.of_file(media["ramp"], locator=Locator(t0=5.0, t1=9.0))]
    before = model.encode(items)
    model.save(tmp_path / "ckpt")
    loaded = OmniModel.load(tmp_path / "ckpt", device="cpu")
    np.testing.assert_array_equal(loaded.encode(items), before)


# -- a Hugging Face encoder by local path --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    directory = tmp_path_factory.mktemp("whisper")
    config = WhisperConfig(
        vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=1, encoder_attention_heads=2,
        decoder_layers=1, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=100, max_target_positions=16, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[],
    )  # fmt: skip
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(str(directory))
    # 100 source positions take 200 mel frames: Whisper's inputs are 2 s of audio at 10 ms hops.
    WhisperFeatureExtractor(feature_size=16, chunk_length=2, sampling_rate=16_000, hop_length=160).save_pretrained(
        str(directory)
    )
    assert list(directory.glob("*.safetensors"))
    return directory


def test_whisper_encoder_loads_by_path_and_survives_its_source(tiny_model_factory, tiny_whisper, media, tmp_path):
    source = tmp_path / "whisper"
    shutil.copytree(tiny_whisper, source)
    model = tiny_model_factory(modalities=["audio"], overrides={"audio": {"encoder": "hf", "encoder_source": str(source)}})
    plugin = model.plugins["audio"]
    assert plugin.config.encoder_config["model_type"] == "whisper"
    assert plugin.config.feature_extractor_config["feature_extractor_type"] == "WhisperFeatureExtractor"
    assert plugin.window_seconds == 2.0  # capped by Whisper's fixed 2 s input
    assert type(model.adapters["audio"].encoder.model).__name__ == "WhisperEncoder"

    items = [media["beep"], media["stereo"], Item.of_file(media["ramp"], locator=Locator(t0=3.0, t1=5.0))]
    before = model.encode(items)
    np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)
    assert len(plugin.chunk(Item.of_file(media["ramp"]))) == 13  # 25 s in 2 s windows

    model.save(tmp_path / "ckpt")
    shutil.rmtree(source)
    loaded = OmniModel.load(tmp_path / "ckpt", device="cpu")
    np.testing.assert_array_equal(loaded.encode(items), before)
    names = [n for n, _ in loaded.named_parameters() if n.startswith("adapters.audio.encoder.")]
    assert names and all(loaded.parameter_owner(n) == ("audio", "owned") for n in names)


def test_hf_encoder_needs_a_source():
    with pytest.raises(ValueError, match="encoder_source"):
        AudioPlugin({"encoder": "hf"})
