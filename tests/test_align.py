"""`omnisdk align`: every adapter trains on every modality's pairs; the backbone keeps its exact bits."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from omnisdk.cli import main
from omnisdk.presets import build_base


def test_align_trains_every_adapter_and_freezes_the_backbone(tmp_path, capsys):
    from omnisdk.datasets.omniworld.build import make_omniworld

    data = tmp_path / "data"
    make_omniworld(data, domains=("scenes", "sounds"))
    base = tmp_path / "base"
    build_base("tiny", modalities=["text", "image", "audio"]).save(base)
    out = tmp_path / "aligned"
    code = main(["align", "--base", str(base), "--data", str(data), "--out", str(out), "--steps", "3",
                 "--batch-size", "6", "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3

    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "alignment changed nothing"
    assert not any(name.startswith("backbone.") for name in changed)
    assert any(name.startswith("adapters.image.") for name in changed)
    assert any(name.startswith("adapters.audio.") for name in changed)

    manifest = json.loads((out / "omnisdk.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["stage"] == "align"
    assert lineage["parents"] == [json.loads((base / "omnisdk.json").read_text())["fingerprint"]]
    # Balanced by default: both modalities with pairs get an equal share of every batch.
    assert lineage["settings"]["quotas"] == {"audio": 1.0, "image": 1.0}
    assert any((tmp_path / "cache").glob("image-*/*.safetensors"))
    assert any((tmp_path / "cache").glob("audio-*/*.safetensors"))


def test_frozen_text_is_embedded_once_and_changes_nothing(tmp_path):
    """Alignment freezes the backbone, so a caption's embedding cannot change between steps: the trainer
    embeds each text once. The aligned weights are the same as when every step embeds every text."""
    from omnisdk.datasets.format import load_dataset
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.trainers.stages import align

    data = tmp_path / "data"
    make_omniworld(data, domains=("scenes",))
    base = tmp_path / "base"
    build_base("tiny", modalities=["text", "image"]).save(base)
    dataset = load_dataset(data)
    settings = {"steps": 6, "batch_size": 16, "precision": "fp32", "checkpoint_every": 100}  # 1.5 epochs
    calls = []
    from omnisdk.model import OmniModel

    original = OmniModel.forward_embeddings

    def counting(self, modality, batch, role):
        calls.append(modality)
        return original(self, modality, batch, role)

    OmniModel.forward_embeddings = counting
    try:
        align(base, dataset, tmp_path / "once", settings, show_progress=False, cache=tmp_path / "cache")
        once = list(calls)
        calls.clear()
        align(base, dataset, tmp_path / "every", {**settings, "embed_frozen_once": False}, show_progress=False,
              cache=tmp_path / "cache")
        every = list(calls)
    finally:
        OmniModel.forward_embeddings = original
    assert every.count("image") == once.count("image")  # the image tower trains: embedded every step
    assert once.count("text") < every.count("text")
    a, b = load_file(tmp_path / "once" / "model.safetensors"), load_file(tmp_path / "every" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_only_a_frozen_deterministic_path_is_embedded_once():
    from omnisdk.trainers.embedding import FrozenRows

    model = build_base("tiny", modalities=["text", "image", "video"])
    model.eval()
    memo = FrozenRows.for_trainer(model, ["adapters.audio.projector.weight"])
    assert memo is not None and memo.modalities == {"text", "image", "video"}
    # video uses the image tower, so training that tower leaves only text frozen
    assert FrozenRows.for_trainer(model, ["adapters.image.tower.stem.weight"]).modalities == {"text"}
    assert FrozenRows.for_trainer(model, ["backbone.encoder.layer.0.attention.self.query.weight"]) is None
    model.backbone.train()  # dropout would draw new noise on every call
    assert FrozenRows.for_trainer(model, ["adapters.image.tower.stem.weight"]) is None
