"""`omnisdk demo`: data, pipeline, Qdrant Edge index and the example queries, end to end (a short pipeline)."""
from __future__ import annotations

from omnisdk.cli import main
from omnisdk.demo import COLLECTION, EXAMPLES


def test_demo_trains_indexes_and_answers_every_example(tmp_path, capsys, quick_pipeline):
    config = quick_pipeline(tmp_path / "quick.toml")
    cache = tmp_path / "cache"
    assert main(["demo", "--cache", str(cache), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    for task, title in EXAMPLES:
        assert f"[{task}]" in out, task
    assert out.count(" 1. ") >= len(EXAMPLES)  # a top-3 under every example
    assert "| rehearsed |" in out and "| joint |" in out  # the stage table
    # The served model's own test-split hit@1, one row per task.
    assert "hit@1 of the served model (rehearsed) on the test split" in out
    served = out.split("hit@1 of the served model")[1]
    for task in ("t2i", "t2v", "t2d", "t2a", "a2t", "a2i"):
        assert f"| {task} |" in served, task
    assert f"--collection {COLLECTION}" in out
    # The tally counts the examples whose first hit carries a tick.
    ticked_first = out.count("  ✓ 1. ")
    assert f"{ticked_first} of {len(EXAMPLES)} example queries have a relevant top hit" in out

    # A second run reuses everything: nothing is trained or embedded again.
    assert main(["demo", "--cache", str(cache), "--config", str(config)]) == 0
    again = capsys.readouterr().out
    assert "(cached)" in again and " 0 new," in again

    from omnisdk.store import open_store

    with open_store(str(cache / "store")) as store:
        assert store.count(COLLECTION) > 200  # every corpus file, PDF pages and captions included
