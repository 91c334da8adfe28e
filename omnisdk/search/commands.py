"""CLI: `omnisdk index`, `omnisdk search`, `omnisdk collections`. Imports stay light: the parser is built on every call."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnisdk.errors import OmniError
from omnisdk.hookspecs import hookimpl
from omnisdk.items import printable
from omnisdk.precision import add_compute_arguments, compute_from

EXIT_ITEMS_FAILED = 3  # as omnisdk.cli: some files failed, the rest was done
STORE_HELP = ("where the vectors live: a directory (Qdrant Edge, embedded; default ./.omnisdk), http(s)://HOST:PORT "
              "(a Qdrant server; API key from QDRANT_API_KEY), :memory: or local:PATH (qdrant-client local mode)")
QUERY_FILES = ("image", "audio", "video", "document")


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `index`, `search` and `collections`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index", help="index files and folders into a collection (re-runs skip unchanged files)",
        description="Walk the paths (hidden files, symlinks and what .gitignore / .omnisdkignore files name are "
        "skipped), split each file into chunks (PDF pages, "
        "video segments, audio windows), embed them and write them to the collection. Unchanged files are skipped, "
        "changed ones replaced; a file that fails is logged and the rest goes on (exit 3). A killed run resumes "
        "when run again. With --watch it then keeps the collection in sync until Ctrl-C.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--collection", required=True)
    p.add_argument("--model", type=Path, help="checkpoint directory (default: the one the collection was indexed with)")
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--prune", action="store_true", help="delete the points of files under PATH that no longer exist "
                   "(or that the rules below now leave out)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="index only files matching GLOB (.gitignore syntax, relative to PATH; repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip files and folders matching GLOB (.gitignore syntax, relative to PATH; repeatable)")
    p.add_argument("--no-ignore", action="store_true", help="do not honour .gitignore and .omnisdkignore files")
    p.add_argument("--max-file-mb", type=float, metavar="MB", help="skip files larger than MB (listed in the summary)")
    p.add_argument("--watch", action="store_true", help="after indexing (with --prune), keep the collection in sync "
                   "as files are created, changed, moved or deleted, until Ctrl-C")
    p.add_argument("--debounce", type=float, default=1.0, metavar="SECONDS",
                   help="with --watch: handle a file once it has been quiet this long (default 1)")
    p.add_argument("--poll", type=float, metavar="SECONDS", help="with --watch: look for changes every SECONDS "
                   "instead of using native file-system events (network and container mounts)")
    p.add_argument("--batch-size", type=int, default=32, help="chunks embedded per batch (default 32)")
    p.add_argument("--decode-workers", type=int, metavar="N", help="threads decoding the next batches while the "
                   "model embeds (default: up to 4, or $OMNISDK_DECODE_WORKERS; 0: decode and embed in turn)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: Ray Data tasks decode, an actor pool embeds (GPU actors "
                   "where the cluster has GPUs), this process writes; needs omnisdk[ray] (docs/scale.md)")
    p.add_argument("--ray-address", metavar="ADDR", help="with --engine ray: the cluster to join ('auto', "
                   "ray://HOST:10001); default: a local cluster for this run")
    p.add_argument("--ray-actors", type=int, default=1, metavar="N", help="with --engine ray: embedding actors (default 1)")
    p.add_argument("--error-log", type=Path, help="JSONL of this run's failures (default: in the store, or .omnisdk/)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_compute_arguments(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "search", help="search a collection with text or a file",
        description="Encode the query with the collection's model (role 'query') and print the best chunks: "
        "rank, score, modality, source and locator (page or time span).",
    )
    p.add_argument("text", nargs="?", help="a text query")
    for kind in QUERY_FILES:
        p.add_argument(f"--{kind}", type=Path, metavar="FILE", help=f"query with this {kind} file")
    p.add_argument("--collection", required=True)
    p.add_argument("--model", type=Path, help="checkpoint directory (default: the one the collection was indexed with)")
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--limit", type=int, default=10, help="results to show (default 10)")
    p.add_argument("--modality", action="append", metavar="M", help="only results of this modality (repeat, or comma-separate)")
    p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                   help="score every point (--exact) or use the HNSW graph (--no-exact); default: exact up to 100k points")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="rank results of several modalities by the collection's per-modality score calibration, which "
                   "corrects the modality gap (default); --no-calibrate ranks by raw cosine similarity")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_compute_arguments(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("collections", help="list a store's collections: points, dimension, model")
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_collections)


def cmd_index(args: argparse.Namespace) -> int:
    from omnisdk.model import OmniModel
    from omnisdk.search.indexer import Indexer
    from omnisdk.store import check_fingerprint, open_store

    with open_store(args.store) as store:
        model_dir = args.model
        if store.collection_exists(args.collection):
            meta = store.get_meta(args.collection)
            if model_dir is None:
                model_dir = _recorded_model(meta, args.collection)
            _refuse_early(meta, model_dir, args.collection, check_fingerprint)
        elif model_dir is None:
            raise OmniError(f"collection '{args.collection}' is new: say which model indexes it with --model DIR")
        if args.engine == "ray" and args.watch:
            raise OmniError("--watch runs on this machine: use it without --engine ray (index once with Ray, then watch)")
        model = OmniModel.load(model_dir, **compute_from(args))
        options = dict(model_dir=model_dir, batch_size=args.batch_size, error_log=args.error_log,
                       progress=False if args.no_progress or args.json else None)
        if args.engine == "ray":
            from omnisdk.search.ray_engine import RayIndexer, RayOptions

            indexer = RayIndexer(store, args.collection, model, ray=RayOptions(address=args.ray_address,
                                                                               actors=args.ray_actors), **options)
        else:
            indexer = Indexer(store, args.collection, model, decode_workers=args.decode_workers, **options)
        if args.watch:
            return _watch(indexer, args)
        report = indexer.index(args.paths, prune=args.prune, rules=_rules(args))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.markdown())
    for error in report.errors:  # one line each: a name may hold a newline or bytes in no encoding
        print(f"omnisdk: failed: {printable(error.path)}: {error.cause}", file=sys.stderr)
    return EXIT_ITEMS_FAILED if report.errors else 0


def _watch(indexer, args: argparse.Namespace) -> int:
    """`index --watch`: the catch-up run's summary, then one line per batch, until Ctrl-C (or SIGTERM).

    The first signal lets the batch in progress finish (the collection stays consistent, the store
    is closed); a second one interrupts at once, which the crash-safe writes also survive.
    """
    import signal
    import threading

    from omnisdk.search.watch import Watcher

    stop = threading.Event()
    failed = []

    def on_signal(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("omnisdk: stopping after the current batch (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def on_report(report) -> None:
        failed.extend(report.errors)
        for error in report.errors:
            print(f"omnisdk: failed: {printable(error.path)}: {error.cause}", file=sys.stderr, flush=True)
        if args.json:
            print(json.dumps(report.as_dict()), flush=True)
        elif len(watcher.reports) == 1:
            print(report.markdown() + f"\n\nwatching {', '.join(str(r) for r in watcher.roots)} (Ctrl-C to stop)", flush=True)
        else:
            print(_batch_line(report), flush=True)

    def on_busy(exc) -> None:
        print(f"omnisdk: waiting: {exc}", file=sys.stderr, flush=True)

    watcher = Watcher(indexer, args.paths, rules=_rules(args), debounce=args.debounce, poll=args.poll,
                      on_report=on_report, on_busy=on_busy)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watcher.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped; collection '{args.collection}' is consistent", flush=True)
    return EXIT_ITEMS_FAILED if failed else 0


def _batch_line(report) -> str:
    """One line per watch batch: the time and what changed."""
    import time

    parts = [f"{n} {label}" for n, label in ((report.indexed, "indexed"), (report.copied, "moved or copied"),
                                             (report.pruned_files, "removed"), (report.failed + report.partial, "failed"))
             if n]
    return f"{time.strftime('%H:%M:%S')} {', '.join(parts) or 'no change'} ({report.points_total} points, {report.seconds:.1f} s)"


def cmd_search(args: argparse.Namespace) -> int:
    from omnisdk.items import Item
    from omnisdk.search.searcher import Searcher
    from omnisdk.special_files import check_regular_or_pipe, special_kind
    from omnisdk.store import open_store
    from omnisdk.tables import markdown_table

    files = [(kind, getattr(args, kind)) for kind in QUERY_FILES if getattr(args, kind) is not None]
    if len(files) + (args.text is not None) != 1:
        raise OmniError("give one query: a text, or one of --image, --audio, --video, --document FILE")
    if files:
        kind, path = files[0]
        if not path.exists():
            raise OmniError(f"no such file: {path}")
        check_regular_or_pipe(path)  # a socket or device is refused by name; a pipe is read once by encode
        query = Item.of_file(path if special_kind(path) else path.resolve(), kind)  # /dev/fd/N must stay as given
    else:
        query = Item.of_text(args.text)
    modalities = [m.strip() for raw in args.modality or [] for m in raw.split(",") if m.strip()] or None
    with open_store(args.store) as store:
        searcher = Searcher(store, args.collection, model_dir=args.model, exact=args.exact, calibrate=args.calibrate,
                            **compute_from(args))
        hits = searcher.search(query, limit=args.limit, modalities=modalities)
    if args.json:
        print(json.dumps({"collection": args.collection, "query": query.label(), "hits": [h.as_dict() for h in hits]}, indent=2))
        return 0
    if not hits:
        print(f"no results in collection '{args.collection}'" + (f" for modalities {', '.join(modalities)}" if modalities else ""))
        return 0
    if any(h.calibrated is not None for h in hits):  # ranked by the calibrated score: show it beside the cosine
        print(markdown_table(["rank", "calibrated", "cosine", "modality", "source", "locator"],
                             [[h.rank, f"{h.calibrated:.3f}", f"{h.score:.4f}", h.modality, h.source, h.where] for h in hits]))
    else:
        print(markdown_table(["rank", "score", "modality", "source", "locator"],
                             [[h.rank, f"{h.score:.4f}", h.modality, h.source, h.where] for h in hits]))
    for h in hits:  # text chunks: the matching passage under the table, by rank
        if h.text:
            print(f"\n{h.rank}. {Path(h.source).name}, {h.where}:\n" + _passage(h.text))
    return 0


def _passage(text: str, lines: int = 6, width: int = 160) -> str:
    """The first lines of a passage, indented, each cut at `width` characters."""
    shown = [line if len(line) <= width else line[: width - 3] + "..." for line in text.strip().splitlines()[:lines]]
    more = "\n    ..." if len(text.strip().splitlines()) > lines else ""
    return "\n".join("    " + line for line in shown) + more


def cmd_collections(args: argparse.Namespace) -> int:
    from omnisdk.store import StoreLockedError, open_store
    from omnisdk.tables import markdown_table

    rows = []
    with open_store(args.store) as store:
        for name in store.list_collections():
            meta = store.get_meta(name)
            try:
                points: int | None = store.count(name)
            except StoreLockedError:  # being indexed right now
                points = None
            rows.append({"collection": name, "points": points, "dim": meta.dim, "distance": meta.distance,
                         "fingerprint": meta.fingerprint, "model_path": meta.model_path, "created_at": meta.created_at})
        location = store.location
    if args.json:
        print(json.dumps({"store": location, "collections": rows}, indent=2))
        return 0
    if not rows:
        print(f"no collections in {location}")
        return 0
    print(markdown_table(["collection", "points", "dim", "model", "model path"],
                         [[r["collection"], "busy" if r["points"] is None else r["points"], r["dim"], r["fingerprint"][:12],
                           r["model_path"] or ""] for r in rows]))
    return 0


def _rules(args: argparse.Namespace):
    from pydantic import ValidationError

    from omnisdk.search.rules import WalkRules

    try:
        return WalkRules(include=args.include, exclude=args.exclude, ignore_files=not args.no_ignore,
                         max_file_mb=args.max_file_mb)
    except ValidationError as exc:
        raise OmniError(f"--max-file-mb must be a positive number of MiB, not {args.max_file_mb}") from exc


def _recorded_model(meta, collection: str) -> Path:
    if not meta.model_path or not Path(meta.model_path).is_dir():
        where = f" ({meta.model_path} is gone)" if meta.model_path else ""
        raise OmniError(f"collection '{collection}' needs its model{where}: pass --model DIR")
    return Path(meta.model_path)


def _refuse_early(meta, model_dir: Path, collection: str, check_fingerprint) -> None:
    """Another model is refused from its manifest, before its weights are loaded."""
    from omnisdk.checkpoint import read_manifest

    check_fingerprint(meta, read_manifest(model_dir).fingerprint, collection, "index into")
