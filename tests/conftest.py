"""Shared fixtures: tiny random models built offline, and a clean plugin registry per test."""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Stages cache prepared inputs under the user cache dir by default; tests keep theirs apart.
os.environ.setdefault("OMNISDK_CACHE_DIR", tempfile.mkdtemp(prefix="omnisdk-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
