"""`omnisdk pipeline run`: every stage on the tiny preset, the stage table, resume after a real kill."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnisdk.cli import main
from omnisdk.pipeline.config import PRESETS, load_config

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["base", "aligned", "specialist:image", "specialist:video", "specialist:document", "specialist:audio",
          "fused", "recovered", "rehearsed", "joint"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    config = load_config(name)
    assert config.specialists == ["image", "video", "document", "audio"]


def test_bad_config_is_one_line_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[fusion]\ndensity = 3\n')
    assert main(["pipeline", "run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "fusion.density" in err and len(err.strip().splitlines()) == 1


def test_pipeline_runs_every_stage_resumes_after_a_kill_and_skips_finished_stages(tmp_path, capsys, quick_pipeline):
    config = quick_pipeline(tmp_path / "quick.toml")
    out = tmp_path / "run"
    # A real kill: the first run dies once the audio specialist has its first checkpoint.
    proc = subprocess.Popen([sys.executable, "-m", "omnisdk", "pipeline", "run", str(config), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "specialists" / "audio" / "run" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not any(marker.glob("step-*")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    # report.md is rewritten after every stage's evaluation, so only the exit status tells a kill.
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "evals" / "joint.json").exists()

    assert main(["pipeline", "run", str(config), "--out", str(out)]) == 0
    summary = json.loads((out / "report.json").read_text())
    assert list(summary["stages"]) == STAGES
    assert {"specialist:image", "specialist:video", "specialist:document"} <= set(summary["skipped_stages"])
    audio = json.loads((out / "specialists" / "audio" / "omnisdk.json").read_text())
    assert audio["lineage"]["stage"] == "specialist"
    for stage, report in summary["stages"].items():
        assert len(report["tasks"]) == 12, stage  # ten single-modality tasks, t2x and a2x
        for task in report["tasks"]:
            assert all(0.0 <= v <= 1.0 for v in task["metrics"].values() if v is not None), (stage, task["task"])
    fused = json.loads((out / "fused" / "omnisdk.json").read_text())["lineage"]
    assert fused["stage"] == "fused" and len(fused["parents"]) == 5  # aligned base + four specialists
    aligned = json.loads((out / "aligned" / "omnisdk.json").read_text())
    assert fused["parents"][0] == aligned["fingerprint"] and aligned["lineage"]["stage"] == "align"
    assert audio["lineage"]["parents"] == [aligned["fingerprint"]]
    # Every stage read its inputs from the run's prepared-input cache.
    assert any((out / "cache").glob("image-*/*.safetensors"))
    joint = json.loads((out / "joint" / "omnisdk.json").read_text())["lineage"]
    assert joint["settings"]["steps"] == 8
    # the joint baseline takes each modality's batches in the proportion its specialist trained
    assert joint["settings"]["quotas"] == {"image": 6.0, "video": 4.0, "document": 4.0, "audio": 30.0}
    drift = summary["drift"]["plugins"]
    assert {p["plugin"] for p in drift} == {"image", "video", "document", "audio"}
    assert [p["recovery_available"] for p in drift if p["plugin"] == "audio"] == [True]
    markdown = (out / "report.md").read_text()
    for stage in STAGES:
        assert f"| {stage} |" in markdown
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Everything is done: a third run redoes nothing and reports the same numbers.
    capsys.readouterr()
    assert main(["pipeline", "run", str(config), "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert set(again["skipped_stages"]) >= {"base", "fuse", "rehearse", "joint", *(f"eval:{s}" for s in STAGES)}
    assert again["stages"] == summary["stages"]


def test_a_coma_warmup_stage_becomes_the_base_of_every_later_stage(tmp_path):
    config = tmp_path / "warm.toml"
    config.write_text('name = "warm"\nbase_preset = "tiny"\nspecialists = ["image"]\njoint_baseline = false\n'
                      '[data]\nomniworld_size = "tiny"\n[train]\nbatch_size = 4\nlearning_rate = 1e-3\n'
                      '[warmup]\nmethod = "coma"\nsteps = 2\nbatch_size = 4\ntokens = 4\n'
                      '[align]\nsteps = 2\n[specialist.image]\nsteps = 2\n[recovery]\nsteps = 1\n[rehearsal]\nsteps = 1\n')
    out = tmp_path / "run"
    assert main(["pipeline", "run", str(config), "--out", str(out)]) == 0
    warmup = json.loads((out / "warmup" / "omnisdk.json").read_text())
    aligned = json.loads((out / "aligned" / "omnisdk.json").read_text())
    base = json.loads((out / "base" / "omnisdk.json").read_text())
    assert warmup["lineage"]["stage"] == "warmup" and warmup["lineage"]["parents"] == [base["fingerprint"]]
    assert aligned["lineage"]["parents"] == [warmup["fingerprint"]]
    # the compression tokens and their pooling carry through to the served model
    rehearsed = json.loads((out / "rehearsed" / "omnisdk.json").read_text())
    assert rehearsed["backbone"]["pooling"] == "compression"
    summary = json.loads((out / "report.json").read_text())
    assert list(summary["stages"])[:3] == ["base", "warmup", "aligned"]

    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('method = "coma"', 'method = "mae"'))
    assert main(["pipeline", "run", str(bad), "--out", str(tmp_path / "bad")]) != 0


def test_seed_option_regenerates_omniworld_with_another_seed_and_refuses_given_data(tmp_path):
    from omnisdk.errors import OmniError
    from omnisdk.pipeline.commands import with_data_seed
    from omnisdk.pipeline.config import PipelineConfig, load_config

    config = load_config("small")
    reseeded = with_data_seed(config, 1)
    assert reseeded.data.seed == 1 and config.data.seed == 0
    assert reseeded.data.omniworld_size == config.data.omniworld_size and reseeded.align == config.align
    with pytest.raises(OmniError, match="--seed 1: the config reads its data from"):
        with_data_seed(PipelineConfig(data={"path": tmp_path}), 1)
