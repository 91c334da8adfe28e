"""The pipeline's settings file (TOML), validated by pydantic. See presets/*.toml for complete examples."""
from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omnisdk.errors import OmniError

PRESETS = ("tiny", "demo", "small", "full")


class DataSettings(BaseModel):
    """Where the data comes from: an existing dataset directory, or OmniWorld generated into the run."""

    model_config = ConfigDict(extra="forbid")
    path: Path | None = None
    omniworld_size: Literal["tiny", "demo", "small", "full"] = "tiny"
    seed: int = 0


class FusionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = "ties"
    density: float = Field(0.5, gt=0, le=1)
    scale: float = Field(1.0, gt=0)  # the lambda applied to the combined task vector
    weights: dict[str, float] = {}  # plugin -> weight of its task vector; default 1 each
    seed: int = 0
    #: BatchNorm running statistics: "base" keeps the base's (estimated on every modality), "merge"
    #: merges each specialist's (estimated on its modality alone) like weights.
    statistics: Literal["base", "merge"] = "base"


class DriftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: a plugin whose dev macro nDCG@10 falls by more than this (absolute) after fusion is flagged.
    threshold: float = Field(0.02, ge=0)
    metric: str = "ndcg@10"
    #: recover only the flagged plugins (True) or every plugin whose fusion metadata allows recovery.
    only_flagged: bool = False


class PipelineConfig(BaseModel):
    """One run of decouple-fuse-recover. `train` holds TrainConfig fields for every stage; the
    per-stage tables override them (`specialist.<plugin>` per plugin)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "pipeline"
    base_preset: Literal["tiny", "small"] = "tiny"
    base_model: Path | None = None  # an existing base checkpoint instead of the preset
    #: plugin settings over the base preset's, e.g. {image = {tower = "resnet18"}}
    base_plugins: dict[str, dict[str, Any]] = {}
    specialists: list[str] = ["image", "video", "document", "audio"]
    data: DataSettings = DataSettings()
    eval_split: str = "test"
    dev_split: str = "dev"
    eval_batch_size: int = 32
    #: how evaluations and the drift check compute (bf16: autocast forward passes, float32 vectors)
    eval_precision: Literal["fp32", "bf16"] = "fp32"
    train: dict[str, Any] = {}
    specialist: dict[str, dict[str, Any]] = {}
    fusion: FusionSettings = FusionSettings()
    drift: DriftSettings = DriftSettings()
    #: an optional warm-up stage right after the base, e.g. `warmup = {method = "coma", steps = 200}`
    #: (CoMa compression pre-training, trainers/coma.py); its checkpoint is the base of every later
    #: stage. Empty, or `steps = 0`, skips it.
    warmup: dict[str, Any] = {}
    #: the alignment stage (every adapter on every modality, backbone frozen) before the specialists;
    #: `steps = 0` (or no table) skips it and the specialists start from the base.
    align: dict[str, Any] = {}
    #: prepared-input cache shared by every stage and evaluation; default OUT/cache.
    cache_dir: Path | None = None
    recovery: dict[str, Any] = {}
    rehearsal: dict[str, Any] = {}
    joint: dict[str, Any] = {}
    #: joint baseline steps = the specialists' steps together (a fair budget), unless joint.steps is set.
    joint_matches_specialist_steps: bool = True
    #: train and evaluate the joint baseline (the demo leaves it out to save time)
    joint_baseline: bool = True

    def specialist_settings(self, plugin: str) -> dict[str, Any]:
        return {**self.train, **self.specialist.get(plugin, {})}

    def align_settings(self) -> dict[str, Any]:
        """[train] then [align]; the adapters' rate is alignment's rate unless [align] sets its own."""
        settings = {**{k: v for k, v in self.train.items() if k != "adapter_learning_rate"}, **self.align}
        if "adapter_learning_rate" in self.train and "learning_rate" not in self.align:
            settings["learning_rate"] = self.train["adapter_learning_rate"]
        return settings


def load_config(source: str | Path) -> PipelineConfig:
    """A preset name (tiny, demo, small, full) or a TOML file."""
    if str(source) in PRESETS:
        text = resources.files("omnisdk.pipeline").joinpath("presets", f"{source}.toml").read_text()
        where = f"preset '{source}'"
    else:
        path = Path(source)
        if not path.is_file():
            raise OmniError(f"no pipeline config at {path}; name a TOML file or a preset ({', '.join(PRESETS)})")
        text, where = path.read_text(), str(path)
    try:
        return PipelineConfig(**tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise OmniError(f"{where}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise OmniError(f"{where}: {problems}") from None
