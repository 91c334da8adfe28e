"""omnisdk: one embedding space for text, images, videos, PDF pages and audio.

`import omnisdk` is all a user or a plugin author needs; every public name is reachable from here:

    import omnisdk

    model = omnisdk.OmniModel.from_preset("tiny")             # or omnisdk.OmniModel.load("ckpt")
    vectors = model.encode(["a red circle", Path("photo.png")])
    with omnisdk.open_store() as store:
        omnisdk.Indexer(store, "photos", model).index(["~/Pictures"])
        hits = omnisdk.Searcher(store, "photos", model).search("a red bicycle", limit=5)

Names are imported on first use (PEP 562), so `import omnisdk` stays fast and does not import torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives; `__getattr__` imports the module on first use.
_HOMES: dict[str, str] = {
    # the plugin contract
    "hookimpl": "omnisdk.hookspecs",
    "ModalityPlugin": "omnisdk.modality",
    "PluginConfig": "omnisdk.modality",
    "Prepared": "omnisdk.modality",
    "TokenEmbeddings": "omnisdk.modality",
    "FusionSpec": "omnisdk.modality",
    "Instructions": "omnisdk.modality",
    "TrainingDefaults": "omnisdk.modality",
    "RecoveryPlan": "omnisdk.modality",
    "BuildContext": "omnisdk.modality",
    "Runtime": "omnisdk.modality",
    "run_per_item": "omnisdk.modality",
    "register_plugin": "omnisdk.plugin_manager",
    "list_plugins": "omnisdk.plugin_manager",
    # the model and its inputs
    "Item": "omnisdk.items",
    "Locator": "omnisdk.items",
    "OmniModel": "omnisdk.model",
    "OmniError": "omnisdk.errors",
    "ItemErrors": "omnisdk.errors",
    # services
    "open_store": "omnisdk.store",
    "Indexer": "omnisdk.search.indexer",
    "Searcher": "omnisdk.search.searcher",
    "fuse": "omnisdk.fusion",
    "train_specialist": "omnisdk.trainers.stages",
    "align": "omnisdk.trainers.stages",
    "Pipeline": "omnisdk.pipeline.runner",
    "PipelineConfig": "omnisdk.pipeline.config",
    "evaluate": "omnisdk.eval.runner",
    "load_dataset": "omnisdk.datasets.format",
}

__all__ = sorted([*_HOMES, "__version__"])

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports lazily
    from omnisdk.datasets.format import load_dataset
    from omnisdk.errors import ItemErrors, OmniError
    from omnisdk.eval.runner import evaluate
    from omnisdk.fusion import fuse
    from omnisdk.hookspecs import hookimpl
    from omnisdk.items import Item, Locator
    from omnisdk.modality import (
        BuildContext,
        FusionSpec,
        Instructions,
        ModalityPlugin,
        PluginConfig,
        Prepared,
        RecoveryPlan,
        Runtime,
        TokenEmbeddings,
        TrainingDefaults,
        run_per_item,
    )
    from omnisdk.model import OmniModel
    from omnisdk.pipeline.config import PipelineConfig
    from omnisdk.pipeline.runner import Pipeline
    from omnisdk.plugin_manager import list_plugins, register_plugin
    from omnisdk.search.indexer import Indexer
    from omnisdk.search.searcher import Searcher
    from omnisdk.store import open_store
    from omnisdk.trainers.stages import align, train_specialist


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `import omnisdk` stays cheap (no torch) for the CLI's fast paths and plugin discovery.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'omnisdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
