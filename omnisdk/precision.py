"""Inference precision: the names the CLI and `OmniModel` accept. Imports stay light (the CLI parser uses it)."""
from __future__ import annotations

import argparse
from typing import Literal

from omnisdk.errors import OmniError

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
PRECISION_HELP = ("how the model computes: fp32 (exact, default) or bf16 (autocast: about 2-3x faster on CPUs with "
                  "AMX or AVX512-BF16 and on GPUs, vectors within about 1e-4 cosine of fp32)")


def check_precision(value: str) -> Precision:
    """`value` if it names a precision, else an OmniError listing the valid ones."""
    if value not in PRECISIONS:
        raise OmniError(f"unknown precision '{value}': use one of {', '.join(PRECISIONS)}")
    return value  # type: ignore[return-value]


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """The `--precision` option, as every command that encodes offers it."""
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
