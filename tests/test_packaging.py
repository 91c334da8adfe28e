"""The wheel installs everything under the omnisdk namespace and declares the built-in entry points."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = {"text", "image", "video", "document", "audio"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (found,) = out.glob("omnisdk-*.whl")
    return found


def test_wheel_installs_no_generic_top_level_names(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"omnisdk", next(t for t in top if t.endswith(".dist-info"))}
    for module in ("plugins/image.py", "plugins/text.py", "trainers/__init__.py", "apps/__init__.py", "presets/tiny.toml"):
        assert f"omnisdk/{module}" in names
    assert not any(n.startswith(("tests/", "bench/", "examples/")) for n in names)


def test_wheel_holds_every_source_module(wheel):
    """A subpackage left out of pyproject's package list would import in an editable install only."""
    names = set(zipfile.ZipFile(wheel).namelist())
    roots = {"omnisdk": "omnisdk", "plugins": "omnisdk/plugins", "trainers": "omnisdk/trainers", "apps": "omnisdk/apps"}
    missing = []
    for source, installed in roots.items():
        for module in (ROOT / source).rglob("*.py"):
            relative = module.relative_to(ROOT / source).as_posix()
            if f"{installed}/{relative}" not in names:
                missing.append(f"{source}/{relative}")
    assert not missing, missing


def test_wheel_declares_builtin_plugins_and_extras(wheel):
    archive = zipfile.ZipFile(wheel)
    info = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
    entry_points = archive.read(info).decode()
    group = entry_points.split("[omnisdk]")[1].split("[")[0]
    declared = {line.split("=")[0].strip() for line in group.strip().splitlines()}
    assert declared == BUILTINS
    assert "omnisdk = omnisdk.cli:main" in entry_points
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"image", "video", "document", "audio", "search", "app", "train", "all", "dev"} <= extras
    assert "Requires-Dist: torch>=" in metadata and "==2.14.1" not in metadata  # ranges for users, pins in constraints.txt
