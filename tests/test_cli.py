"""The `omnisdk` command line, run as a user would: a subprocess per command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def omnisdk(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "omnisdk", *args], capture_output=True, text=True, env=full_env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"omnisdk {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "tiny"
    result = omnisdk("init", "--preset", "tiny", "--modalities", "text,image", "--out", str(out), check=True)
    assert "wrote" in result.stdout and "dim 32" in result.stdout
    return out


def test_plugins_json_lists_the_builtin_modalities():
    data = json.loads(omnisdk("plugins", "--json", check=True).stdout)
    rows = {row["name"]: row for row in data["modalities"]}
    assert {"text", "image"} <= set(rows)
    assert rows["text"]["available"] is True and rows["image"]["install"] is None
    table = omnisdk("plugins", check=True).stdout
    assert table.startswith("| modality |") and "| text |" in table


def test_embed_text_and_files_to_npy_and_json(model_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (30, 30), "red").save(tmp_path / "red.png")
    out = tmp_path / "vectors.npy"
    result = omnisdk("embed", "--model", str(model_dir), "a red square", str(tmp_path / "red.png"), "--out", str(out), check=True)
    assert "| image |" in result.stdout and "2 embedded, 0 failed" in result.stdout
    vectors = np.load(out)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    data = json.loads(omnisdk("embed", "--model", str(model_dir), "a red square", "--json", check=True).stdout)
    np.testing.assert_allclose(data["items"][0]["embedding"], vectors[0], atol=1e-6)


def test_partial_failure_exits_3_and_names_the_bad_file(model_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    result = omnisdk("embed", "--model", str(model_dir), "fine text", str(bad), "--json")
    assert result.returncode == 3
    items = json.loads(result.stdout)["items"]
    assert "embedding" in items[0] and "cannot identify image" in items[1]["error"]
    assert f"failed: {bad}" in result.stderr


def test_info_describes_the_checkpoint(model_dir):
    result = omnisdk("info", str(model_dir), check=True)
    assert "fingerprint" in result.stdout and "| image |" in result.stdout and "stage        base" in result.stdout
    assert json.loads(omnisdk("info", str(model_dir), "--json", check=True).stdout)["backbone"]["model_type"] == "bert"


def test_errors_are_one_line_and_tracebacks_need_debug(tmp_path):
    result = omnisdk("info", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    debug = omnisdk("--debug", "info", str(tmp_path / "missing"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    unknown = omnisdk("init", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "unknown preset 'huge'" in unknown.stderr and "tiny, small" in unknown.stderr


def test_debug_is_accepted_after_every_subcommand(tmp_path):
    import argparse

    from omnisdk.cli import build_parser

    def subparsers(parser, trail=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield trail + (name,), sub
                    yield from subparsers(sub, trail + (name,))

    found = dict(subparsers(build_parser()))
    assert {("embed",), ("datasets", "check"), ("index",), ("pipeline", "run")} <= set(found)
    assert [" ".join(t) for t, sub in found.items() if "--debug" not in sub._option_string_actions] == []
    parsed = build_parser().parse_args(["datasets", "check", "--debug", "x"])
    assert parsed.debug is True and build_parser().parse_args(["datasets", "check", "x"]).debug is False
    # as a user types it: at the end, after the subcommand's own arguments
    after = omnisdk("info", str(tmp_path / "missing"), "--debug")
    assert after.returncode != 0 and "Traceback" in after.stderr and "CheckpointError" in after.stderr
