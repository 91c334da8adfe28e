"""Run by torch.distributed.run in test_trainer: each rank trains, then writes its weights' fingerprint."""
import json
import os
import sys
from pathlib import Path

from omnisdk.trainers.stages import train_specialist

base, data, out = sys.argv[1:4]
result = train_specialist(base, "image", data, out, {"steps": 3, "batch_size": 4, "hard_negatives": 1})
rank = os.environ["RANK"]
Path(out).mkdir(parents=True, exist_ok=True)
(Path(out) / f"rank{rank}.json").write_text(json.dumps({"fingerprint": result.fingerprint}))
