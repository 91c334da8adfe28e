"""CoMa warm-up on the tiny preset: the loss falls, the checkpoint loads and pools over its compression
tokens, the decoder head is not saved, and fusion treats the tokens as backbone."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnisdk import checkpoint as ckpt
from omnisdk import compression
from omnisdk.modality import TokenEmbeddings

TOKENS = 4


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.presets import build_base

    root = tmp_path_factory.mktemp("coma")
    data, base, out = root / "data", root / "base", root / "warm"
    make_omniworld(data, seed=0, size="tiny")
    build_base("tiny", modalities=["text", "image", "audio"]).save(base)
    # The CLI, as a user runs it (a subprocess: the real entry point, arguments and output).
    run = subprocess.run([sys.executable, "-m", "omnisdk", "warmup", "--method", "coma", "--model", str(base),
                          "--data", str(data), "--out", str(out), "--steps", "12", "--tokens", str(TOKENS),
                          "--lr", "2e-3", "--batch-size", "8", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return {"root": root, "data": data, "base": base, "out": out, "summary": json.loads(run.stdout)}


def test_warmup_lowers_the_reconstruction_loss(warmed):
    summary = warmed["summary"]
    assert summary["probe_loss_after"] < summary["probe_loss_before"] - 0.1
    lineage = ckpt.read_manifest(warmed["out"]).lineage
    assert lineage.stage == "warmup" and lineage.method == "coma"
    assert lineage.parents == [ckpt.read_manifest(warmed["base"]).fingerprint]
    assert lineage.metrics["probe_loss_after"] == summary["probe_loss_after"]


def test_checkpoint_has_the_tokens_and_not_the_head(warmed):
    weights = load_file(str(warmed["out"] / ckpt.WEIGHTS))
    assert weights["backbone.compression_tokens.embeddings"].shape == (TOKENS, 32)
    assert all(k.startswith(("backbone.", "adapters.")) for k in weights)
    assert not any("decoder" in k or k.startswith("head") for k in weights)
    base = load_file(str(warmed["base"] / ckpt.WEIGHTS))
    assert set(weights) - set(base) == {"backbone.compression_tokens.embeddings"}
    spec = ckpt.read_manifest(warmed["out"]).backbone
    assert spec.pooling == "compression" and spec.compression_tokens == TOKENS


def test_warmed_model_encodes_unit_vectors_pooled_over_its_tokens(warmed):
    from omnisdk.model import OmniModel

    model = OmniModel.load(warmed["out"], device="cpu")
    image = next((warmed["data"]).rglob("*.png"))
    vectors = model.encode(["a red circle on the left", "a blue square", image], errors="raise")
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    # The tokens matter: changing them changes the embedding (random, as BERT's LayerNorm removes a constant shift).
    with torch.no_grad():
        tokens = compression.tokens_of(model.backbone).embeddings
        tokens.add_(torch.randn(tokens.shape, generator=torch.Generator().manual_seed(0)))
    moved = model.encode(["a red circle on the left"])
    assert not np.allclose(moved[0], vectors[0], atol=1e-4)


def test_tokens_sit_right_after_each_rows_real_tokens():
    module = compression.CompressionTokens(2, 3)
    with torch.no_grad():
        module.embeddings.copy_(torch.tensor([[7.0, 7, 7], [8.0, 8, 8]]))
    embeds = torch.arange(2 * 3 * 3, dtype=torch.float).reshape(2, 3, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    joined, positions = compression.append(TokenEmbeddings(embeds, mask), module)
    assert positions.tolist() == [[3, 4], [1, 2]]
    assert joined.mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert joined.embeds[1, 1].tolist() == [7.0, 7, 7] and joined.embeds[1, 2].tolist() == [8.0, 8, 8]
    assert compression.pool(joined.embeds, positions)[0].tolist() == [7.5, 7.5, 7.5]


def test_fusion_treats_compression_tokens_as_shared_backbone(warmed):
    from omnisdk.model import OmniModel

    model = OmniModel.load(warmed["out"], device="cpu")
    assert model.parameter_owner("backbone.compression_tokens.embeddings") == ("backbone", "shared")


def test_compression_pooling_without_tokens_is_refused():
    from omnisdk.backbone import BackboneSpec

    with pytest.raises(ValueError, match="warmup"):
        BackboneSpec(model_type="bert", config={}, pooling="compression")


def test_specialists_from_the_warm_up_refine_the_tokens_and_fusion_merges_them(warmed, tmp_path):
    from omnisdk.fusion import fuse
    from omnisdk.model import OmniModel
    from omnisdk.trainers.stages import train_specialist

    settings = {"steps": 2, "batch_size": 4, "log_every": 1, "hard_negatives": 1, "learning_rate": 1e-3}
    for plugin in ("image", "audio"):
        train_specialist(warmed["out"], plugin, warmed["data"], tmp_path / plugin, settings, show_progress=False)
        assert ckpt.read_manifest(tmp_path / plugin).backbone.pooling == "compression"
    key = "backbone.compression_tokens.embeddings"
    base = load_file(str(warmed["out"] / ckpt.WEIGHTS))[key]
    image, audio = (load_file(str(tmp_path / m / ckpt.WEIGHTS))[key] for m in ("image", "audio"))
    assert not torch.equal(base, image)  # contrastive learning refines the compression tokens
    fuse(warmed["out"], [tmp_path / "image", tmp_path / "audio"], method="task_arithmetic", out=tmp_path / "fused",
         progress=False)
    fused = load_file(str(tmp_path / "fused" / ckpt.WEIGHTS))[key]
    torch.testing.assert_close(fused, base + (image - base) + (audio - base))  # merged like any backbone weight
    model = OmniModel.load(tmp_path / "fused", device="cpu")
    assert model.spec.pooling == "compression"
    assert np.allclose(np.linalg.norm(model.encode(["a red circle"]), axis=1), 1, atol=1e-5)
