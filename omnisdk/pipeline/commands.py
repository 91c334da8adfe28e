"""CLI: `omnisdk pipeline run CONFIG --out DIR` and `omnisdk pipeline presets`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnisdk.hookspecs import hookimpl
from omnisdk.precision import DEVICE_HELP, resolve_device


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `pipeline run` and `pipeline show`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run decouple-fuse-recover end to end and report every stage")
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    psub.required = True
    run = psub.add_parser("run", help="run (or resume) a pipeline; finished stages are skipped")
    run.add_argument("config", help="a preset (tiny, small, full) or a TOML file")
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--fresh", action="store_true", help="remove an earlier run in --out first")
    run.add_argument("--device", default="auto", help=DEVICE_HELP)
    run.add_argument("--seed", type=int, help="generate OmniWorld with this seed instead of the config's "
                     "(data.seed), e.g. to confirm results on a second seed")
    run.set_defaults(func=cmd_pipeline_run)
    show = psub.add_parser("show", help="print a preset's or file's settings as TOML-equivalent JSON")
    show.add_argument("config")
    show.set_defaults(func=cmd_pipeline_show)


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from omnisdk.pipeline.config import load_config
    from omnisdk.pipeline.runner import Pipeline, clean

    config = load_config(args.config)
    if args.seed is not None:
        config = with_data_seed(config, args.seed)
    if args.fresh:
        clean(args.out)
    resolve_device(args.device)  # a missing GPU is refused before any stage starts
    Pipeline(config, args.out, say=lambda line: print(line, file=sys.stderr, flush=True), device=args.device).run()
    print((args.out / "report.md").read_text())
    print(f"wrote {args.out / 'report.md'}, {args.out / 'report.json'}, {args.out / 'report.png'}")
    return 0


def with_data_seed(config, seed: int):
    """The config with OmniWorld generated from `seed`; a config that reads its own data has no seed to change."""
    from omnisdk.errors import OmniError

    if config.data.path is not None:
        raise OmniError(f"--seed {seed}: the config reads its data from {config.data.path}, so there is no "
                        "OmniWorld seed to change; drop --seed or data.path")
    return config.model_copy(update={"data": config.data.model_copy(update={"seed": seed})})


def cmd_pipeline_show(args: argparse.Namespace) -> int:
    from omnisdk.pipeline.config import load_config

    print(load_config(args.config).model_dump_json(indent=2))
    return 0
