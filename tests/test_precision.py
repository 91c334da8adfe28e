"""Low-precision inference: bf16 autocast in OmniModel.encode, the --precision flag, the eval report's record."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnisdk.cli import EXIT_ERROR, build_parser, main
from omnisdk.errors import OmniError
from omnisdk.model import OmniModel

TEXTS = ["a red circle on the left", "quarterly report of the solar farm", "a dog", "x " * 40]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("precision")
    tiny_model_factory(["text", "image"]).save(root / "model")
    Image.new("RGB", (24, 24), (220, 30, 30)).save(root / "red.png")
    return root


def test_bf16_encode_gives_unit_vectors_close_to_fp32_but_not_equal(model_dir):
    items = TEXTS + [model_dir / "red.png"]
    exact = OmniModel.load(model_dir / "model", device="cpu")
    fast = OmniModel.load(model_dir / "model", device="cpu", precision="bf16")
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    a = exact.encode(items, errors="raise")
    b = fast.encode(items, errors="raise")
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.99, cosines
    assert np.abs(a - b).max() > 1e-6  # bf16 really ran: its rounding shows
    assert next(fast.parameters()).dtype.is_floating_point and str(next(fast.parameters()).dtype) == "torch.float32"


def test_precision_can_be_switched_and_a_bad_value_names_the_valid_ones(tiny_model_factory):
    model = tiny_model_factory(["text"])
    first = model.encode(TEXTS)
    model.precision = "bf16"
    assert not np.array_equal(model.encode(TEXTS), first)
    model.precision = "fp32"
    assert np.array_equal(model.encode(TEXTS), first)  # back to exact
    with pytest.raises(OmniError, match="unknown precision 'int8': use one of fp32, bf16"):
        model.precision = "int8"
    assert model.precision == "fp32"


def test_embed_cli_runs_bf16_close_to_fp32(model_dir, tmp_path, capsys):
    rows = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.npy"
        code = main(["embed", "--model", str(model_dir / "model"), *TEXTS, "--precision", precision, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        rows[precision] = np.load(out)
    cosines = (rows["fp32"] * rows["bf16"]).sum(axis=1)
    assert cosines.min() > 0.99 and not np.array_equal(rows["fp32"], rows["bf16"])


@pytest.mark.parametrize("command", [
    ["embed", "--model", "m", "hello"],
    ["index", "p", "--collection", "c"],
    ["search", "hello", "--collection", "c"],
    ["eval", "--model", "m", "--data", "d"],
    ["app", "--collection", "c"],
])
def test_every_encoding_command_takes_precision_and_rejects_unknown_values(command, capsys):
    from omnisdk.precision import compute_from

    parser = build_parser()
    args = parser.parse_args(command)
    assert (args.precision, args.device) == (None, "auto")  # resolved by the device: fp32 on a CPU
    if not torch.cuda.is_available():
        assert compute_from(args) == {"device": torch.device("cpu"), "precision": "fp32"}
    assert compute_from(parser.parse_args(command + ["--device", "cpu", "--precision", "bf16"]))["precision"] == "bf16"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(command + ["--precision", "fp8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'fp8'" in err and "fp32" in err and "bf16" in err


def test_eval_report_records_the_precision(model_dir, tmp_path, capsys):
    from media.eval_data import write_eval_dataset

    data = write_eval_dataset(tmp_path / "data")
    reports = {}
    for precision in ("fp32", "bf16"):
        code = main(["eval", "--model", str(model_dir / "model"), "--data", str(data), "--tasks", "t2t", "--json",
                     "--no-progress", "--precision", precision])
        assert code == 0
        reports[precision] = json.loads(capsys.readouterr().out)
    assert [reports[p]["settings"]["precision"] for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    code = main(["eval", "--baseline", "random", "--data", str(data), "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "--precision bf16 applies to a --model" in err


def test_index_and_search_run_in_bf16(model_dir, tmp_path, capsys):
    from omnisdk.search import Searcher
    from omnisdk.store import open_store

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(TEXTS[:3]):
        (docs / f"{i}.txt").write_text(text)
    store = tmp_path / "store"
    code = main(["index", str(docs), "--model", str(model_dir / "model"), "--collection", "c", "--store", str(store),
                 "--no-progress", "--precision", "bf16"])
    assert code == 0 and "| indexed (new or changed) | 3 |" in capsys.readouterr().out
    code = main(["search", TEXTS[1], "--collection", "c", "--store", str(store), "--json", "--precision", "bf16"])
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert code == 0 and hits[0]["source"].endswith("1.txt")
    with open_store(str(store)) as handle:
        assert Searcher(handle, "c", precision="bf16").model.precision == "bf16"


def test_devices_resolve_and_cuda_without_a_gpu_is_a_clear_error(model_dir, capsys):
    from omnisdk.precision import default_precision, resolve_device

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("AUTO").type in ("cpu", "cuda")
    assert default_precision(torch.device("cuda", 0)) == "bf16" and default_precision(torch.device("cpu")) == "fp32"
    with pytest.raises(OmniError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    code = main(["embed", "--model", str(model_dir / "model"), "hello", "--device", "cpu", "--json"])
    assert code == 0 and '"dim": 32' in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert main(["embed", "--model", str(model_dir / "model"), "hello", "--device", "cuda"]) != 0
        assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["train", "specialist", "--base", "b", "--plugin", "image", "--data", "d", "--out", "o"],
    ["train", "joint", "--base", "b", "--data", "d", "--out", "o"],
    ["align", "--base", "b", "--data", "d", "--out", "o"],
    ["recover", "--model", "m", "--plugin", "audio", "--data", "d", "--out", "o"],
    ["rehearse", "--model", "m", "--data", "d", "--out", "o"],
    ["warmup", "--method", "coma", "--model", "m", "--data", "d", "--out", "o"],
    ["pipeline", "run", "tiny", "--out", "o"],
])
def test_every_training_command_takes_a_device(command):
    parser = build_parser()
    assert parser.parse_args(command).device == "auto"
    assert parser.parse_args(command + ["--device", "cpu"]).device == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_pipeline_on_a_missing_gpu_is_refused_before_any_stage(tmp_path, capsys):
    assert main(["pipeline", "run", "tiny", "--out", str(tmp_path / "run"), "--device", "cuda"]) == EXIT_ERROR
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
