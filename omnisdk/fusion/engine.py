"""Run a fusion plan one tensor at a time: read, merge or copy, write, fingerprint.

Memory stays at a few tensors of one parameter times the number of specialists: inputs are read
tensor by tensor into one reused buffer per file (omnisdk.fusion.reader), the output streams to
disk (StreamingWriter), and nothing holds a whole model. Work that waits on memory or disk runs
beside the arithmetic: each input's fingerprint is hashed from its file by a worker thread, and a
writer thread hashes and writes the merged tensors in order (at most two waiting). The output is
built in a hidden sibling directory and renamed into place last, so a failed or interrupted fusion
leaves no half checkpoint at --out.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import torch

from omnisdk import checkpoint as ckpt
from omnisdk.checkpoint import weights_fingerprint
from omnisdk.errors import WriteError
from omnisdk.fusion.methods import generator_for
from omnisdk.fusion.plan import FusionError, FusionPlan, ParameterPlan
from omnisdk.fusion.reader import BufferedTensorFile
from omnisdk.fusion.report import FusionReport
from omnisdk.fusion.stream import StreamingWriter


def run_fusion(plan: FusionPlan, *, progress: bool | None = None, verify: bool = True) -> FusionReport:
    """Write the fused checkpoint that `plan` describes; `verify` checks every input's fingerprint on the way."""
    from omnisdk.plugin_manager import merge_methods

    method = merge_methods()[plan.method]
    report = FusionReport.start(plan)
    started = time.perf_counter()
    staging = plan.out.parent / f".{plan.out.name}.partial-{os.getpid()}"
    _remove_dead_staging(plan.out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        inputs = [plan.base] + [s.checkpoint for s in plan.specialists]
        entries = [(p.name, *plan.base.tensors[p.name]) for p in plan.parameters]
        with ExitStack() as stack:
            files = [stack.enter_context(BufferedTensorFile(c.weights)) for c in inputs]
            writer = stack.enter_context(StreamingWriter(staging / ckpt.WEIGHTS, entries))
            # Entered after the writer, so on any exit the threads finish before the file closes.
            hashing = stack.enter_context(ThreadPoolExecutor(max_workers=min(len(inputs), 4), thread_name_prefix="fuse-hash"))
            writing = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse-write"))
            fingerprints = [hashing.submit(weights_fingerprint, c.weights) for c in inputs] if verify else []
            pending: list[Future] = []
            for param in _progress(plan.parameters, progress):
                merged = _fuse_one(plan, method, param, files, report)
                pending.append(writing.submit(writer.write, param.name, merged))
                del merged
                while len(pending) > 2:  # bounds memory: the writer may lag by two tensors
                    pending.pop(0).result()
            for future in pending:
                future.result()
            if verify:
                _check_fingerprints(inputs, [f.result() for f in fingerprints])
        fingerprint = writer.fingerprint
        shutil.copytree(plan.base.path / ckpt.TOKENIZER_DIR, staging / ckpt.TOKENIZER_DIR)
        manifest = plan.base.manifest.model_copy(deep=True)
        manifest.fingerprint = fingerprint
        manifest.lineage = _lineage(plan)
        ckpt.write_manifest(staging, manifest)
        if plan.out.exists():
            plan.out.rmdir()  # the plan allowed only an empty directory
        os.replace(staging, plan.out)
    except OSError as exc:
        if exc.errno not in WriteError._HINTS:
            raise
        raise WriteError.of(exc, f"writing the fused checkpoint {plan.out} (nothing was written there)") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.finish(fingerprint, time.perf_counter() - started)
    return report


def _remove_dead_staging(out: Path) -> None:
    """Staging directories that a killed fusion left behind (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fuse_one(plan: FusionPlan, method, param: ParameterPlan, files, report: FusionReport) -> torch.Tensor:
    """One output tensor, never a view of a reader's buffer (the writer thread may still hold it when
    the next tensor is read). Each specialist's tensor becomes its delta in place in its buffer, so
    the base and one tensor per specialist are held, plus what the method allocates."""
    base = files[0].read(param.name)
    if param.action == "keep":
        report.count(param, base)
        return base.clone()
    if param.action == "copy":
        chosen = files[1 + param.source].read(param.name)
        report.count(param, base, owned_delta=(param.source, chosen.float() - base.float()))
        return chosen.clone()
    base32 = base.float()
    deltas = []
    for i in range(1, len(files)):
        tensor = files[i].read(param.name)
        deltas.append(tensor.sub_(base32) if tensor.dtype == torch.float32 else tensor.float() - base32)
    combined = method(deltas, weights=[s.weight for s in plan.specialists], density=plan.density,
                      generator=generator_for(plan.seed, param.name))
    if not isinstance(combined, torch.Tensor) or combined.shape != base.shape:
        got = getattr(combined, "shape", type(combined).__name__)
        raise FusionError(f"merge method '{plan.method}' returned {got} for '{param.name}' of shape {list(base.shape)}: "
                          "it must return a tensor of the parameter's shape")
    update = combined.float() * plan.lam
    del combined
    report.count(param, base, deltas=deltas, update=update)
    del deltas
    return update.add_(base32).to(base.dtype)


def _check_fingerprints(inputs, fingerprints: list[str]) -> None:
    for c, found in zip(inputs, fingerprints):
        if found != c.fingerprint:
            raise FusionError(
                f"{c.weights} does not match the fingerprint in its manifest: "
                "the weights were changed or damaged after saving"
            )


def _lineage(plan: FusionPlan) -> ckpt.Lineage:
    specialists = []
    for s in plan.specialists:
        lineage = s.checkpoint.manifest.lineage
        specialists.append({"path": str(s.checkpoint.path), "plugin": s.plugin, "fingerprint": s.checkpoint.fingerprint,
                            "weight": s.weight, "steps": lineage.settings.get("steps"), "data_hash": lineage.data_hash})
    return ckpt.Lineage(
        stage="fused",
        parents=[plan.base.fingerprint] + [s.checkpoint.fingerprint for s in plan.specialists],
        method=plan.method,
        coefficients={"weights": [s.weight for s in plan.specialists], "density": plan.density,
                      "lambda": plan.lam, "seed": plan.seed, "statistics": plan.statistics},
        settings={"base": plan.base.fingerprint, "specialists": specialists},
    )


def _progress(parameters, show: bool | None):
    from tqdm.auto import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(parameters, desc="fuse", unit="tensor", disable=not show)
