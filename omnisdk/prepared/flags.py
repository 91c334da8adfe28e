"""The prepared-input cache's command-line flags, shared by the training and evaluation commands."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, help="prepared-input cache (default: $OMNISDK_CACHE_DIR or the user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="decode inputs at every step instead of once")


def cache_from(args: argparse.Namespace):
    """What `OmniModel.use_cache` and the stage functions take: None, a directory, or "default"."""
    if getattr(args, "no_cache", False):
        return None
    return getattr(args, "cache_dir", None) or "default"
