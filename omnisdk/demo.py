"""`omnisdk demo`: the whole method and the search on one machine, from nothing, in minutes.

1. generate OmniWorld at the size the pipeline config names (cached; `demo` by default);
2. run the pipeline (default: the `demo` preset, the small preset's pretrained MiniLM backbone with
   short stages: align, specialists, fusion, drift check, recovery, rehearsal) unless its finished
   run is cached;
3. copy the test split's corpus (scenes, digits, clips, PDFs, sounds, and the captions as .txt
   files) into one folder and index it into Qdrant Edge with the rehearsed model;
4. run one example query per direction (text to image, video, document and audio; audio to text;
   spoken digit to image), print each top 3, marking the hits the qrels call relevant, and count
   the examples whose top hit is relevant;
5. print the pipeline's stage table; `--serve` then opens the search app on that collection.

Everything lives under the user's cache directory (`omnisdk demo --cache DIR` to choose), so a
second run reuses the data, the trained models and the index.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omnisdk.datasets.format import Dataset, Record, load_dataset
from omnisdk.hookspecs import hookimpl

COLLECTION = "omniworld-demo"
EXAMPLES = (  # (task, what it shows)
    ("t2i", "text -> image"),
    ("t2v", "text -> video"),
    ("t2d", "text -> PDF page"),
    ("t2a", "text -> audio"),
    ("a2t", "audio -> caption text"),
    ("a2i", "spoken digit -> handwritten digit images"),
)
CORPUS_MODALITY = {"t2i": "image", "t2v": "video", "t2d": "document", "t2a": "audio", "a2t": "text", "a2i": "image"}


def default_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("omnisdk")) / "demo"


@dataclass
class DemoPaths:
    root: Path

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def model(self) -> Path:
        return self.pipeline / "rehearsed"


def run_demo(cache: Path | None = None, *, say: Callable[[str], None] = print, store_spec: str | None = None,
             config: str = "demo") -> DemoPaths:
    from omnisdk.pipeline.config import load_config

    paths = DemoPaths(Path(cache) if cache else default_cache())
    paths.root.mkdir(parents=True, exist_ok=True)
    settings = load_config(config)
    dataset = _data(paths, settings.data.omniworld_size, settings.data.seed, say)
    settings.data.path = dataset.root
    _train(paths, settings, say)
    id_of_file = _collect_corpus(dataset, paths.corpus)
    store = _index(paths, store_spec, say)
    try:
        relevant_top = _examples(paths, dataset, store, id_of_file, say)
    finally:
        store.close()
    say(f"\n{relevant_top} of {len(EXAMPLES)} example queries have a relevant top hit")
    say("\n" + served_hit_table(paths))
    report = (paths.pipeline / "report.md").read_text()
    say("\n" + report.split("## hit@1")[0].strip())
    say(f"\nfull report: {paths.pipeline / 'report.md'}")
    return paths


def served_hit_table(paths: DemoPaths) -> str:
    """The test-split hit@1 of the model the demo serves, per task, beside chance."""
    from omnisdk.eval.report import EvalReport
    from omnisdk.tables import markdown_table

    report = EvalReport.from_json(paths.pipeline / "evals" / f"{paths.model.name}.json")
    rows = [[t.task, f"{t.metrics['hit@1']:.3f}", f"{t.chance:.3f}", str(t.n_queries)] for t in report.tasks]
    return (f"hit@1 of the served model ({paths.model.name}) on the {report.split} split\n\n"
            + markdown_table(["task", "hit@1", "chance", "queries"], rows))


def _data(paths: DemoPaths, size: str, seed: int, say) -> Dataset:
    root = paths.root / (f"omniworld-{size}" if seed == 0 else f"omniworld-{size}-seed{seed}")
    if not (root / "dataset.json").is_file():
        from omnisdk.datasets.omniworld.build import make_omniworld

        say(f"[1/4] generating OmniWorld {size} in {root}")
        make_omniworld(root, size=size, seed=seed, overwrite=True)
    else:
        say(f"[1/4] OmniWorld {size}: {root} (cached)")
    return load_dataset(root)


def _train(paths: DemoPaths, config, say) -> None:
    from omnisdk.pipeline.runner import Pipeline

    cached = (paths.pipeline / "report.json").is_file()
    say(f"[2/4] the {config.name} pipeline in {paths.pipeline}" + (" (cached)" if cached else ": a few minutes"))
    Pipeline(config, paths.pipeline, say=(lambda line: None) if cached else say).run()


def _collect_corpus(dataset: Dataset, folder: Path) -> dict[tuple[str, int | None], str]:
    """Copy every corpus file (and each caption as a .txt) into `folder`; (file, page) -> corpus id.

    The whole corpus (dev and test items) goes in, so the example queries meet the same distractors
    as in evaluation.
    """
    id_of_file: dict[tuple[str, int | None], str] = {}
    for record in dataset.corpus.values():
        target = _copy(dataset, record, folder)
        if target is not None:
            id_of_file[(str(target.resolve()), (record.locator or {}).get("page"))] = record.id
    return id_of_file


def _copy(dataset: Dataset, record: Record, folder: Path) -> Path | None:
    if record.path:
        source = dataset.root / record.path
        target = folder / record.modality / source.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return target
    if record.text and record.modality == "text":
        target = folder / "captions" / f"{record.id}.txt"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(record.text, encoding="utf-8")
        return target
    return None


def _index(paths: DemoPaths, store_spec: str | None, say):
    from omnisdk.model import OmniModel
    from omnisdk.search import Indexer
    from omnisdk.store import open_store

    model = OmniModel.load(paths.model)
    store = open_store(store_spec or str(paths.store))
    report = Indexer(store, COLLECTION, model).index([paths.corpus], prune=True)
    say(f"[3/4] indexed {paths.corpus} into collection '{COLLECTION}' ({report.store}): {report.indexed} new, "
        f"{report.unchanged} unchanged, {report.failed} failed, {report.points_total} points")
    return store


def _examples(paths: DemoPaths, dataset: Dataset, store, id_of_file: dict[tuple[str, int | None], str], say) -> int:
    """Print each example's top 3; returns how many examples have a relevant top hit."""
    from omnisdk.search import Searcher

    relevant_top = 0
    searcher = Searcher(store, COLLECTION, model_dir=str(paths.model))
    say("[4/4] example queries (a tick marks a hit the qrels call relevant)")
    for task, title in EXAMPLES:
        queries = dataset.task_queries(task, "test")
        if not queries:
            say(f"\n{title}: no test queries for {task} in this dataset (espeak-ng missing?)")
            continue
        query = queries[0]
        item = dataset.item(query)
        shown = query.text if query.text else Path(query.path).name
        hits = searcher.search(item, limit=3, modalities=[CORPUS_MODALITY[task]])
        relevant = dataset.qrels["test"][query.id]
        say(f"\n{title}  [{task}]  query: {shown}")
        for hit in hits:
            cid = id_of_file.get(_file_key(hit))
            tick = "✓" if cid in relevant else " "
            where = f" ({hit.where})" if hit.where else ""
            label = dataset.corpus[cid].text if cid and dataset.corpus[cid].text else Path(hit.source).name
            say(f"  {tick} {hit.rank}. {hit.score:.3f}  {label}{where}")
        relevant_top += bool(hits) and id_of_file.get(_file_key(hits[0])) in relevant
    return relevant_top


def _file_key(hit) -> tuple[str, int | None]:
    page = getattr(hit.locator, "page", None) if hit.locator else None
    return str(Path(hit.source).resolve()), page


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo`."""
    add_commands(subparsers)


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="generate OmniWorld, train the demo pipeline, index it in Qdrant, search it")
    p.add_argument("--cache", help="where data, models and the index live (default: the user cache dir)")
    p.add_argument("--store", help="a store instead of the demo's own Qdrant Edge directory (e.g. http://host:6333)")
    p.add_argument("--config", default="demo", help="the pipeline to train: a preset or a TOML file (default demo)")
    p.add_argument("--serve", action="store_true", help="then open the search app on the demo collection")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    paths = run_demo(Path(args.cache) if args.cache else None, store_spec=args.store, config=args.config,
                     say=lambda line: print(line, flush=True))
    store = args.store or str(paths.store)
    print(f"\nsearch it yourself: omnisdk search \"a small green star\" --collection {COLLECTION} --store {store}")
    if args.serve:
        from omnisdk.apps.commands import cmd_app

        app_args = argparse.Namespace(collection=COLLECTION, store=store, model=str(paths.model), host=args.host,
                                      port=args.port, max_upload_mb=200, upload_dir=None, no_index_tab=False)
        return cmd_app(app_args)
    return 0
