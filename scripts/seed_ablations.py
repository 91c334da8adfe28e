"""Seed-method ablations at equal budget (issue 12, section 4): plain, +EGA, +AGFF, +CoMa, all three.

Every variant starts from one aligned checkpoint (default: the small pipeline run's `aligned/`) and
trains like the pipeline's joint baseline (trainers/stages.py `train_joint`, the run's [train] and
[joint] settings, each modality's share of batches = its specialist's steps) for the SAME number of
contrastive steps, batch size and pairs. What each method adds before those steps:

- +EGA: nothing; the loss amplifies hard negatives' gradients (`ega` in the training settings).
- +AGFF: K aspect tokens are attached to the start checkpoint (`OmniModel.enable_aspects`, the
  tokens initialised from the plugins' aspect prompts, as `omnisdk init --aspects K` does) and train
  within the equal-budget steps, with everything else. Aspects exist only from init, and the
  faithful path (a base built with aspects, then its own align stage) would cost a full align
  (~1,100 s) per setting; attaching them to the aligned checkpoint costs nothing extra, at the price
  that step 0 reads new token positions the alignment never trained (the comparison is harsh on AGFF
  rather than generous).
- +CoMa: the CoMa warm-up (trainers/coma.py) runs on the aligned checkpoint first; its steps are
  EXTRA to the budget and their time is reported in a column of its own, as the paper reports its
  compression stage apart. (In a pipeline the warm-up runs before alignment; here it follows it, so
  the five variants share one aligned start.)
- all three: CoMa warm-up (the same checkpoint as +CoMa's), then aspects, then EGA training.

Settings (EGA factor and rule, K, CoMa tokens and steps) are chosen on the DEV split: `--sweep`
trains each method alone over its grid (`--ega-factor 2,4 --aspects 2,4 ...`) and keeps the best dev
macro nDCG@10 in OUT/settings.json; later runs use that file. Without a sweep (and no settings.json)
each grid's first value is used and the report says the settings were not tuned. The test split is
evaluated once, for the chosen settings only.

Report (OUT/ablation.json|md|png): test nDCG@10 and hit@1 per task and macro, the same over
OmniWorld's compositional held-out tasks, training time (and CoMa's extra), index size (bytes on disk
of a Qdrant Edge collection of the test corpus, and of its vectors alone) and search latency p50/p99 over `--latency-points` random
points (scripts/ablation_costs.py; AGFF through its multivector path).

Resumable: every checkpoint, evaluation and measurement is a file under OUT, skipped when present
(training stages also resume from their last checkpoint). Inputs are only read: the prepared-input
cache is hard-linked into OUT/cache (new rows are written there, never into the source).

    OMP_NUM_THREADS=1 nice -n 19 python scripts/seed_ablations.py --out runs/ablations [--sweep]
    python scripts/seed_ablations.py --out /tmp/abl --steps 4 --coma-steps 4 --latency-points 2000  # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation_variants import (LABELS, METHODS, VARIANTS, MethodSettings, best, check_variants,  # noqa: E402
                               first_of_grid, held_out_tasks, method_slug, run_slug, sweep_grid)

RUN = Path("/work/runs/small-r2-s0")
SETTINGS_FILE = "settings.json"


class Context:
    """What every stage reads: the inputs, OUT, the training settings and the options."""

    def __init__(self, args: argparse.Namespace):
        from omnisdk.datasets.format import load_dataset
        from omnisdk.pipeline.config import PipelineConfig

        self.args, self.out = args, args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.aligned = args.aligned
        self.dataset = load_dataset(args.data)
        self.pipeline = PipelineConfig.model_validate_json(args.pipeline_config.read_text())
        self.cache = _linked_cache(args.cache, self.out / "cache")
        self.train = joint_settings(self.pipeline)
        self.steps = args.steps or self.train["steps"]

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def joint_settings(config: Any) -> dict[str, Any]:
    """The pipeline's joint-baseline settings, as omnisdk/pipeline/runner.py `Pipeline._joint` makes
    them: [train] then [joint], steps = the specialists' steps together, and each modality's share
    of batches = its specialist's steps (the same pairs per modality as the specialists saw)."""
    from omnisdk.plugin_manager import get_modality

    settings = {**config.train, **config.joint}
    steps = {p: int(config.specialist_settings(p).get("steps", get_modality(p).training.steps)) for p in config.specialists}
    if config.joint_matches_specialist_steps:
        settings.setdefault("steps", sum(steps.values()))
        if "quotas" not in config.joint:
            settings["quotas"] = {p: float(n) for p, n in steps.items() if n > 0}
    settings.setdefault("steps", 200)
    return settings


def _linked_cache(source: Path | None, target: Path) -> Path | None:
    """OUT/cache as hard links of `source`: free, and writes (new shards by rename, deletions) land
    in OUT only, since the cache never rewrites a shard file in place (omnisdk/prepared/store.py)."""
    if source is None:
        return None
    if not target.exists():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        if subprocess.run(["cp", "-al", str(source), str(tmp)], capture_output=True).returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)  # another filesystem: a real copy
        tmp.rename(target)
    return target


# -- stages ---------------------------------------------------------------------------------------
def warmed(ctx: Context, settings: MethodSettings) -> Path:
    """The CoMa warm-up of the aligned checkpoint (shared by +CoMa and all three)."""
    from omnisdk.trainers.coma import coma_warmup

    directory = ctx.out / "warm" / method_slug("coma", settings)
    if not (directory / "omnisdk.json").is_file():
        ctx.say(f"CoMa warm-up -> {directory}")
        shutil.rmtree(directory, ignore_errors=True)  # a warm-up keeps no resumable state: start over
        coma_warmup(ctx.aligned, ctx.dataset, directory, settings.coma.model_dump(), show_progress=ctx.args.progress,
                    cache=ctx.cache)
    return directory


def with_aspects(ctx: Context, start: Path, name: str, settings: MethodSettings) -> Path:
    """`start` with K aspect tokens attached (initialised from the plugins' prompts); nothing is trained."""
    from omnisdk import checkpoint as ckpt
    from omnisdk.model import OmniModel

    directory = ctx.out / "start" / name
    if not (directory / "omnisdk.json").is_file():
        model = OmniModel.load(start)
        parent = model.fingerprint
        model.enable_aspects(settings.agff.aspects, pairs=settings.agff.pairs)
        model.save(directory, lineage=ckpt.Lineage(stage="aspects", parents=[parent], method="agff",
                                                   settings=settings.agff.model_dump()))
    return directory


def trained(ctx: Context, methods: tuple[str, ...], settings: MethodSettings, steps: int) -> Path:
    """The variant's checkpoint after `steps` joint contrastive steps (trained unless it exists)."""
    from omnisdk.trainers.stages import train_joint

    slug = run_slug(methods, settings)
    directory = ctx.out / "runs" / f"steps{steps}" / slug
    if (directory / "omnisdk.json").is_file():
        return directory
    start = warmed(ctx, settings) if "coma" in methods else ctx.aligned
    if "agff" in methods:
        start = with_aspects(ctx, start, run_slug([m for m in methods if m != "ega"], settings), settings)
    overrides = {**ctx.train, "steps": steps, "ega": settings.ega.model_dump() if "ega" in methods else None}
    ctx.say(f"train {slug}: {steps} steps from {start}")
    train_joint(start, ctx.dataset, directory, overrides, show_progress=ctx.args.progress, cache=ctx.cache)
    return directory


def evaluated(ctx: Context, directory: Path, split: str) -> Any:
    """The split's EvalReport of a checkpoint (reused when saved for the same weights and data); on
    the test split also the index size of its corpus (evals/index.json)."""
    from omnisdk import checkpoint as ckpt
    from omnisdk.eval.report import EvalReport
    from omnisdk.eval.runner import evaluate
    from omnisdk.model import OmniModel

    path, costs = directory / "evals" / f"{split}.json", directory / "evals" / "index.json"
    fingerprint = ckpt.read_manifest(directory).fingerprint
    if path.is_file() and (split != "test" or _index_current(costs)):
        saved = EvalReport.from_json(path)
        if saved.model_fingerprint == fingerprint and saved.dataset_hash == ctx.dataset.content_hash():
            return saved
    from ablation_costs import CapturingEncoder, index_size

    ctx.say(f"evaluate {directory.name} on {split}")
    model = OmniModel.load(directory, precision=ctx.pipeline.eval_precision)
    if ctx.cache is not None:
        model.use_cache(ctx.cache)
    encoder = CapturingEncoder(model) if split == "test" else model
    report = evaluate(encoder, ctx.dataset, split=split, batch_size=ctx.pipeline.eval_batch_size,
                      show_progress=ctx.args.progress, label=directory.name)
    if split == "test":
        costs.parent.mkdir(parents=True, exist_ok=True)
        costs.write_text(json.dumps(index_size(model, list(encoder.documents.values())), indent=2))
    report.to_json(path)
    return report


def _index_current(path: Path) -> bool:
    from ablation_costs import INDEX_FORMAT

    return path.is_file() and json.loads(path.read_text()).get("format") == INDEX_FORMAT


def latency(ctx: Context, directory: Path) -> dict[str, Any]:
    """Search latency for the checkpoint's layout (single, or AGFF with K aspects), measured once per layout."""
    from omnisdk import checkpoint as ckpt

    aspects = ckpt.read_manifest(directory).backbone.aspects
    layout = "single" if aspects is None else f"agff-k{aspects.count}-{aspects.pairs}"
    path = ctx.out / "latency" / f"{layout}.json"
    a = ctx.args
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("points") == a.latency_points and saved.get("queries") == a.latency_queries:
            return saved
    from ablation_costs import search_latency
    from omnisdk.model import OmniModel

    ctx.say(f"latency of the {layout} layout at {a.latency_points} points")
    result = {"layout": layout, **search_latency(OmniModel.load(directory), a.latency_points, a.latency_queries)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


# -- settings -------------------------------------------------------------------------------------
def sweep(ctx: Context, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """Each method alone over its grid, on dev; returns {chosen, tuned, table} and writes settings.json."""
    steps = ctx.args.sweep_steps or ctx.steps
    default = first_of_grid(grid)
    plain = evaluated(ctx, trained(ctx, (), default, steps), "dev")
    table = [{"method": "plain", "setting": "plain", "dev_ndcg@10": plain.macro["ndcg@10"], "dev_hit@1": plain.macro["hit@1"]}]
    chosen = default
    for method in METHODS:
        scores, candidates = {}, {}
        for candidate in sweep_grid(method, grid, default):
            name = method_slug(method, candidate)
            report = evaluated(ctx, trained(ctx, (method,), candidate, steps), "dev")
            scores[name], candidates[name] = report.macro["ndcg@10"], candidate
            table.append({"method": method, "setting": name, "dev_ndcg@10": report.macro["ndcg@10"],
                          "dev_hit@1": report.macro["hit@1"]})
        winner = candidates[best(scores)]
        chosen = chosen.model_copy(update={method: getattr(winner, method)})
        ctx.say(f"{method}: chose {best(scores)} on dev ({', '.join(f'{k} {v:.3f}' for k, v in scores.items())})")
    result = {"chosen": chosen.model_dump(), "tuned": True, "sweep_steps": steps, "table": table}
    (ctx.out / SETTINGS_FILE).write_text(json.dumps(result, indent=2))
    return result


def settings_for(ctx: Context, grid: dict[str, list[Any]]) -> dict[str, Any]:
    if ctx.args.sweep:
        return sweep(ctx, grid)
    path = ctx.out / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        ctx.say(f"settings chosen on dev earlier: {path}")
        return saved
    ctx.say("no dev sweep (OUT/settings.json): each grid's first value, NOT tuned on dev")
    return {"chosen": first_of_grid(grid).model_dump(), "tuned": False, "sweep_steps": None, "table": []}


# -- main -----------------------------------------------------------------------------------------
def _list(kind):
    return lambda text: [kind(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--aligned", type=Path, default=RUN / "aligned", help="the start of every variant")
    ap.add_argument("--data", type=Path, default=RUN / "data")
    ap.add_argument("--cache", type=Path, default=RUN / "cache", help="prepared-input cache to hard-link (read only)")
    ap.add_argument("--pipeline-config", type=Path, default=RUN / "config.json",
                    help="the pipeline run's config.json: its joint-baseline settings are every variant's")
    ap.add_argument("--steps", type=int, help="contrastive steps of every variant (default: the joint baseline's)")
    ap.add_argument("--variants", type=_list(str), default=list(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    ap.add_argument("--sweep", action="store_true", help="choose settings on dev first (each method alone over its grid)")
    ap.add_argument("--sweep-steps", type=int, help="steps of a sweep run (default: --steps; equal reuses the runs)")
    ap.add_argument("--ega-factor", type=_list(float), default=[2.0, 4.0])
    ap.add_argument("--ega-rule", type=_list(str), default=["relative"])
    ap.add_argument("--aspects", type=_list(int), default=[4, 2])
    ap.add_argument("--coma-tokens", type=_list(int), default=[32, 8])
    ap.add_argument("--coma-steps", type=_list(int), default=[200])
    ap.add_argument("--latency-points", type=int, default=100_000)
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--progress", action="store_true", help="progress bars")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from ablation_report import write_report

    args = parse_args(argv)
    variants = check_variants(args.variants)
    grid = {"ega_factor": args.ega_factor, "ega_rule": args.ega_rule, "aspects": args.aspects,
            "coma_tokens": args.coma_tokens, "coma_steps": args.coma_steps}
    ctx = Context(args)
    ctx.say(f"{len(variants)} variants x {ctx.steps} steps from {ctx.aligned}; training settings {json.dumps(ctx.train)}")
    chosen = settings_for(ctx, grid)
    settings = MethodSettings(**chosen["chosen"])
    rows = []
    for name in variants:
        directory = trained(ctx, VARIANTS[name], settings, ctx.steps)
        report = evaluated(ctx, directory, "test")
        rows.append(_row(ctx, name, directory, settings, report))
        write_report(ctx.out, rows, chosen, held_out_tasks(ctx.dataset, "test"), ctx.train, ctx.steps)
    ctx.say(f"wrote {ctx.out / 'ablation.md'}")


def _row(ctx: Context, name: str, directory: Path, settings: MethodSettings, report: Any) -> dict[str, Any]:
    from omnisdk import checkpoint as ckpt

    methods = VARIANTS[name]
    metrics = ckpt.read_manifest(directory).lineage.metrics
    warm_s = None
    if "coma" in methods:
        warm = ckpt.read_manifest(ctx.out / "warm" / method_slug("coma", settings)).lineage.metrics
        warm_s = warm.get("seconds")
    return {"variant": name, "label": LABELS[name], "run": run_slug(methods, settings), "directory": str(directory),
            "train_s": metrics.get("seconds"), "pairs_seen": metrics.get("pairs_seen"), "warmup_s": warm_s,
            "final_loss": metrics.get("final_loss"), "index": json.loads((directory / "evals" / "index.json").read_text()),
            "latency": latency(ctx, directory), "report": report}


if __name__ == "__main__":
    main()
