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
