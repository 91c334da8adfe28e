"""Pretrained parts: vision towers, audio encoders and decoder LLM backbones from directories and hub ids.

Every checkpoint is a tiny random one saved with save_pretrained (tests/pretrained_parts.py); a hub id
resolves through a Hugging Face cache laid out in a temp directory with HF_HUB_OFFLINE=1, the path a
user with internet takes once the model is cached.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnisdk import checkpoint as ckpt
from omnisdk.errors import CheckpointError
from omnisdk.model import OmniModel
from omnisdk.presets import build_base

import pretrained_parts as parts
from media.audio import write_wav
from pretrained_parts import FAST, write_pairs_dataset

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "examples" / "media"
@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """name -> directory of each tiny checkpoint, built once per module."""
    root = tmp_path_factory.mktemp("sources")
    built = {name: getattr(parts, name)(root / name) for name in
             ("clip", "siglip", "dinov2", "timm_dir", "whisper", "clap", "ast", "wav2vec2")}
    built["hubert"] = parts.wav2vec2(root / "hubert", "hubert")
    for kind in ("qwen2", "qwen3", "llama"):
        built[kind] = parts.decoder_llm(root / kind, kind)
    return built


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavs")
    return [write_wav(root / "short.wav", 0.4, 16_000, 300), write_wav(root / "long.wav", 1.6, 22_050, 1800)]


def _reloaded(model: OmniModel, directory: Path) -> OmniModel:
    model.save(directory)
    return OmniModel.load(directory)


# -- image towers -------------------------------------------------------------------------------------------
def _source_tower(name: str, directory: Path) -> dict[str, torch.Tensor]:
    """The source's vision weights as transformers itself loads them (key renames included), by tower key."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory))
    model = model.vision_model if name in ("clip", "siglip") else model  # a whole CLIP or SigLIP: its vision half
    return dict(model.state_dict())


@pytest.mark.parametrize("name,kind,cls", [("clip", "hf", "CLIPVisionModel"), ("siglip", "hf", "SiglipVisionModel"),
                                           ("dinov2", "hf", "Dinov2Model"), ("timm_dir", "timm", "vit_tiny_patch16_224")])
def test_image_tower_loads_pretrained_weights_encodes_and_survives_its_source(sources, name, kind, cls, tmp_path):
    model = build_base("tiny", modalities=["image"], overrides={"image": {"tower_source": str(sources[name])}})
    cfg = model.plugins["image"].config
    assert (cfg.tower_kind, cfg.tower, cfg.tower_resolved, cfg.image_size) == (kind, cls, True, 32)
    tower = model.adapters["image"].tower
    if kind == "hf":
        expected = _source_tower(name, sources[name])
        got = {k.removeprefix("model."): v for k, v in tower.state_dict().items()}
        assert expected.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    else:
        source = load_file(str(sources[name] / "model.safetensors"))
        assert all(torch.equal(tower.state_dict()[k], v) for k, v in source.items())
        assert cfg.mean == [0.5, 0.5, 0.5]  # the timm checkpoint's own normalisation, recorded
    image = MEDIA / "red-circle.png"
    vectors = model.encode([image, "a red circle"], errors="raise")
    assert np.isfinite(vectors).all() and abs(float(vectors[0] @ vectors[1])) < 0.999
    moved = tmp_path / "moved"
    sources[name].rename(moved)  # the checkpoint must not need its source any more
    try:
        again = _reloaded(model, tmp_path / "ckpt").encode([image, "a red circle"])
    finally:
        moved.rename(sources[name])
    np.testing.assert_allclose(again, vectors, atol=1e-6)


def test_image_processor_prepares_images_and_video_and_pages_use_the_tower(sources):
    model = build_base("tiny", modalities=["image", "video", "document"], overrides={"image": {"tower_source": str(sources["clip"])}})
    from omnisdk.items import Item

    prepared = model.prepare("image", [Item.of_file(MEDIA / "red-circle.png")])
    assert set(prepared.batch) == {"pixels"} and prepared.batch["pixels"].shape == (1, 3, 32, 32)
    assert model.adapters["image"].mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    vectors = model.encode([MEDIA / "green-square-moving-left.mp4", MEDIA / "report.pdf"], errors="raise")
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()


def test_a_checkpoint_without_the_vision_weights_is_refused(sources, tmp_path):
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(str(tmp_path / "text-only"))
    CLIPImageProcessor().save_pretrained(str(tmp_path / "text-only"))
    with pytest.raises(CheckpointError, match="CLIPTextConfig .*is not a vision model"):
        build_base("tiny", modalities=["image"], overrides={"image": {"tower_source": str(tmp_path / "text-only")}})


# -- audio encoders -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,cls", [("whisper", "WhisperEncoder"), ("clap", "ClapAudioModel"), ("ast", "ASTModel"),
                                      ("wav2vec2", "Wav2Vec2Model"), ("hubert", "HubertModel")])
def test_audio_encoder_loads_encodes_is_frozen_and_survives_its_source(sources, wavs, name, cls, tmp_path):
    model = build_base("tiny", modalities=["audio"], overrides={"audio": {"encoder": "hf", "encoder_source": str(sources[name])}})
    encoder = model.adapters["audio"].encoder.model
    assert type(encoder).__name__ == cls
    assert model.plugins["audio"].frozen() == ["encoder.*"]
    assert model.parameter_owner("adapters.audio.encoder.model." + next(iter(dict(encoder.named_parameters())))) == ("audio", "owned")
    assert model.parameter_owner("adapters.audio.projector.0.weight") == ("audio", "owned")
    vectors = model.encode(wavs, errors="raise")
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    assert float(vectors[0] @ vectors[1]) < 0.99999  # a low short tone and a high long one differ
    moved = tmp_path / "moved"
    sources[name].rename(moved)
    try:
        again = _reloaded(model, tmp_path / "ckpt").encode(wavs)
    finally:
        moved.rename(sources[name])
    np.testing.assert_allclose(again, vectors, atol=1e-5)


def test_audio_window_follows_fixed_length_encoders(sources):
    for name, seconds in (("whisper", 2.0), ("clap", 1.0), ("ast", 1.0), ("wav2vec2", 10.0)):
        model = build_base("tiny", modalities=["audio"], overrides={"audio": {"encoder": "hf", "encoder_source": str(sources[name])}})
        assert model.plugins["audio"].window_seconds == pytest.approx(seconds), name


# -- training, fusion and reload -----------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", [None, "qwen2"])
def test_specialists_fuse_and_reload_with_pretrained_parts(sources, tmp_path, backbone):
    from omnisdk.fusion import fuse
    from omnisdk.trainers.stages import recover, train_specialist

    data = write_pairs_dataset(tmp_path / "data")
    base = build_base("tiny", modalities=["image", "audio"], backbone=str(sources[backbone]) if backbone else None,
                      overrides={"image": {"tower_source": str(sources["clip"])},
                                 "audio": {"encoder": "hf", "encoder_source": str(sources["whisper"])}})
    base.save(tmp_path / "base")
    before = load_file(str(tmp_path / "base" / ckpt.WEIGHTS))
    for plugin in ("image", "audio"):
        train_specialist(tmp_path / "base", plugin, data, tmp_path / plugin, {**FAST, "learning_rate": 1e-2}, show_progress=False)
    audio = load_file(str(tmp_path / "audio" / ckpt.WEIGHTS))
    image = load_file(str(tmp_path / "image" / ckpt.WEIGHTS))
    encoder_keys = [k for k in before if k.startswith("adapters.audio.encoder.")]
    assert encoder_keys and all(torch.equal(audio[k], before[k]) for k in encoder_keys)  # frozen
    assert not torch.equal(audio["adapters.audio.projector.0.weight"], before["adapters.audio.projector.0.weight"])
    tower_keys = [k for k in before if k.startswith("adapters.image.tower.")]
    assert any(not torch.equal(image[k], before[k]) for k in tower_keys)  # the shared tower trains
    report = fuse(tmp_path / "base", [tmp_path / "image", tmp_path / "audio"], method="task_arithmetic",
                  out=tmp_path / "fused", progress=False)
    assert report is not None
    fused = load_file(str(tmp_path / "fused" / ckpt.WEIGHTS))
    for k in encoder_keys + ["adapters.audio.projector.0.weight"]:  # owned: copied from the audio specialist
        assert torch.equal(fused[k], audio[k])
    for k in tower_keys:  # shared: base + both task vectors (the audio specialist left the tower alone)
        torch.testing.assert_close(fused[k], image[k] + audio[k] - before[k])
    manifest = ckpt.read_manifest(tmp_path / "fused")
    parents = {ckpt.read_manifest(tmp_path / p).fingerprint for p in ("image", "audio")}
    assert manifest.lineage.stage == "fused" and set(manifest.lineage.parents) >= parents
    recover(tmp_path / "fused", "audio", data, tmp_path / "recovered", FAST, show_progress=False)
    recovered = OmniModel.load(tmp_path / "recovered")
    assert recovered.lineage.parents == [manifest.fingerprint]
    vectors = recovered.encode([data / "media" / "red.png", data / "media" / "red.wav", "a red image"], errors="raise")
    assert np.isfinite(vectors).all()


# -- decoder LLM backbones ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "llama"])
def test_decoder_backbone_pools_an_appended_end_token_with_left_padding(sources, kind, tmp_path):
    model = build_base("tiny", modalities=["text", "image"], backbone=str(sources[kind]))
    tok = model.tokenizer
    assert (model.spec.pooling, model.spec.padding_side, tok.padding_side) == ("last", "left", "left")
    ids = tok(["a red circle on the left", "a"], padding=True)["input_ids"]
    assert ids[0][-1] == tok.eos_token_id and ids[1][-1] == tok.eos_token_id  # left padded: EOS is last
    assert ids[1][0] == tok.pad_token_id and ids[0][0] != tok.pad_token_id
    if kind == "llama":
        assert ids[0][0] == tok.bos_token_id  # the BOS the tokenizer puts first is kept
    texts = ["a red circle on the left of a big blue square", "a"]
    together = model.encode(texts + [MEDIA / "red-circle.png"], errors="raise")
    alone = np.stack([model.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together[:2], alone, atol=1e-5)  # padding never changes a vector
    assert float(together[0] @ together[1]) < 0.9999
    again = _reloaded(model, tmp_path / "ckpt")
    assert again.tokenizer.padding_side == "left" and again._suffix_ids[-1:] == [tok.eos_token_id]
    np.testing.assert_allclose(again.encode(texts + [MEDIA / "red-circle.png"]), together, atol=1e-6)


def test_last_token_pooling_reads_the_last_real_token_on_either_side():
    from omnisdk.backbone import pool

    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]


def test_encoder_backbones_keep_mean_pooling_and_right_padding(tiny_model_factory):
    model = tiny_model_factory(modalities=["text"])
    assert (model.spec.pooling, model.spec.padding_side) == ("mean", "right")


# -- hub ids through the Hugging Face cache, and the CLI ---------------------------------------------------------
def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omnisdk", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=600)


def test_cli_init_from_hub_ids_in_the_cache_and_info_names_each_part(sources, tmp_path):
    cache = tmp_path / "hf-cache"
    for repo, name in (("tiny/qwen2", "qwen2"), ("tiny/clip", "clip"), ("tiny/whisper", "whisper")):
        parts.hub_cache(cache, repo, sources[name])
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "model"
    done = _cli(["init", "--preset", "tiny", "--backbone", "tiny/qwen2", "--image-encoder", "tiny/clip",
                 "--audio-encoder", "tiny/whisper", "--modalities", "text", "--out", str(out)], env)
    assert done.returncode == 0, done.stderr
    assert "qwen2 backbone" in done.stdout and "modalities text, audio, image" in done.stdout
    assert "UNEXPECTED" not in done.stderr  # CLIP's text tower is left out on purpose, without a report
    info = _cli(["info", str(out)], env)
    assert info.returncode == 0, info.stderr
    lines = {line.split("|")[1].strip(): line for line in info.stdout.splitlines() if line.startswith("| ")}
    assert "tiny/qwen2" in lines["backbone"] and "last pooling, left padding" in lines["backbone"]
    assert "tiny/clip" in lines["image tower"] and "CLIPVisionModel (transformers, shared)" in lines["image tower"]
    assert "tiny/whisper" in lines["audio encoder"] and "whisper (owned, frozen)" in lines["audio encoder"]
    assert "owned, trained" in lines["audio projector"]
    missing = _cli(["init", "--preset", "tiny", "--image-encoder", "nobody/absent-model", "--modalities", "text",
                    "--out", str(tmp_path / "never")], env)
    assert missing.returncode == 2
    assert "nobody/absent-model" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_timm_hf_hub_and_transformers_hub_ids_resolve_through_the_cache(sources, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    parts.hub_cache(cache, "timm/tiny-vit", sources["timm_dir"])
    parts.hub_cache(cache, "tiny/siglip", sources["siglip"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = build_base("tiny", modalities=["image"], overrides={"image": {"tower_source": "hf-hub:timm/tiny-vit"}})
    assert (model.plugins["image"].config.tower_kind, model.plugins["image"].config.mean) == ("timm", [0.5, 0.5, 0.5])
    source = load_file(str(sources["timm_dir"] / "model.safetensors"))
    assert all(torch.equal(model.adapters["image"].tower.state_dict()[k], v) for k, v in source.items())
    model = build_base("tiny", modalities=["image"], overrides={"image": {"tower_source": "tiny/siglip"}})
    assert model.plugins["image"].config.tower == "SiglipVisionModel"
    with pytest.raises(CheckpointError, match="'hf-hub:timm/absent'.*HF_HUB_OFFLINE"):
        build_base("tiny", modalities=["image"], overrides={"image": {"tower_source": "hf-hub:timm/absent"}})


@pytest.mark.parametrize("what,kwargs", [
    ("backbone", {"backbone": "nobody/absent-llm"}),
    ("audio encoder", {"modalities": ["audio"], "overrides": {"audio": {"encoder": "hf", "encoder_source": "nobody/absent-whisper"}}}),
    ("image encoder", {"modalities": ["image"], "overrides": {"image": {"tower_source": "timm:vit_tiny_patch16_224.augreg_in21k"}}}),
])
def test_an_uncached_hub_id_offline_names_the_id_and_hf_hub_offline(what, kwargs, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError) as caught:
        build_base("tiny", **kwargs)
    message = str(caught.value)
    source = next(iter(kwargs.get("overrides", {}).values()), {}).get("encoder_source") or kwargs.get("backbone") \
        or kwargs["overrides"]["image"]["tower_source"]
    assert f"the {what} '{source}'" in message and "HF_HUB_OFFLINE=1" in message
