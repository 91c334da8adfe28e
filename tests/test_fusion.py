"""Fusion end to end on tiny models: merged shared parameters, copied owned ones, refusals before writing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from omnisdk import checkpoint as ckpt
from omnisdk.cli import main
from omnisdk.fusion import FusionError, fuse, plan_fusion
from omnisdk.fusion.methods import generator_for, ties
from omnisdk.items import Item
from omnisdk.model import OmniModel

pytest.importorskip("timm")
pytest.importorskip("torchaudio")
from omnisdk.plugins.audio import Waveform  # noqa: E402

MODALITIES = ["text", "image", "audio"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_model_factory, make_specialist) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fusion")
    base = tiny_model_factory(MODALITIES)
    base.save(root / "base")
    dirs = {"base": root / "base"}
    for seed, plugin in enumerate(MODALITIES, start=1):
        dirs[plugin] = make_specialist(root / "base", root / plugin, plugin, seed)
    return dirs


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / ckpt.WEIGHTS))


def test_task_arithmetic_merges_shared_and_copies_owned(zoo, tmp_path):
    out = tmp_path / "fused"
    report = fuse(zoo["base"], [zoo["text"], zoo["image"], zoo["audio"]], method="task_arithmetic",
                  weights=[0.5, 1.0, 2.0], lam=0.8, out=out)
    base, text, image, audio, fused = (weights(p) for p in (zoo["base"], zoo["text"], zoo["image"], zoo["audio"], out))
    for name, value in fused.items():
        if name.startswith("adapters.audio."):
            assert torch.equal(value, audio[name]), name  # owned: the audio specialist's bits exactly
        else:  # backbone and the image plugin's shared tower: base + lambda * sum_m w_m tau_m
            expected = base[name] + 0.8 * (0.5 * (text[name] - base[name]) + 1.0 * (image[name] - base[name])
                                           + 2.0 * (audio[name] - base[name]))
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    image_param = next(n for n in base if n.startswith("adapters.image."))
    assert not torch.equal(fused[image_param], image[image_param])  # shared: merged, not copied
    rows = report.as_dict()["owners"]
    assert rows["audio"]["copied"] == sum(n.startswith("adapters.audio.") for n in base) and rows["audio"]["merged"] == 0
    assert rows["backbone"]["merged"] == sum(n.startswith("backbone.") for n in base) and rows["backbone"]["copied"] == 0
    assert rows["image"]["task_vector_norms"]["text"] == 0 and rows["image"]["task_vector_norms"]["image"] > 0
    assert "| backbone |" in report.markdown() and not report.warnings


def test_fused_checkpoint_loads_encodes_and_records_its_lineage(zoo, tmp_path):
    out = tmp_path / "fused"
    fuse(zoo["base"], [zoo["text"], zoo["image"], zoo["audio"]], method="ties", density=0.5, out=out)
    model = OmniModel.load(out, device="cpu")  # verifies the recomputed fingerprint
    manifest = ckpt.read_manifest(out)
    assert manifest.fingerprint == ckpt.weights_fingerprint(out / ckpt.WEIGHTS)
    specialists = [ckpt.read_manifest(zoo[p]).fingerprint for p in MODALITIES]
    base_fp = ckpt.read_manifest(zoo["base"]).fingerprint
    lineage = manifest.lineage
    assert lineage.stage == "fused" and lineage.method == "ties" and lineage.parents == [base_fp, *specialists]
    assert lineage.coefficients == {"weights": [1.0, 1.0, 1.0], "density": 0.5, "lambda": 1.0, "seed": 0,
                                    "statistics": "base"}
    assert [s["plugin"] for s in lineage.settings["specialists"]] == MODALITIES and lineage.settings["base"] == base_fp
    assert sorted(p.name for p in (out / ckpt.TOKENIZER_DIR).iterdir()) == sorted(p.name for p in (zoo["base"] / ckpt.TOKENIZER_DIR).iterdir())
    tone = np.sin(np.linspace(0, 440 * 2 * np.pi, 16_000)).astype(np.float32)
    vectors = model.encode(["a red circle", Item(modality="audio", data=Waveform(tone, 16_000))], errors="raise")
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    # TIES over the saved tensors, parameter by parameter, gives the same backbone.
    base, fused = weights(zoo["base"]), weights(out)
    name = "backbone.encoder.layer.0.attention.self.query.weight"
    deltas = [weights(zoo[p])[name] - base[name] for p in MODALITIES]
    torch.testing.assert_close(fused[name], base[name] + ties(deltas, weights=[1, 1, 1], density=0.5), rtol=0, atol=1e-6)


def test_dare_is_reproducible_by_seed(zoo, tmp_path):
    runs = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        fuse(zoo["base"], [zoo["text"], zoo["image"]], method="dare_ties", density=0.5, seed=seed, out=tmp_path / label)
        runs[label] = ckpt.read_manifest(tmp_path / label).fingerprint
    assert runs["a"] == runs["b"] != runs["c"]
    base, text, image, fused = (weights(p) for p in (zoo["base"], zoo["text"], zoo["image"], tmp_path / "a"))
    name = "backbone.embeddings.word_embeddings.weight"
    from omnisdk.fusion.methods import dare_ties

    expected = base[name] + dare_ties([text[name] - base[name], image[name] - base[name]], weights=[1, 1], density=0.5,
                                      generator=generator_for(3, name))
    torch.testing.assert_close(fused[name], expected, rtol=0, atol=1e-6)


def test_owned_parameters_without_their_specialist_stay_as_the_base_with_a_warning(zoo, tmp_path):
    report = fuse(zoo["base"], [zoo["text"]], method="task_arithmetic", out=tmp_path / "fused")
    base, fused = weights(zoo["base"]), weights(tmp_path / "fused")
    assert all(torch.equal(fused[n], base[n]) for n in base if n.startswith("adapters.audio."))
    assert report.warnings == ["no specialist for plugin 'audio': its owned parameters stay as the base's"]
    assert report.as_dict()["owners"]["audio"]["kept"] > 0


def test_a_method_registered_by_a_plugin_fuses(zoo, tmp_path, mean_merge):
    mean_merge()
    fuse(zoo["base"], [zoo["text"], zoo["image"]], method="mean_of_deltas", out=tmp_path / "fused")
    base, text, image, fused = (weights(p) for p in (zoo["base"], zoo["text"], zoo["image"], tmp_path / "fused"))
    name = "backbone.embeddings.LayerNorm.weight"
    torch.testing.assert_close(fused[name], (text[name] + image[name]) / 2, rtol=0, atol=1e-6)


# -- refusals: each raises before the output directory exists -------------------------------------------
def rewrite_tensor(src: Path, dst: Path, change) -> Path:
    """A copy of checkpoint `src` whose first backbone weight is replaced by change(tensor)."""
    shutil.copytree(src, dst)
    state = weights(dst)
    name = "backbone.embeddings.LayerNorm.weight"
    state[name] = change(state[name])
    save_file(state, str(dst / ckpt.WEIGHTS))
    return dst


def refused(zoo, out: Path, specialists, match: str, **kwargs) -> None:
    with pytest.raises(FusionError, match=match):
        fuse(zoo["base"], specialists, out=out, **{"method": "ties", **kwargs})
    assert not out.exists()


def test_refuses_a_specialist_of_another_base(zoo, tmp_path, make_specialist):
    other = make_specialist(zoo["base"], tmp_path / "stranger", "text", 9, parents=["f" * 64])
    refused(zoo, tmp_path / "out", [zoo["image"], other], match=r"specialist .*stranger does not descend from base .*ffffffffffff")


def test_refuses_a_shape_mismatch(zoo, tmp_path):
    bad = rewrite_tensor(zoo["text"], tmp_path / "wide", lambda t: torch.cat([t, t]))
    refused(zoo, tmp_path / "out", [bad], match=r"wide: parameter 'backbone.embeddings.LayerNorm.weight' has shape \[64\], the base \[32\]")


def test_refuses_a_dtype_mismatch(zoo, tmp_path):
    bad = rewrite_tensor(zoo["text"], tmp_path / "half", lambda t: t.half())
    refused(zoo, tmp_path / "out", [bad], match="half: parameter .* has dtype F16, the base F32")


def test_refuses_two_owners_of_one_parameter(zoo, tmp_path, make_specialist):
    second = make_specialist(zoo["base"], tmp_path / "audio2", "audio", 11)
    refused(zoo, tmp_path / "out", [zoo["audio"], second], match=r"both for plugin 'audio', which owns 'adapters.audio")


def test_refuses_unknown_methods_missing_plugins_and_bad_options(zoo, tmp_path):
    out = tmp_path / "out"
    refused(zoo, out, [zoo["text"]], method="slerp", match="unknown merge method 'slerp'; registered methods: dare_linear, dare_ties, task_arithmetic, ties")
    refused(zoo, out, [zoo["text"]], weights=[1, 2], match="2 weights for 1 specialists")
    refused(zoo, out, [zoo["text"]], density=0, match="density 0 is outside")
    refused(zoo, out, [zoo["text"], zoo["text"]], match="is given twice")
    anonymous = tmp_path / "anonymous"
    shutil.copytree(zoo["text"], anonymous)
    manifest = ckpt.read_manifest(anonymous)
    manifest.lineage.settings = {}
    ckpt.write_manifest(anonymous, manifest)
    refused(zoo, out, [anonymous], match="anonymous does not say which plugin")
    (out / "x").parent.mkdir()
    (out / "x").write_text("taken")
    with pytest.raises(FusionError, match="already exists"):
        plan_fusion(zoo["base"], [zoo["text"]], method="ties", out=out)


def test_damaged_weights_are_caught_and_leave_no_output(zoo, tmp_path):
    bad = rewrite_tensor(zoo["text"], tmp_path / "damaged", lambda t: t + 1)  # same shape and dtype, other bits
    out = tmp_path / "out"
    with pytest.raises(FusionError, match="damaged.* does not match the fingerprint"):
        fuse(zoo["base"], [bad], method="ties", out=out)
    assert list(tmp_path.iterdir()) == [bad]  # neither out nor its staging directory


# -- the command line ------------------------------------------------------------------------------------
def test_cli_fuse_prints_a_summary_and_json(zoo, tmp_path, capsys):
    args = ["fuse", "--base", str(zoo["base"]), "--specialist", str(zoo["text"]), "--specialist", str(zoo["audio"]),
            "--method", "ties", "--density", "0.5", "--weights", "1,0.5", "--lambda", "0.9"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "| owner | merged | copied | kept | ‖τ text‖ | ‖τ audio‖ | ‖update‖ |" in text and "| backbone |" in text
    assert main(args + ["--out", str(tmp_path / "b"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["options"] == {"weights": [1.0, 0.5], "density": 0.5, "lambda": 0.9, "seed": 0}
    assert data["owners"]["audio"]["copied"] > 0 and data["fingerprint"] == ckpt.read_manifest(tmp_path / "a").fingerprint


def test_cli_fuse_errors_exit_2_with_one_line(zoo, tmp_path, capsys):
    base = ["fuse", "--base", str(zoo["base"]), "--out", str(tmp_path / "out")]
    assert main(base + ["--specialist", str(zoo["text"]), "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown merge method 'nope'" in err and "task_arithmetic, ties" in err
    assert main(base + ["--specialist", str(zoo["audio"]), "--specialist", str(zoo["audio"]), "--method", "ties"]) == 2
    assert "is given twice" in capsys.readouterr().err
    assert main(base + ["--specialist", str(zoo["text"]), "--method", "ties", "--weights", "1,x"]) == 2
    assert "--weights '1,x' is not" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_running_statistics_stay_the_base_s_unless_merge_is_asked(tiny_model_factory, tmp_path):
    """A specialist re-estimates BatchNorm statistics on its own modality; fusion keeps the base's by default."""
    base = tiny_model_factory(["text", "image"], overrides={"image": {"tower": "resnet10t", "tower_kwargs": {},
                                                                      "image_size": 32, "token_grid": 1}})
    base.save(tmp_path / "base")
    stats = [n for n in base.state_dict() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
    assert stats, "the resnet tower should have BatchNorm statistics"
    base_fp = ckpt.read_manifest(tmp_path / "base").fingerprint
    specialists = []
    for seed, plugin in enumerate(["text", "image"], start=1):
        model = OmniModel.load(tmp_path / "base", device="cpu")
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name in stats or name.startswith("backbone.") and tensor.is_floating_point():
                    tensor.add_(0.1 * seed)  # moved statistics, as a specialist's training moves them
        lineage = ckpt.Lineage(stage="specialist", parents=[base_fp], method="contrastive", settings={"plugin": plugin})
        model.save(tmp_path / plugin, lineage=lineage)
        specialists.append(tmp_path / plugin)
    fuse(tmp_path / "base", specialists, method="task_arithmetic", out=tmp_path / "kept")
    fuse(tmp_path / "base", specialists, method="task_arithmetic", statistics="merge", out=tmp_path / "merged")
    original, kept, merged = (weights(tmp_path / d) for d in ("base", "kept", "merged"))
    name = stats[0]
    assert torch.equal(kept[name], original[name])
    torch.testing.assert_close(merged[name], original[name] + 0.1 + 0.2, rtol=0, atol=1e-5)
    weight = "backbone.encoder.layer.0.attention.self.query.weight"  # weights merge under either policy
    torch.testing.assert_close(kept[weight], original[weight] + 0.3, rtol=0, atol=1e-5)
    assert ckpt.read_manifest(tmp_path / "kept").lineage.coefficients["statistics"] == "base"
    OmniModel.load(tmp_path / "kept", device="cpu")
    with pytest.raises(FusionError, match="statistics 'mean'"):
        plan_fusion(tmp_path / "base", specialists, method="ties", out=tmp_path / "x", statistics="mean")
