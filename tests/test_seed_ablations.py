"""The seed-method ablation's variant table and settings logic (scripts/ablation_variants.py, the
joint settings of scripts/seed_ablations.py). The end-to-end run trains models and is not a test."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic resolves the models' annotations through it
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


variants = _load("ablation_variants")
GRID = {"ega_factor": [2.0, 4.0], "ega_rule": ["relative", "topk"], "aspects": [4, 2], "coma_tokens": [32, 8],
        "coma_steps": [200]}


def test_the_five_variants_and_their_methods():
    assert variants.VARIANTS == {"plain": (), "ega": ("ega",), "agff": ("agff",), "coma": ("coma",),
                                 "all": ("ega", "agff", "coma")}
    with pytest.raises(ValueError, match="unknown variant.*choose from"):
        variants.check_variants(["plain", "ega+agff"])


def test_run_names_are_stable_distinct_and_order_free():
    s = variants.first_of_grid(GRID)
    names = {v: variants.run_slug(m, s) for v, m in variants.VARIANTS.items()}
    assert names["plain"] == "plain"
    assert len(set(names.values())) == 5
    assert variants.run_slug(["ega", "coma", "agff"], s) == names["all"]
    assert names["all"] == "coma-t32-s200-b16-lr5e-05+agff-k4-all+ega-f2-relative-m0.1"
    # a setting that changes the training changes the name (a resumed run never reuses another's checkpoint)
    other = s.model_copy(update={"ega": s.ega.model_copy(update={"margin": 0.2})})
    assert variants.run_slug(["ega"], other) != names["ega"]
    with pytest.raises(ValueError, match="unknown method"):
        variants.run_slug(["lora"], s)


def test_sweep_grid_is_the_product_and_leaves_other_methods_alone():
    base = variants.first_of_grid(GRID)
    ega = variants.sweep_grid("ega", GRID, base)
    assert [(c.ega.factor, c.ega.rule) for c in ega] == [(2.0, "relative"), (2.0, "topk"), (4.0, "relative"), (4.0, "topk")]
    assert all(c.agff == base.agff and c.coma == base.coma for c in ega)
    assert [c.agff.aspects for c in variants.sweep_grid("agff", GRID, base)] == [4, 2]
    assert [c.coma.tokens for c in variants.sweep_grid("coma", GRID, base)] == [32, 8]
    assert base.agff.aspects == 4 and base.coma.tokens == 32 and base.ega.factor == 2.0


def test_best_takes_the_highest_and_the_first_of_a_tie():
    assert variants.best({"a": 0.5, "b": 0.7, "c": 0.6}) == "b"
    assert variants.best({"default": 0.7, "other": 0.7}) == "default"
    with pytest.raises(ValueError):
        variants.best({})


def test_held_out_tasks_are_those_on_compositional_items_only():
    from omnisdk.datasets.format import Dataset, Record, TaskSpec

    corpus = {r.id: r for r in [
        Record("scene-1", "image", path="scenes/test/scenes-test-00001.png", tasks=("t2i",)),
        Record("caption-scenes-dev-00003", "text", text="a red star", tasks=("i2t",)),
        Record("page-1", "document", path="documents/test/doc.pdf", tasks=("t2d",)),
        Record("label-3", "text", text="three", tasks=("digit_cls",)),
    ]}
    queries = {r.id: r for r in [
        Record("t2i-scenes-test-00001-0", "text", text="a red star", task="t2i"),
        Record("i2t-scenes-test-00001-0", "image", path="scenes/test/scenes-test-00001.png", task="i2t"),
        Record("t2d-documents-test-00001-0", "text", text="what is os.walk", task="t2d"),
        Record("digit-1", "image", path="digits/test/d.png", task="digit_cls"),
    ]}
    qrels = {"test": {"t2i-scenes-test-00001-0": {"scene-1": 1}, "i2t-scenes-test-00001-0": {"caption-scenes-dev-00003": 1},
                      "t2d-documents-test-00001-0": {"page-1": 1}, "digit-1": {"label-3": 1}}}
    tasks = {"t2i": TaskSpec(query_modality="text", corpus_modality="image"),
             "i2t": TaskSpec(query_modality="image", corpus_modality="text"),
             "t2d": TaskSpec(query_modality="text", corpus_modality="document"),
             "digit_cls": TaskSpec(query_modality="image", corpus_modality="text", kind="classification")}
    dataset = Dataset(root=Path("."), meta={}, tasks=tasks, corpus=corpus, queries=queries, qrels=qrels)
    assert variants.held_out_tasks(dataset, "test") == ["t2i", "i2t"]
    assert variants.held_out_tasks(dataset, "dev") == []


def test_every_variant_trains_with_the_joint_baselines_settings():
    from omnisdk.pipeline.config import PipelineConfig

    seed = _load("seed_ablations")
    config = PipelineConfig(specialists=["image", "audio"], train={"batch_size": 32, "precision": "bf16"},
                            specialist={"image": {"steps": 100}, "audio": {"steps": 50}})
    settings = seed.joint_settings(config)
    assert settings["steps"] == 150 and settings["batch_size"] == 32
    assert settings["quotas"] == {"image": 100.0, "audio": 50.0}
    fixed = seed.joint_settings(config.model_copy(update={"joint": {"steps": 20, "quotas": {"image": 1.0}}}))
    assert fixed["steps"] == 20 and fixed["quotas"] == {"image": 1.0}


def test_the_report_has_every_column_and_the_held_out_mean(tmp_path):
    import json

    from omnisdk.eval.report import EvalReport, TaskResult

    report_module = _load("ablation_report")

    def report(t2i: float, t2d: float) -> EvalReport:
        tasks = [TaskResult(task=name, modality=m, query_modality="text", corpus_modality=m, n_queries=10, n_candidates=50,
                            metrics={"hit@1": v, "ndcg@10": v}, chance=0.02)
                 for name, m, v in (("t2i", "image", t2i), ("t2d", "document", t2d))]
        return EvalReport(omnisdk_version="0", model="m", dataset="omniworld", dataset_hash="ab" * 32, split="test", tasks=tasks)

    def row(name: str, label: str, rep: EvalReport, aspects: int) -> dict:
        return {"variant": name, "label": label, "run": name, "directory": "x", "train_s": 40.0, "pairs_seen": 128,
                "warmup_s": 12.5 if name == "coma" else None, "final_loss": 0.1,
                "index": {"points": 50, "bytes": 123_456 * (1 + aspects), "vector_bytes": 76_800},
                "latency": {"points": 2000, "p50_ms": 1.5, "p99_ms": 3.25}, "report": rep}

    rows = [row("plain", "plain", report(0.5, 0.9), 0), row("coma", "+CoMa", report(0.7, 0.8), 0)]
    chosen = {"chosen": {"ega": {"factor": 2.0}}, "tuned": False, "sweep_steps": None, "table": []}
    report_module.write_report(tmp_path, rows, chosen, ["t2i"], {"batch_size": 32}, steps=4)
    text = (tmp_path / "ablation.md").read_text()
    assert "| +CoMa | 0.750 | 0.750 | 0.700 | 0.700 | 40.0 | 10.00 | 12.5 | 123,456 (50) | 76,800 | 1.50 | 3.25 |" in text
    assert "NOT tuned on dev" in text and "t2i" in text
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert data["summary"][0]["held_out_ndcg@10"] == 0.5 and data["summary"][1]["warmup_s"] == 12.5
    assert (tmp_path / "ablation.png").stat().st_size > 1000
