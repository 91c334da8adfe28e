"""What a fusion did, per owner (backbone or plugin): tensors merged, copied and kept, task-vector norms."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from omnisdk.fusion.plan import FusionPlan, ParameterPlan


@dataclass
class OwnerStats:
    merged: int = 0
    copied: int = 0
    kept: int = 0
    elements: int = 0
    #: squared L2 norms, summed over this owner's tensors: each specialist's task vector, and the
    #: update fusion applied (lambda times the merged task vector; for a copy, the copied delta).
    tau_sq: list[float] = field(default_factory=list)
    update_sq: float = 0.0


@dataclass
class FusionReport:
    out: Path
    method: str
    options: dict[str, Any]
    base: str
    specialists: list[dict[str, Any]]
    owners: dict[str, OwnerStats]
    warnings: list[str]
    fingerprint: str = ""
    seconds: float = 0.0

    @classmethod
    def start(cls, plan: FusionPlan) -> FusionReport:
        specialists = [{"path": str(s.checkpoint.path), "plugin": s.plugin, "weight": s.weight,
                        "fingerprint": s.checkpoint.fingerprint} for s in plan.specialists]
        k = len(plan.specialists)
        owners: dict[str, OwnerStats] = defaultdict(lambda: OwnerStats(tau_sq=[0.0] * k))
        options = {"weights": [s.weight for s in plan.specialists], "density": plan.density, "lambda": plan.lam,
                   "seed": plan.seed}
        return cls(plan.out, plan.method, options, plan.base.fingerprint, specialists, owners, list(plan.warnings))

    def count(self, param: ParameterPlan, base: torch.Tensor, *, deltas: list[torch.Tensor] | None = None,
              update: torch.Tensor | None = None, owned_delta: tuple[int, torch.Tensor] | None = None) -> None:
        stats = self.owners[param.owner]
        stats.elements += base.numel()
        if param.action == "keep":
            stats.kept += 1
        elif param.action == "copy":
            stats.copied += 1
            index, delta = owned_delta
            square = _norm_sq(delta)
            stats.tau_sq[index] += square
            stats.update_sq += square
        else:
            stats.merged += 1
            for i, delta in enumerate(deltas):
                stats.tau_sq[i] += _norm_sq(delta)
            stats.update_sq += _norm_sq(update)

    def finish(self, fingerprint: str, seconds: float) -> None:
        self.fingerprint = fingerprint
        self.seconds = seconds

    def _ordered(self) -> list[tuple[str, OwnerStats]]:
        return sorted(self.owners.items(), key=lambda kv: (kv[0] != "backbone", kv[0]))

    def _labels(self) -> list[str]:
        seen: dict[str, int] = defaultdict(int)
        labels = []
        for s in self.specialists:
            seen[s["plugin"]] += 1
            labels.append(s["plugin"] if seen[s["plugin"]] == 1 else f"{s['plugin']}#{seen[s['plugin']]}")
        return labels

    def as_dict(self) -> dict[str, Any]:
        labels = self._labels()
        owners = {
            name: {"merged": o.merged, "copied": o.copied, "kept": o.kept, "elements": o.elements,
                   "task_vector_norms": {label: math.sqrt(sq) for label, sq in zip(labels, o.tau_sq)},
                   "update_norm": math.sqrt(o.update_sq)}
            for name, o in self._ordered()
        }
        return {"out": str(self.out), "fingerprint": self.fingerprint, "method": self.method, "options": self.options,
                "base": self.base, "specialists": self.specialists, "owners": owners, "warnings": self.warnings,
                "seconds": round(self.seconds, 3)}

    def markdown(self) -> str:
        """A short Markdown summary: one row per owner, a task-vector norm column per specialist."""
        from omnisdk.tables import markdown_table

        labels = self._labels()
        header = ["owner", "merged", "copied", "kept"] + [f"‖τ {label}‖" for label in labels] + ["‖update‖"]
        rows = []
        for name, o in self._ordered():
            norms = [f"{math.sqrt(sq):.4g}" for sq in o.tau_sq]
            rows.append([name, o.merged, o.copied, o.kept, *norms, f"{math.sqrt(o.update_sq):.4g}"])
        options = ", ".join(f"{k} {v}" for k, v in self.options.items())
        lines = [f"fused {len(self.specialists)} specialists with {self.method} ({options}) into {self.out}", "",
                 markdown_table(header, rows), "",
                 f"fingerprint {self.fingerprint[:16]}, {self.seconds:.1f} s; "
                 "‖update‖ is lambda times the merged task vector, or the copied delta of owned parameters"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _norm_sq(tensor: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(tensor)) ** 2
