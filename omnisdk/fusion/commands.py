"""CLI: `omnisdk fuse`, registered through the `omnisdk_register_commands` hook."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omnisdk.errors import OmniError
from omnisdk.hookspecs import hookimpl


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `fuse`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="fuse specialists of one base: merge shared task vectors, copy owned parameters")
    p.add_argument("--base", required=True, type=Path, help="the base checkpoint every specialist was trained from")
    p.add_argument("--specialist", required=True, type=Path, action="append", help="a specialist checkpoint; repeat per specialist")
    p.add_argument("--method", required=True, help="a registered merge method: task_arithmetic, ties, dare_ties, dare_linear, ...")
    p.add_argument("--weights", help="comma-separated weights, one per --specialist, in order (default: all 1)")
    p.add_argument("--density", type=float, default=1.0, help="fraction of each task vector kept by ties and dare (default 1)")
    p.add_argument("--lambda", dest="lam", type=float, default=1.0, help="scale of the merged task vector (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of dare's random drops (default 0)")
    p.add_argument("--statistics", choices=["base", "merge"], default="base",
                   help="BatchNorm running statistics: keep the base's (default) or merge them like weights")
    p.add_argument("--out", required=True, type=Path, help="new checkpoint directory to write")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_fuse)


def cmd_fuse(args: argparse.Namespace) -> int:
    from omnisdk.fusion import fuse

    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise OmniError(f"--weights {args.weights!r} is not a comma-separated list of numbers, e.g. 1,0.5") from None
    report = fuse(args.base, args.specialist, method=args.method, out=args.out, weights=weights,
                  density=args.density, lam=args.lam, seed=args.seed, statistics=args.statistics,
                  progress=False if args.json else None)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.markdown())
    return 0
