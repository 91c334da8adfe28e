"""Checkpoints: round trip, fingerprint, pickle refusal, missing plugins, foreign formats."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from omnisdk import checkpoint as ckpt
from omnisdk.errors import CheckpointError, PluginNotInstalledError, UnsafeCheckpointError
from omnisdk.model import OmniModel
from omnisdk.plugin_manager import reset_plugin_manager


@pytest.fixture(scope="module")
def saved(tiny_model_factory, tmp_path_factory):
    model = tiny_model_factory(["text", "image"])
    directory = tmp_path_factory.mktemp("ckpt") / "base"
    model.save(directory)
    return model, directory


class PickleBomb:
    """Unpickling this writes a marker file: proof that a loader ran pickled code."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_save_then_load_gives_identical_embeddings(saved, tmp_path):
    from PIL import Image

    model, directory = saved
    Image.new("RGB", (20, 20), "green").save(tmp_path / "g.png")
    inputs = ["a green square", tmp_path / "g.png"]
    loaded = OmniModel.load(directory)
    np.testing.assert_array_equal(model.encode(inputs), loaded.encode(inputs))
    assert loaded.fingerprint == model.fingerprint == ckpt.read_manifest(directory).fingerprint


def test_manifest_records_versions_configs_and_lineage(saved):
    _, directory = saved
    manifest = json.loads((directory / ckpt.MANIFEST).read_text())
    assert manifest["format"] == "omnisdk-checkpoint" and manifest["format_version"] == 1
    assert {p["name"] for p in manifest["plugins"]} == {"text", "image"}
    assert manifest["plugins"][1]["config"]["image_size"] == 32
    assert manifest["lineage"]["stage"] == "base" and len(manifest["fingerprint"]) == 64
    assert (directory / "tokenizer" / "tokenizer.json").exists()


def test_pickled_checkpoints_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "marker.txt"
    bomb = PickleBomb()
    bomb.marker = marker
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (hf / "pytorch_model.bin").write_bytes(pickle.dumps(bomb))
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        OmniModel.create(hf)
    with pytest.raises(UnsafeCheckpointError, match="safetensors only"):
        OmniModel.load(hf)
    assert not marker.exists()


def test_tampered_weights_fail_the_fingerprint(saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, directory = saved
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    state = load_file(str(copy / ckpt.WEIGHTS))
    name = next(iter(state))
    state[name] = state[name] + 1
    save_file(state, str(copy / ckpt.WEIGHTS))
    with pytest.raises(CheckpointError, match="fingerprint"):
        OmniModel.load(copy)


def test_file_fingerprint_equals_the_tensors_fingerprint_for_every_dtype(saved, tmp_path):
    import torch
    from safetensors.torch import save_file

    _, directory = saved
    assert ckpt.weights_fingerprint(directory / ckpt.WEIGHTS) == saved[0].fingerprint
    generator = torch.Generator().manual_seed(0)
    tensors = {f"t.{str(dtype).split('.')[-1]}": (torch.randn(3, 5, generator=generator) * 9).to(dtype)
               for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.bool)}
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 4)
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    assert ckpt.weights_fingerprint(tmp_path / "mixed.safetensors") == ckpt.fingerprint(tensors.items())
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "mixed.safetensors").read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.weights_fingerprint(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        ckpt.weights_fingerprint(tmp_path / "junk.safetensors")


def test_missing_plugins_name_the_plugin_and_the_install(saved, tmp_path, monkeypatch):
    import shutil

    _, directory = saved
    monkeypatch.setenv("OMNISDK_PLUGINS", "text")
    reset_plugin_manager()
    with pytest.raises(PluginNotInstalledError, match=r"'image'.*pip install 'omnisdk\[image\]'"):
        OmniModel.load(directory)
    loaded = OmniModel.load(directory, modalities=["text"])  # the rest of the model still works
    assert list(loaded.plugins) == ["text"] and loaded.encode(["hi"]).shape == (1, 32)

    monkeypatch.delenv("OMNISDK_PLUGINS")
    reset_plugin_manager()
    third = tmp_path / "third"
    shutil.copytree(directory, third)
    manifest = json.loads((third / ckpt.MANIFEST).read_text())
    manifest["plugins"].append({"name": "sonar", "version": "1.0", "package": "omnisdk-sonar", "extra": None, "config": {}})
    (third / ckpt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PluginNotInstalledError, match="'sonar'.*pip install omnisdk-sonar"):
        OmniModel.load(third, modalities=None)


def test_foreign_directories_get_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OmniModel.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an omnisdk checkpoint"):
        OmniModel.load(tmp_path / "empty")
    future = tmp_path / "future"
    future.mkdir()
    (future / ckpt.MANIFEST).write_text(json.dumps({"format": "omnisdk-checkpoint", "format_version": 99}))
    with pytest.raises(CheckpointError, match="upgrade omnisdk"):
        OmniModel.load(future)


def test_any_local_hugging_face_checkpoint_can_be_the_backbone(saved, tmp_path):
    model, _ = saved
    hf = tmp_path / "hf-bert"
    model.backbone.save_pretrained(str(hf))
    model.tokenizer.save_pretrained(str(hf))
    built = OmniModel.create(hf, plugins=["text"])
    assert built.spec.source == str(hf)
    np.testing.assert_allclose(built.encode(["a red star"]), model.encode(["a red star"]), atol=1e-6)
