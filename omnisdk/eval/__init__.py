"""Evaluation: retrieval metrics, exact search, and per-task reports.

    from omnisdk.eval import evaluate, EvalReport, RandomEncoder, OracleEncoder, compare

    report = evaluate(model, load_dataset("data/omniworld"), split="test")
    print(report.to_markdown()); report.plot("chart.png"); report.to_json("report.json")
"""
from __future__ import annotations

from typing import Any

__all__ = ["EvalReport", "OracleEncoder", "RandomEncoder", "compare", "evaluate", "plot_comparison"]

_HOMES = {
    "evaluate": "omnisdk.eval.runner",
    "EvalReport": "omnisdk.eval.report",
    "compare": "omnisdk.eval.report",
    "plot_comparison": "omnisdk.eval.report",
    "RandomEncoder": "omnisdk.eval.baselines",
    "OracleEncoder": "omnisdk.eval.baselines",
}


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports omnisdk.eval.commands on every call, which must not pull in torch.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'omnisdk.eval' has no attribute {name!r}")
