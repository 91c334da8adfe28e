"""Shared fixtures: tiny random models and checkpoints built offline, and a clean plugin registry per test.

Test helpers import from one root, this folder (`pythonpath = ["tests"]` in pyproject.toml):
`from media.audio import write_wav`, `from app_support import ...`, `import pretrained_parts`. Plain
file makers live in `media/` (audio, pdf, video, eval_data), checkpoint builders and shared plugins
here as fixtures.

`pytest -m "not slow and not browser"` is the quick local run: `slow` marks the end-to-end modules in
SLOW_MODULES below (and single tests marked in their files), `browser` the headless-Chromium tests.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from omnisdk.hookspecs import hookimpl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Stages cache prepared inputs under the user cache dir by default; tests keep theirs apart.
os.environ.setdefault("OMNISDK_CACHE_DIR", tempfile.mkdtemp(prefix="omnisdk-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


#: Whole modules of end-to-end runs (training pipelines, real processes killed, every hostile file),
#: marked `slow` here so that their files need no marker line.
SLOW_MODULES = {
    "test_pipeline.py", "test_demo.py", "test_faults.py", "test_hostile_commands.py", "test_hostile_corpus.py",
    "test_omniworld_build.py", "test_packaging.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fresh_plugin_manager():
    """Each test sees the installed plugins only, whatever an earlier test registered."""
    from omnisdk.plugin_manager import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture(scope="session")
def tiny_model_factory():
    """make(modalities=None, **kw) -> a tiny random OmniModel from the tiny preset."""
    from omnisdk.presets import build_base

    def make(modalities=None, **kwargs):
        return build_base("tiny", modalities=modalities, **kwargs)

    return make


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, tiny_model_factory):
    """(root, model, cases): the hostile-input corpus (tests/hostile) under root/corpus, and a tiny model of
    every modality saved at root/model. Built once per session: every command runs over the same files."""
    from hostile.corpus import build

    root = tmp_path_factory.mktemp("hostile")
    model = tiny_model_factory(modalities=["text", "image", "audio", "video", "document"])
    model.save(root / "model")
    return root, model, build(root / "corpus")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model_factory):
    """save(directory, modalities=None, **kw) -> directory: a tiny random base saved as a checkpoint."""

    def save(directory: Path, modalities=None, **kwargs) -> Path:
        tiny_model_factory(modalities, **kwargs).save(directory)
        return directory

    return save


# What each specialist's training moved: the backbone always, plus its plugin's adapter.
TRAINED = {"text": ("backbone.",), "image": ("backbone.", "adapters.image."), "audio": ("backbone.", "adapters.audio.")}


@pytest.fixture(scope="session")
def make_specialist():
    """make(base_dir, out, plugin, seed, *, parents=None) -> out: a stand-in for a trained specialist, the
    base's weights (the backbone's, plus the plugin's adapter) moved by seeded noise, saved with a lineage."""
    import torch

    from omnisdk import checkpoint as ckpt
    from omnisdk.model import OmniModel

    def make(base_dir: Path, out: Path, plugin: str, seed: int, *, parents: list[str] | None = None) -> Path:
        model = OmniModel.load(base_dir, device="cpu")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.startswith(TRAINED[plugin]):
                    param.add_(0.02 * torch.randn(param.shape, generator=g))
        base_fp = ckpt.read_manifest(base_dir).fingerprint
        lineage = ckpt.Lineage(stage="specialist", parents=parents or [base_fp], method="contrastive",
                               data_hash=f"data-{plugin}", settings={"plugin": plugin, "steps": 10})
        model.save(out, lineage=lineage)
        return out

    return make


@pytest.fixture(scope="session")
def make_trainer_data(tiny_checkpoint):
    """make(root) -> {"root", "data", "base"}: a tiny base model, image pairs (OmniWorld scenes and digits)
    and audio pairs (tones), for the trainer's tests."""
    from media.audio import add_tone_pairs

    def make(root: Path) -> dict[str, Path]:
        from omnisdk.datasets.omniworld.build import make_omniworld

        data = root / "data"
        make_omniworld(data, domains=("scenes", "digits"))
        add_tone_pairs(data)
        return {"root": root, "data": data, "base": tiny_checkpoint(root / "base")}

    return make


def mean_of_deltas(deltas, *, weights, density, generator):
    """A third party's merge method: the plain mean of the task vectors, ignoring weights."""
    import torch

    return torch.stack(list(deltas)).mean(dim=0)


class MeanMerge:
    """A third-party plugin registering `mean_of_deltas` through omnisdk_register_merge_methods."""

    @hookimpl
    def omnisdk_register_merge_methods(self, register):
        register("mean_of_deltas", mean_of_deltas)


@pytest.fixture
def mean_merge():
    """register() -> mean_of_deltas: registers MeanMerge (until the test ends) and returns its method."""
    from omnisdk.plugin_manager import register_plugin

    def register():
        register_plugin(MeanMerge(), name="mean-merge")
        return mean_of_deltas

    return register


# The tiny preset with fewer steps: the same stages, a third of the time.
QUICK_PIPELINE = """
name = "quick"
base_preset = "tiny"
[data]
omniworld_size = "tiny"
[train]
batch_size = 6
checkpoint_every = 2
learning_rate = 1e-3
[align]
steps = 4
[specialist.image]
steps = 6
[specialist.video]
steps = 4
[specialist.document]
steps = 4
[specialist.audio]
# Long enough that the test sees a checkpoint (steps are fast once inputs are cached) and kills the run.
steps = 30
[fusion]
method = "ties"
density = 0.5
[recovery]
steps = 4
learning_rate = 3e-3
[rehearsal]
steps = 3
learning_rate = 1e-4
[joint]
steps = 8
"""


@pytest.fixture(scope="session")
def quick_pipeline():
    """write(path) -> path: the quick pipeline's TOML (the tiny preset's stages, fewer steps)."""

    def write(path: Path) -> Path:
        path.write_text(QUICK_PIPELINE)
        return path

    return write
