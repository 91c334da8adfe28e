"""`omnisdk pipeline run`: every stage of decouple-fuse-recover, each written to its own directory.

    OUT/data/                  OmniWorld, generated unless the config names a dataset
    OUT/base/                  the base model
    OUT/aligned/               every adapter aligned with the frozen backbone (when [align] has steps);
                               the start of the specialists, fusion's task vectors and the joint baseline
    OUT/specialists/<plugin>/  one specialist per plugin
    OUT/fused/                 task-vector fusion of the specialists (owned modules copied)
    OUT/drift.json|md          the Projector Drift check on the dev split
    OUT/recovered/<plugin>/    Projector Recovery, one plugin after the other (the last is "recovered")
    OUT/rehearsed/             short balanced multi-modal rehearsal
    OUT/joint/                 the multi-task baseline: aligned base trained on everything, with each
                               modality's specialist steps
    OUT/cache/                 prepared inputs (decoded once, read by every stage and evaluation)
    OUT/evals/<stage>.json     test-split evaluation of each stage
    OUT/report.json|md|png     the stage table

A stage whose checkpoint (or report) exists is skipped; a training stage killed part-way resumes
from its last checkpoint. Rerunning the same command therefore finishes an interrupted run.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from omnisdk import checkpoint as ckpt
from omnisdk.datasets.format import Dataset, load_dataset
from omnisdk.errors import OmniError
from omnisdk.precision import resolve_device
from omnisdk.eval.report import EvalReport
from omnisdk.pipeline.config import PipelineConfig
from omnisdk.pipeline.drift import DriftReport, check_drift

log = logging.getLogger(__name__)


class Pipeline:
    """Decouple, fuse, recover end to end: data, base, (warm-up), align, specialists, fusion, drift check,
    recovery, rehearsal (and the joint baseline), each stage evaluated as soon as it exists.

        config = omnisdk.PipelineConfig.model_validate(...)   # or omnisdk.pipeline.config.load_config("tiny")
        report = omnisdk.Pipeline(config, "runs/tiny").run()

    A stage whose checkpoint is complete is skipped, so a killed run resumes where it stopped.

    Args:
        config: the run's settings (a preset or a TOML file through `load_config`).
        out: the run's directory: data, one checkpoint per stage, report.md / report.json / report.png.
        say: where progress lines go (default print).
        show_progress: progress bars (None: on a terminal only).
        device: "cpu", "cuda" or None (CUDA if available) for every stage's training and evaluation.

    Raises:
        OmniError: (from `run`) a stage fails; its message names the stage, and the finished ones are kept.
    """

    def __init__(self, config: PipelineConfig, out: str | Path, *, say: Callable[[str], None] = print,
                 show_progress: bool | None = None, device: str | None = None):
        self.config, self.out, self.say, self.show_progress = config, Path(out), say, show_progress
        self.device = device  # auto (None), cpu, cuda: every stage trains and evaluates there
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        from omnisdk.prepared import PreparedCache

        self.cache = PreparedCache(config.cache_dir or self.out / "cache")

    # -- stages -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every stage, each evaluated as soon as it exists; report.* is rewritten after each evaluation.

        Returns:
            The report as a dict: per stage, per task and per modality metrics, the drift check, timings.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(self.config.model_dump_json(indent=2))
        self.reports: dict[str, EvalReport] = {}
        self.drift: DriftReport | None = None
        dataset = self._stage("data", self._data)
        base = self._evaluated("base", self._stage("base", self._base), dataset)
        warmed = self._stage("warmup", lambda: self._warmup(base, dataset))
        base = self._evaluated("warmup", warmed, dataset) if warmed else base
        aligned = self._stage("align", lambda: self._align(base, dataset))
        start = self._evaluated("aligned", aligned, dataset) if aligned else base
        specialists = {p: self._evaluated(f"specialist:{p}", self._stage(
            f"specialist:{p}", lambda p=p: self._specialist(start, p, dataset)), dataset) for p in self.config.specialists}
        fused = self._evaluated("fused", self._stage("fuse", lambda: self._fuse(start, specialists)), dataset)
        self.drift = self._stage("drift", lambda: self._drift(specialists, fused, dataset))
        recovered = self._stage("recover", lambda: self._recover(fused, self.drift, dataset))
        self._evaluated("recovered", recovered, dataset)
        self._evaluated("rehearsed", self._stage("rehearse", lambda: self._rehearse(recovered, dataset)), dataset)
        if self.config.joint_baseline:
            self._evaluated("joint", self._stage("joint", lambda: self._joint(start, dataset)), dataset)
        return self._write_report()

    def _evaluated(self, name: str, directory: Path, dataset: Dataset) -> Path:
        """Evaluate a stage's checkpoint on the eval split (or reuse a matching report); returns the directory."""
        self.reports[name] = self._stage(f"eval:{name}", lambda: self._evaluate(name, directory, dataset))
        self._write_report()
        return directory

    def _write_report(self) -> dict[str, Any]:
        from omnisdk.pipeline.report import write_report

        drift = self.drift or DriftReport(split=self.config.dev_split, threshold=self.config.drift.threshold,
                                          metric=self.config.drift.metric, plugins=[])
        return write_report(self.out, self.config, self.reports, drift, self.timings, self.skipped)

    def _stage(self, name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        self.say(f"[{name}] ...")
        result = work()
        self.timings[name] = round(time.perf_counter() - start, 2)
        return result

    def _done(self, directory: Path, name: str) -> bool:
        if (directory / ckpt.MANIFEST).is_file():
            self.skipped.append(name)
            self.say(f"[{name}] done already: {directory}")
            return True
        return False

    def _data(self) -> Dataset:
        settings = self.config.data
        if settings.path is not None:
            return load_dataset(settings.path)
        root = self.out / "data"
        meta_path = root / "dataset.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("size") == settings.omniworld_size and meta.get("seed") == settings.seed:
                self.skipped.append("data")
                return load_dataset(root)
        from omnisdk.datasets.omniworld.build import make_omniworld

        make_omniworld(root, seed=settings.seed, size=settings.omniworld_size, overwrite=True)
        return load_dataset(root)

    def _base(self) -> Path:
        if self.config.base_model is not None:
            return self.config.base_model
        directory = self.out / "base"
        if not self._done(directory, "base"):
            from omnisdk.presets import build_base

            build_base(self.config.base_preset, overrides=self.config.base_plugins).save(directory)
        return directory

    def _warmup(self, base: Path, dataset: Dataset) -> Path | None:
        settings = dict(self.config.warmup)
        if not settings or int(settings.get("steps", 1)) == 0:
            return None
        method = settings.pop("method", "coma")
        if method != "coma":
            raise OmniError(f"unknown warm-up method '{method}'; the pipeline knows: coma")
        from omnisdk.trainers.coma import coma_warmup

        directory = self.out / "warmup"
        if not self._done(directory, "warmup"):
            result = coma_warmup(base, dataset, directory, settings, show_progress=self.show_progress,
                                 cache=self.cache, device=self.device)
            self.say(f"[warmup] coma, {result.steps} steps, loss {result.final_loss:.4f}, {result.seconds:.0f} s")
        return directory

    def _align(self, base: Path, dataset: Dataset) -> Path | None:
        if not self.config.align or int(self.config.align.get("steps", 0)) == 0:
            return None
        from omnisdk.trainers.stages import align

        directory = self.out / "aligned"
        if not self._done(directory, "align"):
            result = align(base, dataset, directory, self.config.align_settings(), show_progress=self.show_progress,
                           cache=self.cache, device=self.device)
            self.say(f"[align] {result.steps} steps, loss {result.final_loss:.4f}, {result.seconds:.0f} s")
        return directory

    def _specialist(self, base: Path, plugin: str, dataset: Dataset) -> Path:
        from omnisdk.trainers.stages import train_specialist

        directory = self.out / "specialists" / plugin
        if not self._done(directory, f"specialist:{plugin}"):
            result = train_specialist(base, plugin, dataset, directory, self.config.specialist_settings(plugin),
                                      show_progress=self.show_progress, cache=self.cache, device=self.device)
            self.say(f"[specialist:{plugin}] {result.steps} steps, loss {result.final_loss:.4f}, {result.seconds:.0f} s")
        return directory

    def _fuse(self, base: Path, specialists: dict[str, Path]) -> Path:
        from omnisdk.fusion import fuse

        directory = self.out / "fused"
        if not self._done(directory, "fuse"):
            f = self.config.fusion
            weights = [f.weights.get(p, 1.0) for p in specialists]
            report = fuse(base, list(specialists.values()), method=f.method, out=directory, weights=weights,
                          density=f.density, lam=f.scale, seed=f.seed, statistics=f.statistics,
                          progress=self.show_progress)
            (self.out / "fusion.md").write_text(report.markdown() + "\n")
        return directory

    def _drift(self, specialists: dict[str, Path], fused: Path, dataset: Dataset) -> DriftReport:
        path = self.out / "drift.json"
        fused_print = ckpt.read_manifest(fused).fingerprint
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("fused_fingerprint") == fused_print:
                self.skipped.append("drift")
                return DriftReport(**saved["report"])
        d = self.config.drift
        report = check_drift(specialists, fused, dataset, split=self.config.dev_split, threshold=d.threshold,
                             metric=d.metric, batch_size=self.config.eval_batch_size, show_progress=self.show_progress,
                             cache=self.cache, precision=self.config.eval_precision, device=resolve_device(self.device))
        path.write_text(json.dumps({"fused_fingerprint": fused_print, "report": report.model_dump()}, indent=2))
        (self.out / "drift.md").write_text(report.to_markdown() + "\n")
        self.say(report.to_markdown())
        return report

    def _recover(self, fused: Path, drift: DriftReport, dataset: Dataset) -> Path:
        """Recover the flagged plugins (or every plugin where recovery applies) one after the other."""
        from omnisdk.trainers.stages import recover

        candidates = [p for p in drift.plugins if p.recovery_available]
        chosen = [p.plugin for p in candidates if p.flagged or not self.config.drift.only_flagged]
        current = fused
        for plugin in chosen:
            directory = self.out / "recovered" / plugin
            if not self._done(directory, f"recover:{plugin}"):
                result = recover(current, plugin, dataset, directory, self._settings(self.config.recovery),
                                 show_progress=self.show_progress, cache=self.cache, device=self.device)
                self.say(f"[recover:{plugin}] {result.steps} steps, loss {result.final_loss:.4f}")
            current = directory
        if not chosen:
            self.say("[recover] no plugin needs recovery: the recovered model is the fused one")
        return current

    def _settings(self, stage: dict[str, Any]) -> dict[str, Any]:
        """[train] then the stage's table; a low-rate stage does not inherit the adapters' larger rate."""
        shared = {k: v for k, v in self.config.train.items() if k != "adapter_learning_rate"}
        return {**shared, **stage}

    def _rehearse(self, recovered: Path, dataset: Dataset) -> Path:
        from omnisdk.trainers.stages import rehearse

        directory = self.out / "rehearsed"
        if not self._done(directory, "rehearse"):
            rehearse(recovered, dataset, directory, self._settings(self.config.rehearsal),
                     show_progress=self.show_progress, cache=self.cache, device=self.device)
        return directory

    def _joint(self, base: Path, dataset: Dataset) -> Path:
        from omnisdk.trainers.stages import train_joint

        directory = self.out / "joint"
        if not self._done(directory, "joint"):
            settings = {**self.config.train, **self.config.joint}
            if self.config.joint_matches_specialist_steps:
                steps = self._specialist_steps()
                if "steps" not in self.config.joint:
                    settings["steps"] = sum(steps.values())
                if "quotas" not in self.config.joint:
                    # each modality gets the share of batches its specialist had: the same pairs per
                    # modality, so the comparison is fair and the joint costs what the specialists cost
                    settings["quotas"] = {plugin: float(n) for plugin, n in steps.items() if n > 0}
            train_joint(base, dataset, directory, settings, show_progress=self.show_progress,
                        cache=self.cache, device=self.device)
        return directory

    def _specialist_steps(self) -> dict[str, int]:
        """Each specialist's training steps, by plugin (its preset setting, else the plugin's default)."""
        from omnisdk.plugin_manager import get_modality

        return {plugin: int(self.config.specialist_settings(plugin).get("steps", get_modality(plugin).training.steps))
                for plugin in self.config.specialists}

    def _evaluate(self, name: str, directory: Path, dataset: Dataset) -> EvalReport:
        from omnisdk.eval.runner import evaluate
        from omnisdk.model import OmniModel

        path = self.out / "evals" / f"{name.replace(':', '-')}.json"
        fingerprint = ckpt.read_manifest(directory).fingerprint
        if path.is_file():
            try:
                saved = EvalReport.from_json(path)
            except OmniError as exc:  # e.g. cut short by a kill before reports were written atomically
                log.warning("%s is unreadable (%s); evaluating again", path, exc)
                saved = None
            if saved is not None and saved.model_fingerprint == fingerprint and saved.dataset_hash == dataset.content_hash():
                self.skipped.append(f"eval:{name}")
                return saved
        model = OmniModel.load(directory, device=resolve_device(self.device),
                              precision=self.config.eval_precision).use_cache(self.cache)
        report = evaluate(model, dataset, split=self.config.eval_split, batch_size=self.config.eval_batch_size,
                          show_progress=self.show_progress, label=name)
        self.cache.flush()
        report.to_json(path)
        return report


def clean(out: str | Path) -> None:
    """Remove a pipeline output directory (for `--fresh`)."""
    out = Path(out)
    if out.exists():
        if not (out / "config.json").is_file():
            raise OmniError(f"{out} does not look like a pipeline output (no config.json); not removing it")
        shutil.rmtree(out)
