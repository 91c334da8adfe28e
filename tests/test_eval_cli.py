"""`omnisdk eval` and `omnisdk eval-compare` through the CLI's main(), on a tiny model and dataset."""
from __future__ import annotations

import json

import pytest

from media.eval_data import write_eval_dataset
from omnisdk.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_factory):
    out = tmp_path_factory.mktemp("eval_cli") / "tiny-base"
    tiny_model_factory(["text", "image"]).save(out)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_eval_dataset(tmp_path_factory.mktemp("eval_cli_data") / "data", corrupt_image=True)


def test_eval_prints_the_table_and_writes_json_markdown_and_png(model_dir, data_dir, tmp_path, capsys):
    out, chart, md = tmp_path / "report.json", tmp_path / "chart.png", tmp_path / "table.md"
    code = main(["eval", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
                 "--plot", str(chart), "--markdown", str(md), "--batch-size", "4", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0  # a corrupt image is reported, not fatal
    assert "| task | modality | queries | candidates | hit@1 | R@1 | R@5 | R@10 | nDCG@10 | MRR | chance |" in captured.out
    assert "| t2i | image |" in captured.out and "| **macro** |" in captured.out
    assert "**tiny-base** on tiny-eval" in captured.out
    assert "2 item(s) failed to encode" in captured.err
    report = json.loads(out.read_text())
    assert {"omnisdk_version", "model", "model_fingerprint", "dataset", "dataset_hash", "split", "tasks",
            "modalities", "macro", "timings", "failures"} <= set(report)
    assert set(report["tasks"][0]["metrics"]) == {"hit@1", "recall@1", "recall@5", "recall@10", "ndcg@10", "mrr"}
    assert report["model"] == "tiny-base" and len(report["model_fingerprint"]) == 64
    assert {f["id"] for f in report["failures"]} == {"img_broken", "q_i2t_broken"}
    assert chart.read_bytes()[:8] == PNG_MAGIC and chart.stat().st_size > 5000
    assert md.read_text().startswith("**tiny-base**")


def test_eval_of_chosen_tasks_as_json(model_dir, data_dir, capsys):
    code = main(["eval", "--model", str(model_dir), "--data", str(data_dir), "--tasks", "t2t", "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and [t["task"] for t in report["tasks"]] == ["t2t"]


def test_unknown_task_exits_2_with_one_line_listing_valid_tasks(model_dir, data_dir, capsys):
    code = main(["eval", "--model", str(model_dir), "--data", str(data_dir), "--tasks", "t2i,t9x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "unknown task 't9x'" in err and "valid tasks: t2i, i2t, t2t" in err


def test_model_and_baseline_are_exclusive(model_dir, data_dir):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", str(model_dir), "--baseline", "random", "--data", str(data_dir)])
    assert exc.value.code == 2


def test_baselines_and_compare(data_dir, tmp_path, capsys):
    for name in ("random", "oracle"):
        assert main(["eval", "--baseline", name, "--data", str(data_dir), "--out", str(tmp_path / f"{name}.json"),
                     "--no-progress"]) == 0
    capsys.readouterr()
    chart = tmp_path / "compare.png"
    code = main(["eval-compare", str(tmp_path / "random.json"), str(tmp_path / "oracle.json"),
                 "--labels", "rand,orac", "--metric", "ndcg@10", "--plot", str(chart)])
    out = capsys.readouterr().out
    assert code == 0
    assert "| task | rand | orac | chance |" in out and "| t2t |" in out and "| **macro** |" in out
    assert chart.read_bytes()[:8] == PNG_MAGIC


def test_compare_with_a_missing_report_is_one_line(tmp_path, capsys):
    assert main(["eval-compare", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert "nope.json does not exist" in err and err.strip().count("\n") == 0
