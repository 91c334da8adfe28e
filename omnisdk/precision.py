"""How a model computes: precision and device, as the CLI and `OmniModel` accept them.

Imports stay light (the CLI parser uses this module); torch is imported only to resolve a device.
"""
from __future__ import annotations

import argparse
from typing import Any, Literal

from omnisdk.errors import OmniError

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
PRECISION_HELP = ("how the model computes: fp32 (exact; the default on CPU) or bf16 (autocast: about 2-3x faster on "
                  "CPUs with AMX or AVX512-BF16 and on GPUs, vectors within about 1e-4 cosine of fp32; the default on CUDA)")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DEVICE_HELP = "where the model runs: auto (CUDA when there is a GPU, else CPU; the default), cpu, cuda or cuda:N"


def check_precision(value: str) -> Precision:
    """`value` if it names a precision, else an OmniError listing the valid ones."""
    if value not in PRECISIONS:
        raise OmniError(f"unknown precision '{value}': use one of {', '.join(PRECISIONS)}")
    return value  # type: ignore[return-value]


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device` and `--precision`, as every command that runs a model offers them."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)


def resolve_device(value: str | None) -> Any:
    """A torch.device for `value` (auto, cpu, cuda, cuda:N); an OmniError if CUDA is asked for and absent."""
    import torch

    value = (value or "auto").strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise OmniError(f"--device {value}: this machine has no CUDA GPU torch can use "
                            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto")
        index = int(value.split(":", 1)[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise OmniError(f"--device {value}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    raise OmniError(f"unknown device '{value}': use one of {', '.join(DEVICES)} or cuda:N")


def default_precision(device: Any) -> Precision:
    """bf16 on CUDA (its tensor cores are built for it), fp32 elsewhere (exact)."""
    return "bf16" if getattr(device, "type", str(device)) == "cuda" else "fp32"


def compute_from(args: argparse.Namespace) -> dict[str, Any]:
    """`device` and `precision` keyword arguments for OmniModel.load from parsed `--device`/`--precision`."""
    device = resolve_device(getattr(args, "device", None))
    precision = getattr(args, "precision", None) or default_precision(device)
    return {"device": device, "precision": check_precision(precision)}
