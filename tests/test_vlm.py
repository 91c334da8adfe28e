"""A vision-language backbone (Qwen2-VL, Qwen2.5-VL): its own vision tower serves the image, video and document plugins.

The checkpoints are tiny random ones saved with save_pretrained (tests/pretrained_parts.qwen2_vl), with
their image processor and a tokenizer holding the vision tokens. The key check compares omnisdk's
image vector with a direct call of the transformers model on the same image.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnisdk import checkpoint as ckpt
from omnisdk.errors import CheckpointError
from omnisdk.items import Item, Locator
from omnisdk.model import OmniModel
from omnisdk.presets import build_base
import pretrained_parts as parts
from media.pdf import write_pdf
from media.video import write_mp4
from pretrained_parts import FAST, write_pairs_dataset

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "examples" / "media"
KINDS = ("qwen2_vl", "qwen2_5_vl")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {kind: parts.qwen2_vl(root / kind, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("vlm-media")
    Image.new("RGB", (50, 20), (20, 40, 220)).save(root / "wide.png")  # another grid than red-circle.png
    return {"png": MEDIA / "red-circle.png", "wide": root / "wide.png",
            "mp4": write_mp4(root / "clip.mp4", frames=8, fps=8, size=(48, 32)), "pdf": write_pdf(root / "pages.pdf")}


def _hf_image_vector(source: Path, image_path: Path) -> np.ndarray:
    """What the transformers model itself gives for one image: the last token of its last hidden state, normalised.

    The sequence is the checkpoint's own vision tokens around one <|image_pad|> per merged patch, then
    the EOS that last-token pooling reads; the image goes through the checkpoint's image processor.
    """
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(str(source)).eval(), AutoTokenizer.from_pretrained(str(source))
    inputs = AutoImageProcessor.from_pretrained(str(source))(images=[Image.open(image_path).convert("RGB")], return_tensors="pt")
    merged = int(inputs["image_grid_thw"].prod()) // model.config.vision_config.spatial_merge_size**2
    text = "<|vision_start|>" + "<|image_pad|>" * merged + "<|vision_end|>"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    assert int((ids == model.config.image_token_id).sum()) == merged
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                       image_grid_thw=inputs["image_grid_thw"],
                       mm_token_type_ids=(ids == model.config.image_token_id).int()).last_hidden_state
    return torch.nn.functional.normalize(hidden[0, -1], dim=-1).numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_image_vectors_equal_the_transformers_model_called_directly(sources, files, kind):
    model = build_base("tiny", modalities=["text", "image"], backbone=str(sources[kind]))
    ours = model.encode([files["png"], files["wide"]], errors="raise")  # one batch, two grids, left padding
    for row, path in enumerate((files["png"], files["wide"])):
        np.testing.assert_allclose(ours[row], _hf_image_vector(sources[kind], path), atol=1e-5)
    assert float(ours[0] @ ours[1]) < 0.9999


@pytest.mark.parametrize("kind", KINDS)
def test_text_images_videos_and_pages_through_the_backbones_own_tower(sources, files, kind, tmp_path):
    model = build_base("tiny", modalities=["text", "image", "video", "document"], backbone=str(sources[kind]),
                       overrides={"image": {"vlm_max_pixels": 32 * 32}})
    assert (model.spec.pooling, model.spec.padding_side) == ("last", "left")
    assert type(model.adapters["image"]).__name__ == "BackboneVisionAdapter"
    assert not list(model.adapters["image"].parameters())  # the tower is the backbone's, held once
    assert any(name.startswith("backbone.visual.") for name, _ in model.named_parameters())
    prepared = model.prepare("image", [Item.of_file(files["png"])])
    assert set(prepared.batch) == {"patches", "grid_thw"} and prepared.batch["grid_thw"].tolist()[0][0] == 1
    items = ["a red circle", files["png"], files["mp4"], Item.of_file(files["pdf"], "document", Locator(page=1)),
             Item.of_file(files["pdf"], "document", Locator(page=2))]
    vectors = model.encode(items, errors="raise")
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = np.stack([model.encode([item], errors="raise")[0] for item in items])
    np.testing.assert_allclose(vectors, alone, atol=1e-5)  # padding and batch-mates never change a vector
    assert float(vectors[3] @ vectors[4]) < 0.9999  # the pages differ
    model.save(tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / ckpt.WEIGHTS))
    assert any(k.startswith("backbone.visual.") for k in saved) and not any(k.startswith("adapters.image.") for k in saved)
    again = OmniModel.load(tmp_path / "ckpt")
    assert again.plugins["image"].config.tower_kind == "backbone"
    np.testing.assert_allclose(again.encode(items, errors="raise"), vectors, atol=1e-6)


def test_cli_init_from_a_hub_id_and_info_names_the_backbones_tower(sources, tmp_path):
    cache = tmp_path / "hf-cache"
    parts.hub_cache(cache, "tiny/qwen2-vl", sources["qwen2_vl"])
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        import os

        return subprocess.run([sys.executable, "-m", "omnisdk", *args], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **env}, timeout=600)

    done = cli("init", "--preset", "tiny", "--backbone", "tiny/qwen2-vl", "--modalities", "image",
               "--out", str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr
    assert "qwen2_vl backbone" in done.stdout
    info = cli("info", str(tmp_path / "model"))
    assert info.returncode == 0, info.stderr
    lines = {line.split("|")[1].strip(): line for line in info.stdout.splitlines() if line.startswith("| ")}
    assert "tiny/qwen2-vl" in lines["backbone"] and "last pooling, left padding" in lines["backbone"]
    assert "Qwen2VisionTransformerPretrainedModel (the backbone's own vision tower, shared)" in lines["image tower"]
    assert "tiny/qwen2-vl" in lines["image tower"]
    assert "hidden 32, layers 1" in info.stdout


def test_align_specialists_fuse_recover_index_and_search_on_a_vision_language_backbone(sources, tmp_path):
    from omnisdk.fusion import fuse
    from omnisdk.search import Indexer, Searcher
    from omnisdk.store import open_store
    from omnisdk.trainers.stages import align, recover, train_specialist

    data = write_pairs_dataset(tmp_path / "data")  # text <-> image and text <-> audio pairs
    base = build_base("tiny", modalities=["image", "audio"], backbone=str(sources["qwen2_vl"]),
                      overrides={"image": {"vlm_max_pixels": 16 * 16}})
    base.save(tmp_path / "base")
    before = load_file(str(tmp_path / "base" / ckpt.WEIGHTS))
    tower = [k for k in before if k.startswith("backbone.visual.")]
    align(tmp_path / "base", data, tmp_path / "aligned", {**FAST, "learning_rate": 1e-2}, show_progress=False)
    aligned = load_file(str(tmp_path / "aligned" / ckpt.WEIGHTS))
    assert all(torch.equal(aligned[k], before[k]) for k in tower)  # align keeps the backbone, its tower too, frozen
    for plugin in ("image", "audio"):
        train_specialist(tmp_path / "aligned", plugin, data, tmp_path / plugin, {**FAST, "learning_rate": 1e-2},
                         show_progress=False)
    image = load_file(str(tmp_path / "image" / ckpt.WEIGHTS))
    audio = load_file(str(tmp_path / "audio" / ckpt.WEIGHTS))
    assert any(not torch.equal(image[k], aligned[k]) for k in tower)  # the image specialist trains the VLM's tower
    fuse(tmp_path / "aligned", [tmp_path / "image", tmp_path / "audio"], method="task_arithmetic",
         out=tmp_path / "fused", progress=False)
    fused = load_file(str(tmp_path / "fused" / ckpt.WEIGHTS))
    for k in tower:  # shared: the aligned base plus both task vectors
        torch.testing.assert_close(fused[k], image[k] + audio[k] - aligned[k])
    projector = [k for k in audio if k.startswith("adapters.audio.projector.")]
    assert projector and all(torch.equal(fused[k], audio[k]) for k in projector)  # owned: copied
    recover(tmp_path / "fused", "audio", data, tmp_path / "recovered", FAST, show_progress=False)
    model = OmniModel.load(tmp_path / "recovered")
    assert model.lineage.parents == [ckpt.read_manifest(tmp_path / "fused").fingerprint]
    with open_store(str(tmp_path / "store")) as store:
        report = Indexer(store, "files", model, model_dir=tmp_path / "recovered", progress=False).index(
            [data / "media" / "red.png", data / "media" / "blue.png"])
        assert (report.indexed, report.failed) == (2, 0)
        hits = Searcher(store, "files", model).search(data / "media" / "red.png", limit=2)
    # The query is encoded with the image plugin's query instruction, the index with its document one.
    assert hits[0].source.endswith("red.png") and hits[0].score > hits[1].score


def test_an_unsupported_vision_language_backbone_is_refused_before_its_weights_load(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("qwen3_vl").save_pretrained(str(tmp_path / "qwen3-vl"))  # a config, no weights
    with pytest.raises(CheckpointError, match="vision-language model \\(qwen3_vl\\).*supports qwen2_vl, qwen2_5_vl"):
        build_base("tiny", modalities=["text"], backbone=str(tmp_path / "qwen3-vl"))
