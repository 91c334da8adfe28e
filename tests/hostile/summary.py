"""The hostile corpus's summary table, for the issue note: each file's outcome and cause, and peak RSS.

    .venv/bin/python tests/hostile/summary.py [--out table.md]

Builds the corpus and a tiny random model of every modality in a temporary directory, encodes each
file alone through `OmniModel.encode` (the path every command shares), and prints one row per file:
its folder (kind), name, why it is hostile, the outcome (vector or error), seconds, and the cause.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `hostile` is tests/hostile


@dataclass
class Row:
    kind: str
    name: str
    what: str
    outcome: str  # "vector", "error", or "bad" (neither a unit vector nor an error: never acceptable)
    seconds: float
    cause: str


def outcome_of(vector: np.ndarray, failures) -> str:
    if failures:
        return "error"
    if np.isfinite(vector).all() and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4:
        return "vector"
    return "bad"


def encode_each(model, cases, root: Path) -> list[Row]:
    """Each case encoded alone (a per-file time is measured); the error's cause without its item prefix."""
    from omnisdk.items import printable

    rows = []
    for case in cases:
        start = time.monotonic()
        vectors, failures = model.encode([case.path], errors="ignore", return_errors=True, show_progress=False)
        seconds = time.monotonic() - start
        message = str(failures[0]) if failures else ""
        cause = message.split("): ", 1)[-1] if message.startswith("item ") else message
        rows.append(Row(case.path.parent.name, printable(case.path.name), case.what, outcome_of(vectors[0], failures),
                        seconds, cause))
    return rows


def markdown(rows: list[Row], width: int = 110) -> str:
    def cell(text: str) -> str:
        text = text.replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| kind | file | hostile because | outcome | s | cause |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.kind} | {cell(r.name)} | {cell(r.what)} | {r.outcome} | {r.seconds:.2f} | {cell(r.cause)} |" for r in rows]
    counts = {k: (sum(r.kind == k and r.outcome == "vector" for r in rows), sum(r.kind == k and r.outcome == "error" for r in rows))
              for k in dict.fromkeys(r.kind for r in rows)}
    lines += ["", "| kind | files | vectors | errors |", "|---|---|---|---|"]
    lines += [f"| {k} | {v + e} | {v} | {e} |" for k, (v, e) in counts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMNISDK_PIPE_TIMEOUT_S", "0.5")  # the FIFO nobody writes to
    from hostile.corpus import build
    from omnisdk.presets import build_base

    with tempfile.TemporaryDirectory(prefix="omnisdk-hostile-") as tmp:
        model = build_base("tiny", modalities=["text", "image", "audio", "video", "document"])
        cases = build(Path(tmp) / "corpus")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = encode_each(model, cases, Path(tmp) / "corpus")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    text = markdown(rows) + (f"\n\n{len(rows)} files; peak RSS {peak:.0f} MB in this process ({before:.0f} MB before the "
                             f"corpus), {children:.0f} MB in the largest decoder child; slowest file "
                             f"{max(r.seconds for r in rows):.1f} s")
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if any(r.outcome == "bad" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
