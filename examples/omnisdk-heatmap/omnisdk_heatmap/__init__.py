"""omnisdk-heatmap: a modality plugin for numeric grids (heat maps, multichannel time series).

A CSV file of numbers, or a 2-D numpy array, is checked, standardised and pooled to a fixed grid;
the adapter embeds patches of that grid, adds learned positions and projects the tokens to the
backbone's width. It is the worked example of omnisdk's docs/writing-plugins.md.
"""
from __future__ import annotations

import csv
import functools
import math
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from torch import nn

import omnisdk

__version__ = "0.1.0"

#: Cells that mean "no measurement"; after standardisation they hold the mean (zero).
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})


class HeatmapConfig(omnisdk.PluginConfig):
    # Frozen, hence hashable: the parsed-file cache below is keyed by it.
    model_config = ConfigDict(frozen=True)

    #: every input is pooled (or stretched) to this grid of rows x columns.
    grid_rows: int = Field(32, ge=1)
    grid_cols: int = Field(32, ge=1)
    #: side of the square patches that become one token each; it must divide both grid sides.
    patch_size: int = Field(4, ge=1)
    #: width of a patch embedding before the projection to the backbone.
    embed_dim: int = Field(128, ge=1)
    delimiter: str = Field(",", min_length=1, max_length=1)
    #: whether the first row names the columns; None guesses: a first row without numbers is a header.
    header: bool | None = None
    #: "grid" standardises all cells together (one quantity, a heat map); "column" each column on its
    #: own (channels in different units, a multichannel time series).
    normalise: Literal["grid", "column"] = "grid"
    #: standardised values are clipped to +-clip, so one outlier cannot flatten the rest of the map.
    clip: float = Field(5.0, gt=0)
    #: inputs over these limits are refused before (bytes) or while (cells) they are read.
    max_bytes: int = 50_000_000
    max_cells: int = 4_000_000
    #: rows per window when a long time series is split into chunks; None keeps a file whole.
    window_rows: int | None = Field(512, ge=1)
    #: rows per second, so that a window's Locator is a time span in seconds, as for audio and video.
    sample_rate: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _patches_tile_the_grid(self) -> HeatmapConfig:
        if self.grid_rows % self.patch_size or self.grid_cols % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide the grid {self.grid_rows}x{self.grid_cols}")
        return self


# -- reading and checking -------------------------------------------------------------------------
def read_csv_grid(path: Path, config: HeatmapConfig) -> np.ndarray:
    """The numbers of a CSV file as a read-only float64 [rows, columns] array; NaN marks a missing cell."""
    stat = path.stat()
    if stat.st_size > config.max_bytes:
        raise ValueError(f"file is {stat.st_size:,} bytes, over the heatmap plugin's max_bytes of {config.max_bytes:,}")
    return _parse_csv(path, stat.st_mtime_ns, config)


# chunk() and then every window read the same file one after another: the cache parses it once.
# The modification time is part of the key, so an edited file is read again.
@functools.lru_cache(maxsize=4)
def _parse_csv(path: Path, mtime_ns: int, config: HeatmapConfig) -> np.ndarray:
    rows: list[list[float]] = []
    width = 0
    first, header = True, False
    # utf-8-sig drops the byte-order mark that spreadsheet programs write before the first cell.
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=config.delimiter)
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            line = reader.line_num  # the physical line, which a quoted cell with a newline moves on
            if first:
                first = False
                header = _is_header(cells, config.header)
                if header:
                    continue  # column names; their count does not bind the data rows
            if rows and len(cells) != width:
                raise ValueError(f"ragged rows: line {line} has {len(cells)} cell(s), the first data row {width}")
            width = len(cells)
            if (len(rows) + 1) * width > config.max_cells:
                raise ValueError(f"more than {config.max_cells:,} cells, the heatmap plugin's max_cells")
            rows.append([_number(cell, line, column) for column, cell in enumerate(cells, start=1)])
    if not rows:
        raise ValueError("the file has a header but no rows of numbers" if header else "the file is empty")
    grid = np.array(rows, dtype=np.float64)
    grid.flags.writeable = False  # shared by the cache
    return grid


def _is_header(cells: list[str], header: bool | None) -> bool:
    if header is not None:
        return header
    return not any(_parses(cell) for cell in cells)


def _parses(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(cell: str, line: int, column: int) -> float:
    text = cell.strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"line {line}, column {column}: {text[:40]!r} is not a number") from None
    if math.isinf(value):
        raise ValueError(f"line {line}, column {column}: {text!r} is infinite")
    return value


def array_grid(data: Any, config: HeatmapConfig) -> np.ndarray:
    """An in-memory 2-D array of numbers as float64, with the same limits as a CSV file."""
    array = np.asarray(data)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array (rows x columns), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"expected an array of integers or floats, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"the array is empty (shape {array.shape})")
    if array.size > config.max_cells:
        raise ValueError(f"the array has {array.size:,} cells, over the heatmap plugin's max_cells ({config.max_cells:,})")
    array = array.astype(np.float64)
    if np.isinf(array).any():
        raise ValueError("the array holds infinite values")
    return array


def window(grid: np.ndarray, locator: omnisdk.Locator | None, sample_rate: float) -> np.ndarray:
    """The rows a chunk's locator (a time span in seconds) covers; the whole grid without one."""
    if locator is None or locator.t0 is None:
        return grid
    start = round(locator.t0 * sample_rate)
    stop = None if locator.t1 is None else round(locator.t1 * sample_rate)
    if start >= len(grid):
        raise ValueError(f"window {locator} starts after the last of {len(grid)} rows")
    return grid[start:stop]


def to_grid_tensor(values: np.ndarray, config: HeatmapConfig) -> torch.Tensor:
    """Standardise (missing cells become 0, the mean) and pool to the fixed grid: [1, rows, cols]."""
    if np.isnan(values).all():
        raise ValueError("every cell is missing")
    axis = 0 if config.normalise == "column" else None
    mean = np.nanmean(values, axis=axis, keepdims=True)
    std = np.nanstd(values, axis=axis, keepdims=True)
    # A constant grid (or column) has a level but no shape: it maps to zeros, not to a division by 0.
    scaled = (values - np.nan_to_num(mean)) / np.where(std > 0, std, 1.0)
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), -config.clip, config.clip)
    tensor = torch.from_numpy(scaled.astype(np.float32))[None, None]
    # Adaptive average pooling shrinks (averages cells) and stretches (repeats cells) alike, so any
    # shape from 1x1 to max_cells lands on the same grid through one code path.
    return nn.functional.adaptive_avg_pool2d(tensor, (config.grid_rows, config.grid_cols))[0]


def heat_picture(values: np.ndarray, side: int) -> np.ndarray:
    """uint8 RGB [rows, cols, 3]: low cells blue, the mean white, high cells red; small grids scaled up.

    Plain numpy, no torch: the app draws previews in a child process, where torch must not run.
    """
    mean, std = np.nanmean(values), np.nanstd(values)
    level = np.clip(np.nan_to_num((values - mean) / (std if std > 0 else 1.0)) / 3.0, -1.0, 1.0)
    white = 255.0 * (1.0 - np.abs(level))
    red = np.where(level > 0, 255.0, white)
    blue = np.where(level < 0, 255.0, white)
    picture = np.stack([red, white, blue], axis=-1).astype(np.uint8)
    scale = max(1, side // max(picture.shape[:2]))
    return picture.repeat(scale, axis=0).repeat(scale, axis=1)


# -- the adapter ----------------------------------------------------------------------------------
class HeatmapAdapter(nn.Module):
    """Patch embedding (a strided convolution) + learned positions -> projection to the backbone width."""

    def __init__(self, config: HeatmapConfig, hidden_size: int):
        super().__init__()
        p = config.patch_size
        n_tokens = (config.grid_rows // p) * (config.grid_cols // p)
        self.patches = nn.Conv2d(1, config.embed_dim, kernel_size=p, stride=p)
        self.positions = nn.Parameter(torch.zeros(1, n_tokens, config.embed_dim))
        nn.init.trunc_normal_(self.positions, std=0.02)
        self.projector = nn.Sequential(nn.LayerNorm(config.embed_dim), nn.Linear(config.embed_dim, hidden_size))

    def forward(self, batch: dict[str, torch.Tensor], runtime: omnisdk.Runtime) -> omnisdk.TokenEmbeddings:
        tokens = self.patches(batch["grid"]).flatten(2).transpose(1, 2) + self.positions
        tokens = self.projector(tokens)
        mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        # framed=False: the model adds the backbone's special tokens and this plugin's instruction.
        return omnisdk.TokenEmbeddings(tokens, mask)


# -- the plugin -----------------------------------------------------------------------------------
class HeatmapPlugin(omnisdk.ModalityPlugin):
    name = "heatmap"
    version = __version__
    description = "Numeric grids from CSV files or 2-D numpy arrays: heat maps, multichannel time series"
    package = "omnisdk-heatmap"  # the pip command in "plugin not installed" errors names it
    extensions = (".csv",)
    python_types = ("numpy.ndarray",)
    Config = HeatmapConfig
    instructions = omnisdk.Instructions(query="Find a heat map like this one: ", document="A heat map: ")
    # Owned, not shared: no other plugin calls this adapter, so the other specialists leave it at its
    # base values and merging could only shrink or sparsify the heatmap specialist's update. Fusion
    # copies it whole from the heatmap specialist instead; it was fitted to that specialist's backbone,
    # not the fused one, so recovery re-fits it (tens of thousands of parameters: cheap to train in full).
    fusion = omnisdk.FusionSpec(shared=[], owned=["*"], recovery=True)
    # The adapter starts from random weights: it needs a higher rate than a pretrained backbone.
    training = omnisdk.TrainingDefaults(learning_rate=3e-4, steps=400, batch_size=64)

    def preprocess(self, items: Sequence[omnisdk.Item], runtime: omnisdk.Runtime) -> omnisdk.Prepared:
        def load(item: omnisdk.Item) -> torch.Tensor:
            values = window(self.read(item), item.locator, self.config.sample_rate)
            return to_grid_tensor(values, self.config)

        # Only the failures a bad input causes become per-item errors; a bug in this code still raises.
        grids, ok, errors = omnisdk.run_per_item(items, load, errors_of=(OSError, ValueError, csv.Error))
        batch = {"grid": torch.stack(grids)} if grids else None
        return omnisdk.Prepared(batch=batch, ok=ok, errors=errors)

    def build_adapter(self, ctx: omnisdk.BuildContext) -> nn.Module:
        return HeatmapAdapter(self.config, ctx.hidden_size)

    def read(self, item: omnisdk.Item) -> np.ndarray:
        """The item's whole grid, from its CSV file or its in-memory array."""
        if item.path is not None:
            return read_csv_grid(Path(item.path), self.config)
        if item.data is not None:
            return array_grid(item.data, self.config)
        raise ValueError("a heatmap item needs a CSV file or a 2-D array")

    def chunk(self, item: omnisdk.Item) -> list[omnisdk.Item]:
        """A long time series as windows of `window_rows` rows, each located by its time span."""
        size = self.config.window_rows
        if size is None or item.locator is not None:
            return [item]
        try:
            rows = len(self.read(item))
        except (OSError, ValueError, csv.Error):
            return [item]  # preprocess reports the cause against this item
        if rows <= size:
            return [item]
        rate = self.config.sample_rate
        return [item.with_locator(omnisdk.Locator(t0=s / rate, t1=min(s + size, rows) / rate))
                for s in range(0, rows, size)]

    def preview(self, item: omnisdk.Item, side: int) -> np.ndarray:
        """The grid (or the hit's window of it) as a blue-white-red picture for the app's result card."""
        return heat_picture(window(self.read(item), item.locator, self.config.sample_rate), side)

    def describe_locator(self, locator: omnisdk.Locator | None) -> str:
        if locator is None or locator.t0 is None:
            return ""
        rate = self.config.sample_rate
        end = "" if locator.t1 is None else round(locator.t1 * rate) - 1
        return f"rows {round(locator.t0 * rate)}-{end}"


@omnisdk.hookimpl
def omnisdk_register_modalities(register: Callable[[type[omnisdk.ModalityPlugin]], None]) -> None:
    register(HeatmapPlugin)
