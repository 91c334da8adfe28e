"""Every public attribute and method of the ModalityPlugin contract is read by the core.

Each has a probe: the attribute is overridden in a plugin (`Probe2`, or a class of its own) and a test
checks that the core behaves differently from the default plugin (`Probe`). An attribute added to the
contract without a probe fails `test_every_contract_attribute_has_a_probe`, so no field can sit in the
contract unread, as `mime_types` once did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from torch import nn

import omnisdk
from omnisdk.detect import omnisdk_detect_modality as detect
from omnisdk.modality import dependencies_of, with_dependencies

PROBED: set[str] = set()
# Set up by every plugin instance, not class-level contract: the instance's settings and its model.
INSTANCE_STATE = {"config", "runtime"}


def probes(*names: str):
    PROBED.update(names)
    return lambda fn: fn


def test_every_contract_attribute_has_a_probe():
    declared = {*vars(omnisdk.ModalityPlugin), *omnisdk.ModalityPlugin.__annotations__}  # `name` is only annotated
    contract = {n for n in declared if not n.startswith("_")} - INSTANCE_STATE
    assert contract == PROBED, f"no probe for {sorted(contract - PROBED)}; stale probes {sorted(PROBED - contract)}"


# -- two minimal plugins: Probe keeps every default, Probe2 overrides -----------------------------------------
class ProbeAdapter(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.lin = nn.Linear(1, hidden)

    def forward(self, batch: dict[str, torch.Tensor], runtime: omnisdk.Runtime) -> omnisdk.TokenEmbeddings:
        tokens = self.lin(batch["v"][:, None, :])
        return omnisdk.TokenEmbeddings(tokens, torch.ones(tokens.shape[:2], dtype=torch.long))


class Probe(omnisdk.ModalityPlugin):
    name = "probe"
    seen: list[list[float]] = []

    def preprocess(self, items: Sequence[omnisdk.Item], runtime: omnisdk.Runtime) -> omnisdk.Prepared:
        values, ok, errors = omnisdk.run_per_item(items, lambda item: float(item.data))
        type(self).seen.append(values)
        return omnisdk.Prepared({"v": torch.tensor(values)[:, None]} if values else None, ok, errors)

    def build_adapter(self, ctx: omnisdk.BuildContext) -> nn.Module:
        return ProbeAdapter(ctx.hidden_size)


class ProbeConfig(omnisdk.PluginConfig):
    scale: float = 1.0


class Probe2(Probe):
    name = "probe2"
    version = "9.9.9"
    description = "the overriding probe"
    package = "probe-package"
    uses = ("probe",)
    Config = ProbeConfig
    instructions = omnisdk.Instructions(query="find this one please")
    fusion = omnisdk.FusionSpec(shared=[], owned=["*"], recovery=True)
    training = omnisdk.TrainingDefaults(steps=7, lora=True)
    aspect_prompts = ("only the colour",)
    bound: list[Any] = []

    def bind(self, runtime: omnisdk.Runtime) -> None:
        super().bind(runtime)
        type(self).bound.append(runtime)

    def frozen(self) -> list[str]:
        return ["lin.bias"]

    def recovery_plan(self, adapter_prefix: str) -> omnisdk.RecoveryPlan | None:
        return omnisdk.RecoveryPlan(trainable=[f"{adapter_prefix}lin.weight"], steps=3)

    def chunk(self, item: omnisdk.Item) -> list[omnisdk.Item]:
        return [item.with_locator(omnisdk.Locator(t0=0, t1=1)), item.with_locator(omnisdk.Locator(t0=1, t1=2))]

    def describe_locator(self, locator: omnisdk.Locator | None) -> str:
        return "probe window"

    def preview(self, item: omnisdk.Item, side: int) -> np.ndarray:
        # A grey level from the file's number and the config's scale, the locator's start in the first row.
        picture = np.full((4, 6, 3), int(float(item.path.read_text()) * self.config.scale), dtype=np.uint8)
        picture[0, :, :] = int(item.locator.t0) if item.locator else 0
        return picture

    def length_hint(self, item: omnisdk.Item) -> int:
        return int(item.data)  # the larger value first

    # Changed values show that the prepared-input cache went through both: split to 5, collated to 6.
    def split_rows(self, batch: Any, count: int) -> list[dict[str, Any]]:
        return [{"v": batch["v"][i] * 0 + 5} for i in range(count)]

    def collate_rows(self, rows: Sequence[dict[str, Any]], runtime: omnisdk.Runtime) -> Any:
        return {"v": torch.stack([row["v"] for row in rows]) + 1}


class Missing(Probe):
    name = "probe-missing"
    extra = "probe-extra"
    requires = ("no_such_module_for_omnisdk_probe|nor_this_one",)


class Hooks:
    @omnisdk.hookimpl
    def omnisdk_register_modalities(self, register):
        for cls in (Probe, Probe2, Missing):
            register(cls)


@pytest.fixture
def model():
    omnisdk.register_plugin(Hooks(), name="probes")
    Probe.seen.clear()
    Probe2.bound.clear()
    return omnisdk.OmniModel.from_preset("tiny", modalities=["text", "probe", "probe2"],
                                         overrides={"probe2": {"scale": 2.0}})


def _item(value: float, modality: str = "probe") -> omnisdk.Item:
    return omnisdk.Item(modality=modality, data=value)


# -- probes without a model ---------------------------------------------------------------------------------
@probes("name", "version", "description", "package", "extra", "requires", "missing_requirements")
def test_registry_reads_identity_and_requirements():
    omnisdk.register_plugin(Hooks(), name="probes")
    rows = {row.name: row for row in omnisdk.list_plugins()}
    assert rows["probe"].version == "0.0.0" and rows["probe2"].version == "9.9.9"
    assert rows["probe2"].package == "probe-package" and rows["probe2"].description == "the overriding probe"
    assert rows["probe"].available and not rows["probe-missing"].available
    assert rows["probe-missing"].missing == ["no_such_module_for_omnisdk_probe or nor_this_one"]
    assert rows["probe-missing"].install == "pip install 'omnisdk[probe-extra]'"


@probes("extensions", "fallback_extensions", "accepts_path")
def test_detection_reads_extensions_and_calls_accepts_path(tmp_path):
    class Grid(Probe):
        name, extensions = "grid", (".grid",)

    class Loose(Probe):
        name, fallback_extensions = "loose", (".grid", ".loose")

    class Named(Probe):
        name = "named"

        @classmethod
        def accepts_path(cls, path: Path) -> bool:  # by name, whatever the extension
            return path.name.startswith("probe-")

    found = {"grid": Grid, "loose": Loose}
    assert detect(omnisdk.Item.of_file(tmp_path / "a.grid"), found) == "grid"  # extensions beat fallbacks
    assert detect(omnisdk.Item.of_file(tmp_path / "a.loose"), found) == "loose"
    assert detect(omnisdk.Item.of_file(tmp_path / "probe-a.bin"), found) is None
    assert detect(omnisdk.Item.of_file(tmp_path / "probe-a.bin"), {**found, "named": Named}) == "named"
    png = tmp_path / "image.loose"  # a claimed extension wins over the content's magic bytes
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(8))
    assert detect(omnisdk.Item.of_file(png), {**found, "img": type("Img", (Probe,), {"extensions": (".png",)})}) == "loose"


@probes("python_types", "accepts_object")
def test_detection_reads_python_types_and_calls_accepts_object():
    class Base:
        pass

    class Child(Base):
        pass

    def dotted(cls: type) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    class Wide(Probe):
        name, python_types = "wide", (dotted(Base),)

    class Narrow(Probe):
        name, python_types = "narrow", (dotted(Child),)

    class Test(Probe):
        name = "test"

        @classmethod
        def accepts_object(cls, obj: Any) -> bool:
            return getattr(obj, "is_probe", False)

    assert detect(omnisdk.Item(data=Child()), {"wide": Wide}) == "wide"
    assert detect(omnisdk.Item(data=Child()), {"wide": Wide, "narrow": Narrow}) == "narrow"  # most specific
    tagged = Base()
    tagged.is_probe = True
    assert detect(omnisdk.Item(data=tagged), {"test": Test}) == "test"
    assert detect(omnisdk.Item(data=Base()), {"test": Test}) is None


@probes("uses")
def test_dependencies_follow_uses():
    plugins = {"probe": Probe(), "probe2": Probe2()}
    assert dependencies_of(plugins, "probe2") == ["probe2", "probe"] and dependencies_of(plugins, "probe") == ["probe"]
    # The one walk every caller uses: transitive, each name once, safe against a cycle.
    uses = {"a": ("b",), "b": ("c", "a"), "c": (), "d": ("c",)}
    assert with_dependencies(["a", "d"], uses.__getitem__) == ["a", "d", "b", "c"]
    # A preset's base and a model's plugins add the used plugins (video uses image) the same way.
    omnisdk.register_plugin(Hooks(), name="probes")
    model = omnisdk.OmniModel.from_preset("tiny", modalities=["probe2"])
    assert set(model.plugins) == {"text", "probe", "probe2"}


@probes("training")
def test_training_defaults_reach_the_specialist_config():
    from omnisdk.trainers.stages import specialist_config

    plugins = {"probe": Probe(), "probe2": Probe2()}
    plain, tuned = specialist_config(plugins, "probe"), specialist_config(plugins, "probe2")
    assert plain.steps == 200 and plain.lora is None
    assert tuned.steps == 7 and tuned.lora is not None and tuned.lora.rank == 8
    assert "adapters.probe.*" in tuned.trainable  # through `uses`
    assert specialist_config(plugins, "probe2", {"lora": None}).lora is None  # the user's setting wins


# -- probes in a tiny model ---------------------------------------------------------------------------------
@probes("Config", "bind", "preprocess", "build_adapter", "instructions", "fusion", "recovery_plan")
def test_model_reads_config_binds_frames_and_owns(model):
    assert model.plugins["probe2"].config.scale == 2.0 and isinstance(model.plugins["probe"].config, omnisdk.PluginConfig)
    assert Probe2.bound == [model.runtime] and model.plugins["probe2"].runtime is model.runtime
    items = [_item(1.0), _item(1.0, "probe2")]
    query, doc = model.encode(items, role="query"), model.encode(items, role="document")
    assert np.isfinite(query).all()
    assert np.allclose(query[0], doc[0]) and not np.allclose(query[1], doc[1])  # only probe2 has an instruction
    assert model.parameter_owner("adapters.probe.lin.weight") == ("probe", "shared")
    assert model.parameter_owner("adapters.probe2.lin.weight") == ("probe2", "owned")
    assert model.recovery_plan("probe") is None
    assert model.recovery_plan("probe2").trainable == ["adapters.probe2.lin.weight"]


@probes("length_hint", "length_hints")
def test_encode_orders_batches_by_length_hints(model):
    model.encode([_item(1.0), _item(3.0), _item(2.0)], batch_size=1)
    model.encode([_item(1.0, "probe2"), _item(3.0, "probe2"), _item(2.0, "probe2")], batch_size=1)
    assert Probe.seen == [[1.0], [3.0], [2.0], [3.0], [2.0], [1.0]]  # the default hint (text length) is 0


@probes("chunk", "describe_locator")
def test_chunking_and_locator_words_reach_search_and_the_cli(model, tmp_path):
    from omnisdk.commands import expand_chunks

    path = tmp_path / "a.dat"
    path.write_text("x")
    assert len(expand_chunks(model, [omnisdk.Item.of_file(path, "probe2")])) == 2
    assert len(expand_chunks(model, [omnisdk.Item.of_file(path, "probe")])) == 1
    with omnisdk.open_store(":memory:") as store:
        from omnisdk.store.base import CollectionMeta, StoredPoint

        store.create_collection("c", CollectionMeta(dim=model.dim, fingerprint=model.fingerprint))
        vector = model.encode([_item(1.0)])[0]
        payload = {"modality": "probe2", "source": str(path), "locator": {"t0": 0.0, "t1": 1.0}}
        store.upsert("c", [StoredPoint("00000000-0000-0000-0000-000000000001", vector, payload)])
        hit = omnisdk.Searcher(store, "c", model, calibrate=False).search_vector(vector, limit=1)[0]
    assert hit.where == "probe window"


@probes("preview")
def test_the_app_draws_previews_with_the_models_plugins(model, tmp_path):
    from PIL import Image

    from omnisdk.apps.previews import PreviewCache, PreviewError

    path = tmp_path / "a.dat"
    path.write_text("50")
    cache = PreviewCache(tmp_path / "previews", plugins=model.plugins)
    try:
        assert cache.modalities == {"probe2"}  # text and probe keep the default: no picture
        picture = Image.open(cache.png(path, "probe2", omnisdk.Locator(t0=7, t1=8)))
        assert picture.size == (6, 4) and picture.getpixel((0, 0)) == (7, 7, 7)
        assert picture.getpixel((0, 3)) == (100, 100, 100)  # 50 x the model's scale of 2, read in the child
        with pytest.raises(PreviewError, match="'probe' plugin draws no previews"):
            cache.png(path, "probe")
    finally:
        cache.close()


@probes("frozen")
def test_training_keeps_frozen_parameters(model):
    from omnisdk.trainers.config import TrainConfig
    from omnisdk.trainers.contrastive import ContrastiveTrainer

    trainer = object.__new__(ContrastiveTrainer)  # only the parameter choice, not a run
    trainer.model, trainer.config = model, TrainConfig(trainable=["adapters.*"])
    chosen = trainer._select_trainable()
    assert "adapters.probe.lin.bias" in chosen and "adapters.probe2.lin.bias" not in chosen
    assert "adapters.probe2.lin.weight" in chosen


@probes("split_rows", "collate_rows")
def test_the_prepared_cache_goes_through_rows(model, tmp_path):
    model.use_cache(tmp_path / "cache")
    batches = {m: model.prepare(m, [_item(1.0, m)]).batch["v"] for m in ("probe", "probe2")}
    assert batches["probe"].flatten().tolist() == [1.0] and batches["probe2"].flatten().tolist() == [6.0]


@probes("aspect_prompts")
def test_aspect_prompts_seed_the_aspects():
    from omnisdk.aspects import resolve_prompts

    prompts = resolve_prompts({"probe": Probe(), "probe2": Probe2()}, 2)
    assert prompts["probe"] == ["the whole item", "the objects in it"]
    assert prompts["probe2"] == ["only the colour", "aspect 2 of it"]
