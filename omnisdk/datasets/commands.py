"""CLI: `omnisdk datasets make|check`, registered through the `omnisdk_register_commands` hook."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omnisdk.hookspecs import hookimpl
from omnisdk.tables import markdown_table


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `datasets make` and `datasets check`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="generate and check datasets")
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    dsub.required = True
    make = dsub.add_parser("make", help="generate a dataset offline")
    make.add_argument("name", choices=["omniworld"])
    make.add_argument("--out", required=True, type=Path)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--size", default="tiny", choices=["tiny", "demo", "small", "full"])
    make.add_argument("--overwrite", action="store_true", help="replace an OmniWorld already in --out")
    make.add_argument("--json", action="store_true", help="print dataset.json's summary as JSON")
    make.set_defaults(func=cmd_datasets_make)
    check = dsub.add_parser("check", help="validate a dataset directory and summarise it")
    check.add_argument("path", type=Path)
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_datasets_check)


def cmd_datasets_make(args: argparse.Namespace) -> int:
    import time

    from omnisdk.datasets.omniworld.build import make_omniworld

    start = time.perf_counter()
    meta = make_omniworld(args.out, seed=args.seed, size=args.size, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    size_mb = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 1e6
    if args.json:
        print(json.dumps({k: meta[k] for k in ("name", "version", "seed", "size", "hash", "timings_s")} |
                         {"files": len(meta["files"]), "megabytes": round(size_mb, 2), "seconds": round(elapsed, 2)}, indent=2))
        return 0
    _print_dataset_summary(args.out)
    print(f"\nwrote {args.out}: {len(meta['files'])} files, {size_mb:.1f} MB in {elapsed:.1f} s; hash {meta['hash'][:16]}")
    print("domains (s): " + ", ".join(f"{d} {t}" for d, t in meta["timings_s"].items()))
    return 0


def cmd_datasets_check(args: argparse.Namespace) -> int:
    from omnisdk.datasets.format import load_dataset

    dataset = load_dataset(args.path)
    if args.json:
        print(json.dumps(_dataset_rows(dataset), indent=2))
        return 0
    _print_dataset_summary(args.path, dataset)
    print(f"\n{args.path} is valid: hash {dataset.content_hash()[:16]}")
    return 0


def _dataset_rows(dataset) -> list[dict[str, Any]]:
    rows = []
    for task, spec in dataset.tasks.items():
        row = {"task": task, "query": spec.query_modality, "corpus": spec.corpus_modality, "kind": spec.kind,
               "candidates": len(dataset.candidates(task))}
        row.update({f"{split} queries": len(dataset.task_queries(task, split)) for split in dataset.splits})
        rows.append(row)
    return rows


def _print_dataset_summary(path: Path, dataset=None) -> None:
    from omnisdk.datasets.format import load_dataset

    dataset = dataset or load_dataset(path)
    rows = _dataset_rows(dataset)
    print(markdown_table(list(rows[0]), [list(r.values()) for r in rows]) if rows else "no tasks")
    train = sum(1 for _ in dataset.train_examples())
    print(f"\ncorpus {len(dataset.corpus)} items, {len(dataset.queries)} queries, {train} training pairs")
