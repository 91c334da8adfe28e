"""`omnisdk eval` and `omnisdk eval-compare`. Imports stay light here: the parser is built on every call."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnisdk.errors import OmniError
from omnisdk.hookspecs import hookimpl
from omnisdk.precision import add_compute_arguments, compute_from

BASELINE_CHOICES = ("random", "oracle")


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `eval` and `eval-compare`."""
    register_eval_commands(subparsers)


def register_eval_commands(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` and `eval-compare` subcommands to the CLI's subparsers."""
    p = sub.add_parser(
        "eval",
        help="score a model (or a baseline) on a dataset's retrieval tasks",
        description="Encode a dataset's queries and candidates, search exactly, and print a Markdown table of "
        "hit@1, R@1/5/10, nDCG@10 and MRR per task, per modality and overall. Items that fail to encode are "
        "listed in the report and do not stop the run (exit 0). --baseline evaluates a reference encoder "
        "instead of a model: 'random' (chance) or 'oracle' (ceiling, built from the qrels); compare reports "
        "with `omnisdk eval-compare`.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="checkpoint directory to evaluate")
    which.add_argument("--baseline", choices=BASELINE_CHOICES, help="evaluate a reference encoder instead of a model")
    p.add_argument("--data", required=True, type=Path, help="dataset directory (BEIR-style, see docs/data-format.md)")
    p.add_argument("--split", default="test", help="qrels split to score (default: test)")
    p.add_argument("--tasks", help="comma-separated tasks (default: every task with judged queries in the split)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--decode-workers", type=int, metavar="N", help="threads decoding the next batches while the "
                   "model embeds (default: up to 4, or $OMNISDK_DECODE_WORKERS; 0: decode and embed in turn)")
    p.add_argument("--label", help="name of the model in the report (default: the checkpoint directory's name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--calibrate", choices=("zscore", "center", "platt"),
                   help="score mixed-modality pools (t2x, a2x) with the query-time modality correction that "
                   "`omnisdk search` applies, fitted on the pool (default: raw cosine); 'platt' is fitted on the "
                   "judged queries of --fit-split")
    p.add_argument("--fit-split", default="dev",
                   help="split whose judged mixed-task queries --calibrate platt is fitted on (default: dev)")
    p.add_argument("--save-calibration", action="store_true",
                   help="with --calibrate platt: write the fitted parameters to the model directory "
                   "(calibration.json), where the indexer reads them for every collection of that model")
    p.add_argument("--out", type=Path, help="write the report as JSON")
    p.add_argument("--markdown", type=Path, help="also write the Markdown table to this file")
    p.add_argument("--plot", type=Path, help="write a bar chart of hit@1 and nDCG@10 per task (PNG, SVG or PDF)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    from omnisdk.prepared.flags import add_cache_flags

    add_cache_flags(p)
    add_compute_arguments(p)
    p.set_defaults(func=cmd_eval)

    c = sub.add_parser("eval-compare", help="compare eval reports side by side (stages, models, baselines)")
    c.add_argument("reports", nargs="+", type=Path, metavar="REPORT", help="JSON reports written by `omnisdk eval --out`")
    c.add_argument("--labels", help="comma-separated column names, one per report (default: each report's model)")
    c.add_argument("--metric", default="hit@1", help="metric to tabulate: hit@1, recall@1, recall@5, recall@10, ndcg@10, mrr")
    c.add_argument("--plot", type=Path, help="write a grouped bar chart of the metric per task")
    c.add_argument("--markdown", type=Path, help="also write the table to this file")
    c.set_defaults(func=cmd_eval_compare)


def cmd_eval(args: argparse.Namespace) -> int:
    from omnisdk.datasets.format import load_dataset
    from omnisdk.eval.runner import evaluate, select_tasks

    if args.batch_size < 1:
        raise OmniError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.save_calibration and (args.calibrate != "platt" or args.model is None):
        raise OmniError("--save-calibration saves a fitted 'platt' calibration with its model: "
                        "pass --model DIR and --calibrate platt")
    dataset = load_dataset(args.data)
    tasks = select_tasks(dataset, args.split, args.tasks)  # fail on a bad task before loading a model
    encoder, label = _encoder(args, dataset)
    report = evaluate(encoder, dataset, split=args.split, tasks=tasks, batch_size=args.batch_size,
                      show_progress=not args.no_progress, label=label, calibrate=args.calibrate,
                      decode_workers=args.decode_workers, fit_split=args.fit_split)
    if args.save_calibration and "platt" in report.settings:
        from omnisdk.search.platt import PlattParams, save_platt

        saved = save_platt(PlattParams.model_validate(report.settings["platt"]), args.model)
        print(f"omnisdk: wrote {saved} (collections indexed with this model from now on use it)", file=sys.stderr)
    text = report.to_json(args.out) if args.out else report.to_json()
    markdown = report.to_markdown()
    print(text if args.json else markdown, end="" if args.json else "\n")
    if args.markdown:
        _write(args.markdown, markdown + "\n")
    if args.plot:
        report.plot(args.plot)
    written = [str(p) for p in (args.out, args.markdown, args.plot) if p]
    if written:
        print(f"omnisdk: wrote {', '.join(written)}", file=sys.stderr)
    if report.failures:
        print(f"omnisdk: {len(report.failures)} item(s) failed to encode; they are listed in the report", file=sys.stderr)
    return 0


def _encoder(args: argparse.Namespace, dataset):
    if args.baseline:
        from omnisdk.eval.baselines import make_baseline

        if args.precision not in (None, "fp32"):
            raise OmniError(f"--precision {args.precision} applies to a --model; the {args.baseline} baseline has no model to run")
        if args.decode_workers is not None:
            raise OmniError(f"--decode-workers applies to a --model; the {args.baseline} baseline decodes nothing")

        return make_baseline(args.baseline, dataset, split=args.split, seed=args.seed), args.label or args.baseline
    from omnisdk.model import OmniModel

    from omnisdk.prepared.flags import cache_from

    model = OmniModel.load(args.model, **compute_from(args)).use_cache(cache_from(args))
    return model, args.label or args.model.resolve().name


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from omnisdk.eval.report import EvalReport, compare, plot_comparison

    reports = [EvalReport.from_json(path) for path in args.reports]
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    table = compare(reports, labels, metric=args.metric)
    print(table)
    if args.markdown:
        _write(args.markdown, table + "\n")
    if args.plot:
        plot_comparison(reports, args.plot, labels, metric=args.metric)
        print(f"omnisdk: wrote {args.plot}", file=sys.stderr)
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
