"""CUDA paths: skipped without a GPU; `scripts/gpu_check.sh` runs them (`pytest -m cuda`) on a GPU machine."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnisdk import checkpoint as ckpt
from omnisdk.cli import main
from omnisdk.model import OmniModel

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def cuda_world(tmp_path_factory):
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.presets import build_base

    root = tmp_path_factory.mktemp("cuda")
    make_omniworld(root / "data", domains=("scenes", "digits"))
    build_base("tiny", modalities=["text", "image"]).save(root / "base")
    return root


def _png(path):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (40, 30), "white")
    ImageDraw.Draw(image).ellipse((4, 4, 36, 26), fill=(255, 0, 0))
    image.save(path)
    return path


def test_encode_on_cuda_matches_cpu_in_fp32_and_is_close_in_bf16(cuda_world, tmp_path):
    png = _png(tmp_path / "a.png")
    cpu = OmniModel.load(cuda_world / "base", device="cpu").encode(["text", png])
    gpu = OmniModel.load(cuda_world / "base", device="cuda", precision="fp32").encode(["text", png])
    bf16 = OmniModel.load(cuda_world / "base", device="cuda", precision="bf16").encode(["text", png])
    np.testing.assert_allclose(cpu, gpu, atol=1e-4)
    assert (cpu * bf16).sum(axis=1).min() > 0.99


def test_the_cli_defaults_to_bf16_on_cuda(cuda_world, tmp_path, capsys):
    from omnisdk.cli import build_parser
    from omnisdk.precision import compute_from

    args = build_parser().parse_args(["embed", "--model", str(cuda_world / "base"), "hello"])
    assert compute_from(args) == {"device": torch.device("cuda"), "precision": "bf16"}
    assert main(["embed", "--model", str(cuda_world / "base"), "hello", str(_png(tmp_path / "b.png")), "--json"]) == 0
    vectors = np.array([row["embedding"] for row in json.loads(capsys.readouterr().out)["items"]])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_a_specialist_trains_on_cuda(cuda_world, tmp_path):
    from omnisdk.trainers.stages import train_specialist

    result = train_specialist(cuda_world / "base", "image", cuda_world / "data", tmp_path / "spec",
                              {"steps": 3, "batch_size": 4}, device="cuda")
    assert np.isfinite(result.final_loss)
    before, after = load_file(str(cuda_world / "base" / ckpt.WEIGHTS)), load_file(str(tmp_path / "spec" / ckpt.WEIGHTS))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("adapters.image."))
    reloaded = OmniModel.load(tmp_path / "spec", device="cpu")  # a CUDA-trained checkpoint loads anywhere
    assert reloaded.fingerprint == ckpt.read_manifest(tmp_path / "spec").fingerprint
