"""CLI: `omnisdk align`, `omnisdk train specialist|joint`, `omnisdk recover`, `omnisdk rehearse`, `omnisdk warmup`.

Settings come from the plugin's defaults, then `--config FILE.toml` (TrainConfig fields), then the
flags; a run killed part-way resumes when the same command is run again. `--ega` turns on the
Explicit Gradient Amplifier, set in the TOML as `ega = {factor = 2.0, rule = "relative"}`. Inputs
are decoded once into the prepared-input cache (`--cache-dir`, default $OMNISDK_CACHE_DIR or the
user cache directory; `--no-cache` decodes at every step). Data parallel: launch the same command
with `torchrun --nproc_per_node N -m omnisdk ...`.
"""
from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

from omnisdk.hookspecs import hookimpl
from omnisdk.precision import DEVICE_HELP
from omnisdk.prepared.flags import add_cache_flags, cache_from


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `train`, `align`, `recover`, `rehearse` and `warmup`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a specialist or the joint multi-task baseline")
    tsub = train.add_subparsers(dest="train_command", metavar="KIND")
    tsub.required = True
    p = tsub.add_parser("specialist", help="train one modality's specialist from a base model")
    p.add_argument("--base", required=True, type=Path)
    p.add_argument("--plugin", required=True, help="modality to specialise in (image, video, document, audio, ...)")
    _common(p)
    p.set_defaults(func=cmd_train_specialist)
    p = tsub.add_parser("joint", help="train the base on every modality mixed (the baseline)")
    p.add_argument("--base", required=True, type=Path)
    _common(p)
    p.set_defaults(func=cmd_train_joint)

    p = sub.add_parser("align", help="align every modality's adapters with the frozen backbone (the base for specialists)")
    p.add_argument("--base", required=True, type=Path)
    _common(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("recover", help="Projector Recovery after fusion: train what the plugin's recovery plan names")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--plugin", required=True)
    _common(p)
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("warmup", help="compression warm-up before contrastive training (CoMa)")
    p.add_argument("--method", required=True, choices=["coma"], help="coma: Compression then Matching")
    p.add_argument("--model", required=True, type=Path, help="the base checkpoint to warm up")
    p.add_argument("--data", required=True, type=Path, help="dataset directory with train.jsonl")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--config", type=Path, help="TOML file of warm-up settings (CoMaConfig fields)")
    p.add_argument("--steps", type=int)
    p.add_argument("--tokens", type=int, help="number of compression tokens (default 32, as in the paper)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=cmd_warmup)

    p = sub.add_parser("rehearse", help="short balanced multi-modal training of a fused (and recovered) model")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--quota", action="append", default=[], metavar="MODALITY=SHARE",
                   help="share of each batch for a modality (repeatable); default: equal shares")
    _common(p)
    p.set_defaults(func=cmd_rehearse)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset directory with train.jsonl")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--config", type=Path, help="TOML file of training settings (TrainConfig fields)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--ega", action="store_true",
                   help="amplify hard negatives' gradients (Explicit Gradient Amplifier); settings: [ega] in --config")
    p.add_argument("--ega-factor", type=float, metavar="F", help="EGA amplification factor (implies --ega; default 2.0)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    add_cache_flags(p)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Settings from --config, then the flags that were given."""
    out: dict[str, Any] = {}
    if args.config:
        out.update(tomllib.loads(args.config.read_text()))
    for flag in ("steps", "batch_size", "learning_rate", "seed", "precision"):
        value = getattr(args, flag, None)
        if value is not None:
            out[flag] = value
    factor = getattr(args, "ega_factor", None)
    if getattr(args, "ega", False) or factor is not None:
        out["ega"] = {**(out.get("ega") or {}), **({"factor": factor} if factor is not None else {})}
    quotas = getattr(args, "quota", None)
    if quotas:
        out["quotas"] = {}
        for spec in quotas:
            name, sep, share = spec.partition("=")
            if not sep:
                raise ValueError(f"--quota '{spec}' is not MODALITY=SHARE")
            out["quotas"][name] = float(share)
    return out


def cmd_train_specialist(args: argparse.Namespace) -> int:
    from omnisdk.trainers.stages import train_specialist

    return _report(train_specialist(args.base, args.plugin, args.data, args.out, overrides_from(args),
                                    cache=cache_from(args), device=args.device), args)


def cmd_align(args: argparse.Namespace) -> int:
    from omnisdk.trainers.stages import align

    return _report(align(args.base, args.data, args.out, overrides_from(args), cache=cache_from(args),
                         device=args.device), args)


def cmd_train_joint(args: argparse.Namespace) -> int:
    from omnisdk.trainers.stages import train_joint

    return _report(train_joint(args.base, args.data, args.out, overrides_from(args), cache=cache_from(args),
                               device=args.device), args)


def cmd_recover(args: argparse.Namespace) -> int:
    from omnisdk.trainers.stages import recover

    return _report(recover(args.model, args.plugin, args.data, args.out, overrides_from(args),
                           cache=cache_from(args), device=args.device), args)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from omnisdk.trainers.stages import rehearse

    return _report(rehearse(args.model, args.data, args.out, overrides_from(args), cache=cache_from(args),
                            device=args.device), args)


def cmd_warmup(args: argparse.Namespace) -> int:
    from omnisdk.trainers.coma import coma_warmup

    overrides: dict[str, Any] = tomllib.loads(args.config.read_text()) if args.config else {}
    for flag in ("steps", "tokens", "batch_size", "learning_rate", "seed", "precision"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    result = coma_warmup(args.model, args.data, args.out, overrides, device=args.device)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(f"wrote {args.out}: {result.steps} warm-up steps, reconstruction loss on the probe batch "
              f"{result.probe_loss_before:.4f} -> {result.probe_loss_after:.4f}, {result.pairs_seen} pairs "
              f"in {result.seconds:.1f} s; pooling is now 'compression'")
    return 0


def _report(result, args: argparse.Namespace) -> int:
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        print(f"wrote {args.out}: {result.steps} steps{resumed}, final loss {result.final_loss:.4f}, "
              f"{result.pairs_seen} pairs in {result.seconds:.1f} s, {result.trainable_parameters:,} parameters trained"
              + (f", {result.skipped_items} unreadable items skipped" if result.skipped_items else ""))
    return 0
