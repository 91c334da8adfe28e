"""Third-party plugins: the example package examples/omnisdk-heatmap, and in-process plugins for every hook.

The package is pip-installed into a temporary directory (never into the shared environment) and used
from fresh interpreters, exactly as a user's `pip install omnisdk-heatmap` would be discovered: through
its entry point. Faster checks import it from source and register it with `register_plugin`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omnisdk.hookspecs import hookimpl
from omnisdk.items import Item
from omnisdk.modality import RecoveryPlan
from omnisdk.plugin_manager import get_plugin_manager, merge_methods, modality_classes, register_plugin

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "omnisdk-heatmap"
TUTORIAL = REPO / "docs" / "writing-plugins.md"


def write_csv(path: Path, rows: np.ndarray | list, header: str | None = None) -> Path:
    lines = [header] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- installed: entry point discovery in fresh interpreters ----------------------------------------
@pytest.fixture(scope="module")
def heatmap_site(tmp_path_factory) -> Path:
    """A directory holding only the installed example package (offline, no dependencies)."""
    root = tmp_path_factory.mktemp("heatmap")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    result = subprocess.run([*pip, "--target", str(site), str(source)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    entry_points = (site / "omnisdk_heatmap-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert entry_points.split() == ["[omnisdk]", "heatmap", "=", "omnisdk_heatmap"]
    return site


def run_python(code: str, *args: str, path: Path | None = None, env: dict | None = None, cwd: Path | None = None) -> Any:
    """Run `code` in a fresh interpreter of this environment; it prints one JSON value last."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMNISDK_PLUGINS")}
    full_env.update(HF_HUB_OFFLINE="1", **(env or {}))
    if path is not None:
        full_env["PYTHONPATH"] = str(path)
    command = [sys.executable, "-c", code, *args]
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


EMBED_WITH_THE_INSTALLED_PLUGIN = r"""
import json, sys
from pathlib import Path
import numpy as np
from omnisdk.items import Item
from omnisdk.model import OmniModel
from omnisdk.plugin_manager import list_plugins
from omnisdk.presets import build_base

work = Path(sys.argv[1])
rows = {row.name: row.as_dict() for row in list_plugins()}
model = build_base("tiny", modalities=["text", "heatmap"])
items = [
    "a hot spot in the top left corner",
    work / "hot.csv",
    np.outer(np.hanning(40), np.hanning(7)),  # an in-memory grid, detected by its Python type
    work / "ragged.csv",
    Item(modality="heatmap", path=work / "series.csv"),
    "a flat field",
]
vectors, failures = model.encode(items, batch_size=2, errors="ignore", return_errors=True)
single = np.stack([model.encode([item], errors="ignore")[0] for item in items])
model.save(work / "model")
reloaded = OmniModel.load(work / "model").encode(items, batch_size=2, errors="ignore")
good = [i for i in range(len(items)) if not np.isnan(vectors[i]).any()]
print(json.dumps({
    "plugins": rows,
    "modalities": list(model.plugins),
    "shape": list(vectors.shape),
    "good": good,
    "norms": np.linalg.norm(vectors[good], axis=1).tolist(),
    "failures": [[f.index, f.item.label(), f.cause, str(f)] for f in failures],
    "order_error": float(np.abs(single[good] - vectors[good]).max()),
    "reload_error": float(np.abs(reloaded[good] - vectors[good]).max()),
    "distinct": bool(not np.allclose(vectors[1], vectors[4], atol=1e-4)),
}))
"""

LOAD_WITHOUT_THE_PLUGIN = r"""
import json, sys
from omnisdk.errors import PluginNotInstalledError
from omnisdk.model import OmniModel

try:
    OmniModel.load(sys.argv[1])
    print(json.dumps({"loaded": True}))
except PluginNotInstalledError as exc:
    print(json.dumps({"loaded": False, "name": exc.name, "message": str(exc)}))
"""


def test_installed_package_embeds_saves_and_is_named_when_missing(heatmap_site, tmp_path):
    write_csv(tmp_path / "hot.csv", np.pad(np.ones((3, 3)), ((0, 5), (0, 5))), header="a,b,c,d,e,f,g,h")
    write_csv(tmp_path / "series.csv", np.sin(np.arange(600)[:, None] / [5.0, 9.0, 17.0]).round(4))
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    # The entry point is found through PYTHONPATH alone. OMNISDK_PLUGINS selects it like a built-in
    # and keeps any other plugin that takes numpy arrays from competing for the bare array.
    only = {"OMNISDK_PLUGINS": "text,heatmap"}
    out = run_python(EMBED_WITH_THE_INSTALLED_PLUGIN, str(tmp_path), path=heatmap_site, env=only)
    heatmap = out["plugins"]["heatmap"]
    assert heatmap["available"] and heatmap["package"] == "omnisdk-heatmap" and heatmap["version"] == "0.1.0"
    assert out["modalities"] == ["text", "heatmap"] and out["shape"] == [6, 32]
    assert out["good"] == [0, 1, 2, 4, 5]
    np.testing.assert_allclose(out["norms"], 1.0, atol=1e-5)
    [(index, label, cause, message)] = out["failures"]
    assert index == 3 and label == str(tmp_path / "ragged.csv") and message.startswith("item 3 (")
    assert cause == "ValueError: ragged rows: line 2 has 2 cell(s), the first data row 3" and message.endswith(cause)
    assert out["order_error"] < 1e-5, "a row of a mixed batch differs from that item embedded alone"
    assert out["reload_error"] < 1e-6 and out["distinct"]

    missing = run_python(LOAD_WITHOUT_THE_PLUGIN, str(tmp_path / "model"))
    assert missing["loaded"] is False and missing["name"] == "heatmap"
    assert "'heatmap'" in missing["message"] and "pip install omnisdk-heatmap" in missing["message"]


TUTORIAL_COMMANDS = r"""
import contextlib, io, json, sys
from omnisdk.cli import main

def omnisdk(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return [code, out.getvalue()]

print(json.dumps([
    omnisdk("plugins"),
    omnisdk("init", "--preset", "tiny", "--modalities", "text,heatmap", "--out", "model"),
    omnisdk("embed", "--model", "model", "data.csv", "--json"),
]))
"""


def test_tutorial_commands_work_with_the_installed_package(heatmap_site, tmp_path):
    """`omnisdk plugins`, `init --preset tiny` and `embed` as docs/writing-plugins.md runs them (one interpreter)."""
    pytest.importorskip("omnisdk.cli")
    write_csv(tmp_path / "data.csv", np.arange(60).reshape(10, 6), header="t,a,b,c,d,e")
    (code, table), (code_init, _), (code_embed, embedded) = run_python(TUTORIAL_COMMANDS, path=heatmap_site, cwd=tmp_path)
    assert code == code_init == code_embed == 0
    assert re.search(r"\| heatmap \| 0\.1\.0 \| omnisdk-heatmap \| available \|", table)
    [row] = json.loads(embedded)["items"]
    assert row["modality"] == "heatmap" and len(row["embedding"]) == 32


# -- in-process: the package imported from source --------------------------------------------------
@pytest.fixture
def heatmap(monkeypatch):
    """The example module, registered in this process as a notebook user would."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    module = importlib.import_module("omnisdk_heatmap")
    if not get_plugin_manager().is_registered(module):
        register_plugin(module, name="heatmap")
    return module


def test_register_plugin_adds_the_modality(heatmap):
    assert modality_classes()["heatmap"] is heatmap.HeatmapPlugin


@pytest.mark.parametrize(
    "content, cause",
    [
        ("1,2,3\n4,5,6\n7,8\n", "ragged rows: line 3 has 2 cell(s), the first data row 3"),
        ("x,y\n1,2\n3,abc\n", "line 3, column 2: 'abc' is not a number"),
        ("1,2\n3,inf\n", "line 2, column 2: 'inf' is infinite"),
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("time,value\n", "the file has a header but no rows of numbers"),
        (",\nNA,nan\n", "every cell is missing"),
        ("1,2\n" * 40, "more than 64 cells, the heatmap plugin's max_cells"),
        ("1" * 300, "file is 300 bytes, over the heatmap plugin's max_bytes of 200"),
    ],
)
def test_bad_files_are_per_item_errors_with_their_cause(heatmap, tmp_path, content, cause):
    plugin = heatmap.HeatmapPlugin({"max_cells": 64, "max_bytes": 200})
    good = write_csv(tmp_path / "good.csv", [[1, 2], [3, 4]])
    (tmp_path / "bad.csv").write_text(content)
    prepared = plugin.preprocess([Item.of_file(tmp_path / "bad.csv"), Item.of_file(good)], runtime=None)
    assert prepared.ok == [1] and prepared.batch["grid"].shape == (1, 1, 32, 32)
    assert cause in prepared.errors[0]


@pytest.mark.parametrize(
    "data, cause",
    [
        (np.zeros(5), "expected a 2-D array (rows x columns), got shape (5,)"),
        (np.zeros((2, 0)), "the array is empty"),
        (np.array([["a", "b"]]), "expected an array of integers or floats, got dtype <U1"),
        (np.array([[1.0, np.inf]]), "the array holds infinite values"),
        (np.zeros((10, 10)), "the array has 100 cells, over the heatmap plugin's max_cells (64)"),
    ],
)
def test_bad_arrays_are_per_item_errors(heatmap, data, cause):
    prepared = heatmap.HeatmapPlugin({"max_cells": 64}).preprocess([Item(data=data)], runtime=None)
    assert prepared.ok == [] and prepared.batch is None and cause in prepared.errors[0]


def test_grids_of_any_shape_are_standardised_and_pooled(heatmap, tmp_path):
    plugin = heatmap.HeatmapPlugin({"grid_rows": 8, "grid_cols": 4, "patch_size": 2})
    # A ramp down the rows under noise: pooling averages the noise away and keeps the ramp.
    big = np.linspace(0.0, 50.0, 300)[:, None] + np.random.default_rng(0).normal(100.0, 7.0, size=(300, 50))
    items = [
        Item.of_file(write_csv(tmp_path / "tiny.csv", [[1, 2, 3], [4, "", 6]], header="a,b,c")),
        Item(data=big),
        Item(data=np.full((5, 5), 3.0)),  # constant: a level without a shape
    ]
    prepared = plugin.preprocess(items, runtime=None)
    grid = prepared.batch["grid"]
    assert prepared.ok == [0, 1, 2] and grid.shape == (3, 1, 8, 4)
    assert abs(float(grid[1].mean())) < 0.05 and bool((grid[1, 0, 1:, :] > grid[1, 0, :-1, :]).all())
    assert float(grid[2].abs().max()) == 0.0
    assert np.isnan(plugin.read(items[0])[1, 1])  # the empty cell is missing, and standardised to 0


def test_chunks_are_windows_located_in_seconds(heatmap, tmp_path):
    plugin = heatmap.HeatmapPlugin({"window_rows": 100, "sample_rate": 10.0})
    series = write_csv(tmp_path / "series.csv", np.arange(250 * 3).reshape(250, 3))
    chunks = plugin.chunk(Item.of_file(series, modality="heatmap"))
    assert [(c.locator.t0, c.locator.t1) for c in chunks] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert [plugin.describe_locator(c.locator) for c in chunks] == ["rows 0-99", "rows 100-199", "rows 200-249"]
    prepared = plugin.preprocess(chunks, runtime=None)
    whole = plugin.read(chunks[0])
    for row, (start, stop) in enumerate([(0, 100), (100, 200), (200, 250)]):
        expected = heatmap.to_grid_tensor(whole[start:stop], plugin.config)
        assert np.allclose(prepared.batch["grid"][row].numpy(), expected.numpy())
    short = write_csv(tmp_path / "short.csv", [[1, 2]])
    assert plugin.chunk(Item.of_file(short)) == [Item.of_file(short)]
    assert plugin.chunk(Item.of_file(tmp_path / "missing.csv")) == [Item.of_file(tmp_path / "missing.csv")]


def test_adapter_is_owned_and_recovered(heatmap, tiny_model_factory):
    model = tiny_model_factory(["text", "heatmap"])
    names = [n for n, _ in model.named_parameters() if n.startswith("adapters.heatmap.")]
    assert names and all(model.parameter_owner(n) == ("heatmap", "owned") for n in names)
    assert model.plugins["heatmap"].recovery_plan("adapters.heatmap.").trainable == ["adapters.heatmap.*"]
    with pytest.raises(ValueError, match="patch_size 5 does not divide the grid 32x32"):
        heatmap.HeatmapPlugin({"patch_size": 5})


def test_instructions_change_a_query_embedding(heatmap, tiny_model_factory):
    model = tiny_model_factory(["text", "heatmap"])
    grid = Item(modality="heatmap", data=np.eye(12))
    plain, query, document = (model.encode([grid], role=role)[0] for role in (None, "query", "document"))
    assert not np.allclose(plain, query) and not np.allclose(query, document)


# -- in-process plugins for the other hooks ---------------------------------------------------------
class MagicFilenames:
    """Claims `*.heatmap.txt` files for the heatmap modality; `.txt` alone would make them text."""

    @hookimpl
    def omnisdk_detect_modality(self, item, modalities):
        if item.modality is None and item.path is not None and item.path.name.endswith(".heatmap.txt"):
            return "heatmap"
        return None  # let the other plugins, then omnisdk's own detection, decide


def test_detect_modality_hook_claims_a_magic_filename(heatmap, tiny_model_factory, tmp_path):
    claimed = write_csv(tmp_path / "scan.heatmap.txt", [[1, 2], [3, 4]])
    notes = tmp_path / "notes.txt"
    notes.write_text("plain notes")
    detect = get_plugin_manager().hook.omnisdk_detect_modality
    assert detect(item=Item.of_file(claimed), modalities=modality_classes()) == "text"
    register_plugin(MagicFilenames(), name="magic-filenames")
    assert detect(item=Item.of_file(claimed), modalities=modality_classes()) == "heatmap"
    assert detect(item=Item.of_file(notes), modalities=modality_classes()) == "text"
    model = tiny_model_factory(["text", "heatmap"])
    vectors = model.encode([claimed, Item(modality="heatmap", path=claimed)])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def average_delta(deltas, **options):
    """The mean of the specialists' task vectors for one parameter."""
    return sum(deltas) / len(deltas)


class AveragingMerge:
    @hookimpl
    def omnisdk_register_merge_methods(self, register):
        register("average_delta", average_delta)


def test_register_merge_methods_hook_adds_a_method():
    assert "average_delta" not in merge_methods()
    register_plugin(AveragingMerge(), name="averaging")
    method = merge_methods()["average_delta"]
    assert method is average_delta and float(method([np.ones(2), 3 * np.ones(2)])[0]) == 2.0


class ProjectorOnlyRecovery:
    @hookimpl
    def omnisdk_recovery_plan(self, modality, model):
        if modality != "heatmap":
            return None
        return RecoveryPlan(trainable=["adapters.heatmap.projector.*"], learning_rate=5e-4, steps=50)


def test_recovery_plan_hook_returns_the_first_plan():
    hook = get_plugin_manager().hook.omnisdk_recovery_plan
    assert hook(modality="heatmap", model=None) is None  # nobody claims it: the plugin's default applies
    register_plugin(ProjectorOnlyRecovery(), name="projector-only")
    plan = hook(modality="heatmap", model=None)
    assert plan.trainable == ["adapters.heatmap.projector.*"] and plan.steps == 50
    assert hook(modality="text", model=None) is None


class HeatmapStats:
    @hookimpl
    def omnisdk_register_commands(self, subparsers):
        command = subparsers.add_parser("heatmap-stats", help="print the shape of CSV grids")
        command.add_argument("files", nargs="+")
        command.set_defaults(func=self.run)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        for name in args.files:
            rows = [line for line in Path(name).read_text().splitlines() if line]
            print(f"{name}: {len(rows)} x {len(rows[0].split(','))}")
        return 0


def test_register_commands_hook_adds_a_cli_command(tmp_path, capsys):
    cli = pytest.importorskip("omnisdk.cli")
    grid = write_csv(tmp_path / "grid.csv", np.zeros((3, 5)))
    register_plugin(HeatmapStats(), name="heatmap-stats")
    assert cli.main(["heatmap-stats", str(grid)]) == 0
    assert capsys.readouterr().out.strip() == f"{grid}: 3 x 5"


def test_register_commands_hook_without_the_cli():
    parser = argparse.ArgumentParser(prog="omnisdk")
    subparsers = parser.add_subparsers(dest="command")
    register_plugin(HeatmapStats(), name="heatmap-stats")
    get_plugin_manager().hook.omnisdk_register_commands(subparsers=subparsers)
    assert parser.parse_args(["heatmap-stats", "a.csv"]).func == HeatmapStats.run


# -- the tutorial shows the package's real code -----------------------------------------------------
EXCERPT = re.compile(r"<!-- excerpt: (?P<file>\S+) -->\n```\w*\n(?P<code>.*?)```", re.S)


def test_tutorial_code_is_the_example_package_code():
    excerpts = EXCERPT.findall(TUTORIAL.read_text())
    assert len(excerpts) >= 8
    for file, code in excerpts:
        source = (REPO / file).read_text()
        assert code in source, f"docs/writing-plugins.md shows code that is not in {file}:\n{code}"
    shown = "".join(code for _, code in excerpts)
    for must in ("class HeatmapPlugin(omnisdk.ModalityPlugin):", "def preprocess(", "def build_adapter(", "def chunk(",
                 "fusion = omnisdk.FusionSpec(", "[project.entry-points.omnisdk]", "def omnisdk_register_modalities("):
        assert must in shown, f"the tutorial never shows {must!r}"
