"""The core commands: `omnisdk plugins`, `init`, `embed` and `info`.

Registered, as every built-in command is, through the `omnisdk_register_commands` hook that third-party
packages implement too (see `omnisdk.plugin_manager.BUILTIN_COMMANDS`). Imports stay light: the parser
is built on every call.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from omnisdk.errors import OmniError
from omnisdk.hookspecs import hookimpl
from omnisdk.precision import add_compute_arguments, compute_from
from omnisdk.tables import markdown_table

#: Exit status of a command that failed as a whole (`omnisdk.cli.main` returns it for an OmniError).
EXIT_ERROR = 2
#: Exit status of a command that did its work but some items (files, inputs) failed.
EXIT_ITEMS_FAILED = 3


@hookimpl(tryfirst=True)  # built-in commands come first in `omnisdk --help`, third-party ones after
def omnisdk_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `plugins`, `init`, `embed` and `info`."""
    add_commands(subparsers)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list modality plugins and what each needs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("init", help="build a base model from a preset, optionally with pretrained parts")
    p.add_argument("--preset", default="small", help="tiny (random, for tests) or small (pretrained MiniLM); default small")
    p.add_argument("--backbone", help="a Hugging Face model (local directory or hub id) to use as the backbone instead")
    p.add_argument("--image-encoder", help="a pretrained vision tower: transformers (directory or hub id, e.g. "
                   "openai/clip-vit-base-patch32) or timm (timm:NAME, hf-hub:ORG/NAME)")
    p.add_argument("--audio-encoder", help="a pretrained Hugging Face audio encoder (directory or hub id, e.g. "
                   "openai/whisper-tiny); frozen while training, its projector trains")
    p.add_argument("--modalities", help="comma-separated modalities (default: every available plugin)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aspects", type=int, metavar="K", help="AGFF: K aspect embeddings per item from the plugins' "
                   "aspect prompts, aggregated by a learned log-sum-exp (docs/methods.md); default: one vector per item")
    p.add_argument("--aspect-pairs", choices=["all", "diagonal"], default="all",
                   help="AGFF: compare every aspect pair (all, the default) or aspect k with aspect k only")
    p.add_argument("--aspect-prompt", action="append", default=[], metavar="MODALITY=P1|P2|...",
                   help="AGFF: override a modality's aspect prompts (repeatable)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the backbone's own Python code to run")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("embed", help="embed texts and files; an INPUT that is not an existing path is text")
    p.add_argument("--model", required=True, type=Path, help="checkpoint directory")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", type=Path, help="write the vectors to a .npy file (failed rows are NaN)")
    p.add_argument("--json", action="store_true", help="print JSON with the vectors")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--role", choices=["query", "document"], help="prepend the plugins' query or document instruction")
    p.add_argument("--chunks", action="store_true", help="split files into pages, segments and windows: a row per chunk")
    add_compute_arguments(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("info", help="describe a checkpoint: backbone, plugins, fingerprint, lineage")
    p.add_argument("model", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_info)


def cmd_plugins(args: argparse.Namespace) -> int:
    from omnisdk.plugin_manager import list_plugins, load_failures

    rows = list_plugins()
    broken = load_failures()
    if args.json:
        print(json.dumps({"modalities": [r.as_dict() for r in rows], "failed_to_load": broken}, indent=2))
        return 0
    print(markdown_table(
        ["modality", "version", "package", "status", "description"],
        [[r.name, r.version, r.package, "available" if r.available else f"missing {', '.join(r.missing)}: {r.install}", r.description] for r in rows],
    ))
    for name, cause in broken.items():
        print(f"plugin entry point '{name}' failed to load: {cause}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from omnisdk.presets import build_base

    modalities = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
    overrides: dict[str, dict[str, Any]] = {}
    if args.image_encoder:
        overrides["image"] = {"tower_source": args.image_encoder}
    if args.audio_encoder:
        overrides["audio"] = {"encoder": "hf", "encoder_source": args.audio_encoder}
    if modalities is not None:
        modalities += [m for m in overrides if m not in modalities]  # naming an encoder asks for its modality
    model = build_base(
        args.preset, modalities=modalities, backbone=args.backbone, seed=args.seed,
        trust_remote_code=args.trust_remote_code, overrides=overrides,
    )
    if args.aspects is not None:
        if args.aspects < 1:
            raise OmniError(f"--aspects must be at least 1, not {args.aspects}")
        model.enable_aspects(args.aspects, _aspect_prompts(args.aspect_prompt), pairs=args.aspect_pairs)
    elif args.aspect_prompt:
        raise OmniError("--aspect-prompt needs --aspects K")
    manifest = model.save(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {manifest.backbone.model_type} backbone, dim {model.dim}, "
          f"{params / 1e6:.1f}M parameters, modalities {', '.join(model.plugins)}, fingerprint {manifest.fingerprint[:12]}")
    return 0


def _aspect_prompts(raw: list[str]) -> dict[str, list[str]]:
    """MODALITY=P1|P2|... options -> {modality: [prompts]}."""
    out = {}
    for entry in raw:
        name, sep, prompts = entry.partition("=")
        if not sep or not name.strip() or not prompts.strip():
            raise OmniError(f"--aspect-prompt {entry!r}: write MODALITY=PROMPT1|PROMPT2|...")
        out[name.strip()] = [p.strip() for p in prompts.split("|") if p.strip()]
    return out


def parse_input(raw: str):
    """An existing path (or a symlink, even dangling or looping: its error names it) is a file; anything else is text."""
    from omnisdk.items import Item

    path = Path(raw)
    try:
        exists = path.exists() or path.is_symlink()
    except OSError:  # a long sentence can exceed the OS's path-length limit
        exists = False
    return Item.of_file(path) if exists else Item.of_text(raw)


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from omnisdk.model import OmniModel
    from omnisdk.special_files import PipeSpool

    model = OmniModel.load(args.model, **compute_from(args))
    with PipeSpool() as spool:
        # Pipes are read here, once, before chunking or detection would open them; other special
        # files are refused here, before anything opens them.
        entries = [_resolve(spool, parse_input(raw)) for raw in args.inputs]
        if args.chunks:
            entries = [pair for item, cause in entries
                       for pair in ([(item, cause)] if cause else [(c, None) for c in expand_chunks(model, [item])])]
        items = [item if cause else _with_detected_modality(model, item) for item, cause in entries]
        good = [i for i, (_, cause) in enumerate(entries) if cause is None]
        vectors = np.full((len(items), model.dim), np.nan, dtype=np.float32)
        encoded, failures = model.encode(
            [items[i] for i in good], batch_size=args.batch_size, role=args.role, show_progress=True, errors="ignore",
            return_errors=True,
        )
    vectors[good] = encoded
    failed = {good[f.index]: f.cause for f in failures}
    failed.update({i: cause for i, (_, cause) in enumerate(entries) if cause})
    failed = dict(sorted(failed.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, vectors)
    rows = []
    for i, item in enumerate(items):
        plugin = model.plugins.get(item.modality or "")
        source = item.meta.get("source", item.path)
        label = item.label() if item.locator is None or plugin is None else f"{source} [{plugin.describe_locator(item.locator)}]"
        row: dict[str, Any] = {"input": label, "modality": item.modality or "", "locator": item.locator.to_dict() if item.locator else None}
        if i in failed:
            row["error"] = failed[i]
        elif args.json:
            row["embedding"] = [round(float(x), 7) for x in vectors[i]]
        rows.append(row)
    if args.json:
        print(json.dumps({"model": model.fingerprint, "dim": model.dim, "items": rows}, indent=2))
    else:
        _print_embed_table(rows, vectors, failed, args.out)
    for i, cause in failed.items():
        print(f"omnisdk: failed: {items[i].label()}: {cause}", file=sys.stderr)
    return EXIT_ITEMS_FAILED if failed else 0


def _resolve(spool, item):
    """(item to embed, None), or (item, why it is refused): a pipe is spooled, another special file refused."""
    from omnisdk.special_files import SpecialFileError

    try:
        return spool.resolve(item), None
    except SpecialFileError as exc:
        return item, str(exc)


def _with_detected_modality(model, item):
    from omnisdk.errors import ModalityDetectionError

    try:
        return item.with_modality(model.detect(item))
    except ModalityDetectionError:
        return item  # encode reports it with its cause


def expand_chunks(model, items):
    """Replace each file by its located chunks (PDF pages, video segments, audio windows)."""
    from omnisdk.errors import ModalityDetectionError

    expanded = []
    for item in items:
        try:
            modality = model.detect(item)
        except ModalityDetectionError:
            expanded.append(item)  # encode reports it with its cause
            continue
        plugin = model.plugins.get(modality)
        if plugin is None or item.path is None:
            expanded.append(item)
            continue
        try:
            expanded.extend(plugin.chunk(item.with_modality(modality)))
        except Exception as exc:  # an unreadable file is reported by encode, not fatal here
            logging.getLogger(__name__).debug("cannot chunk %s: %s", item.label(), exc)
            expanded.append(item)
    return expanded


def _print_embed_table(rows, vectors, failed, out) -> None:
    table = []
    for i, row in enumerate(rows):
        if i in failed:
            table.append([str(i), row["input"], row["modality"], "failed", failed[i]])
        else:
            head = ", ".join(f"{x:+.3f}" for x in vectors[i][:4])
            table.append([str(i), row["input"], row["modality"], f"[{head}, ...]", ""])
    print(markdown_table(["#", "input", "modality", "embedding", "error"], table))
    ok = len(rows) - len(failed)
    print(f"\n{ok} embedded, {len(failed)} failed, dim {vectors.shape[1]}" + (f"; vectors in {out}" if out else ""))


def cmd_info(args: argparse.Namespace) -> int:
    from omnisdk.checkpoint import read_manifest

    manifest = read_manifest(args.model)
    if args.json:
        print(manifest.model_dump_json(indent=2))
        return 0
    cfg = manifest.backbone.config
    cfg = cfg.get("text_config") or cfg  # a vision-language backbone keeps its language model's sizes there
    lineage = manifest.lineage
    print(f"checkpoint   {args.model}")
    print(f"fingerprint  {manifest.fingerprint}")
    print(f"backbone     {manifest.backbone.model_type}, hidden {cfg.get('hidden_size')}, layers {cfg.get('num_hidden_layers')}, "
          f"pooling {manifest.backbone.pooling}, max_length {manifest.backbone.max_length}, from {manifest.backbone.source or 'config'}")
    print(f"stage        {lineage.stage} (created {lineage.created_at}; parents: {', '.join(p[:12] for p in lineage.parents) or 'none'})")
    if lineage.method:
        print(f"method       {lineage.method} {json.dumps(lineage.coefficients)}")
    print()
    print(markdown_table(["modality", "version", "package", "config"],
                         [[p.name, p.version, p.package, json.dumps(p.config, sort_keys=True)[:80]] for p in manifest.plugins]))
    print()
    print(markdown_table(["part", "what", "from"], model_parts(manifest)))
    return 0


def model_parts(manifest) -> list[list[str]]:
    """Each part of a model, what it is and where its starting weights came from, for `omnisdk info`."""
    spec = manifest.backbone
    rows = [["backbone", f"{spec.model_type} ({spec.pooling} pooling, {spec.padding_side} padding)", spec.source or "random init"]]
    if spec.aspects is not None:
        rows.append(["AGFF aspects", f"{spec.aspects.count} per item, {spec.aspects.pairs} pairs, learned log-sum-exp",
                     "prompts: " + "; ".join(f"{m}: {' | '.join(p)}" for m, p in spec.aspects.prompts.items())])
    for plugin in manifest.plugins:
        cfg = plugin.config
        if "tower" in cfg:
            kind = cfg.get("tower_kind", "timm")
            where = cfg.get("tower_source") or cfg.get("tower_weights") or "random init"
            if kind == "backbone":  # a vision-language backbone's own tower: its weights came with the backbone's
                rows.append([f"{plugin.name} tower", f"{cfg['tower']} (the backbone's own vision tower, shared)",
                             spec.source or "random init"])
                continue
            rows.append([f"{plugin.name} tower", f"{cfg['tower']} ({'transformers' if kind == 'hf' else 'timm'}, shared)", where])
        if "encoder" in cfg:
            hf = cfg["encoder"] == "hf"
            frozen = cfg.get("freeze_encoder") if cfg.get("freeze_encoder") is not None else hf
            what = (cfg.get("encoder_config") or {}).get("model_type", "hf") if hf else "built-in log-mel transformer"
            rows.append([f"{plugin.name} encoder", f"{what} (owned, {'frozen' if frozen else 'trained'})",
                         (cfg.get("encoder_source") if hf else None) or "random init"])
            rows.append([f"{plugin.name} projector", "MLP (owned, trained)", "random init"])
    return rows
