"""Fusion of four specialists: `omnisdk fuse` against `mergekit-yaml`, same inputs, same method and parameters.

Builds a base OmniModel on a random Qwen2 backbone (28M parameters, about the size design.md measured
mergekit on), four "specialists" moved from it by seeded noise, and exports every backbone as a Hugging
Face Qwen2ForCausalLM checkpoint for mergekit. Each fusion runs as its own subprocess, under a small
wrapper that reports the child's peak RSS (getrusage RUSAGE_CHILDREN) and wall time. Prints, per method:
the max abs difference between the two merged backbones (target <= 1e-5 for task_arithmetic and ties),
how many entries differ by more than 1e-5, and the omnisdk / mergekit ratios of wall time and peak RSS;
then omnisdk's peak RSS with 1 and with 4 specialists.

Parameters are matched to mergekit's semantics: `weight` per model, `density` per model, `lambda`, and
`normalize: true` for ties and dare_ties (omnisdk's TIES mean is always normalised; mergekit's dare_ties
defaults to a plain sum). TIES can differ where magnitudes tie exactly at a tensor's trim threshold
(common in float32 tensors of millions of entries): omnisdk keeps the lowest indices, mergekit whatever
its unstable argsort puts first. The bench counts those entries and leaves them out of the max abs
difference. DARE cannot match entry by entry: the random masks differ, and mergekit's `rescale`
restores each tensor's L1 norm where omnisdk scales survivors by 1/density; for DARE the table shows
how far apart the two updates are relative to the update's size, and the ratio of their norms
(near 1 when both draw from the same distribution).

    HF_HUB_OFFLINE=1 python bench/fuse_vs_mergekit.py [--mergekit /tmp/mkvenv/bin/mergekit-yaml] [--workdir DIR]

mergekit 0.1.5 goes in its own venv so that its pins cannot move the project's:
`python -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install mergekit==0.1.5`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WEIGHTS = [1.0, 0.5, 0.75, 1.25]
METHODS = {  # method -> (omnisdk options, mergekit global parameters)
    "task_arithmetic": ({"density": 1.0}, {}),
    "ties": ({"density": 0.5}, {"normalize": True}),
    "dare_ties": ({"density": 0.5}, {"normalize": True}),
    "dare_linear": ({"density": 0.5}, {}),
}
LAMBDA = 0.9
# Runs the command given as argv[1:], then prints its peak RSS (KiB on Linux) and wall seconds as JSON.
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode; wall = time.perf_counter() - t\n"
    "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
)


def build_inputs(root: Path, hidden: int, layers: int, vocab: int, intermediate: int) -> dict[str, Path]:
    """Base and four specialists as omnisdk checkpoints, each also exported as a HF checkpoint."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, Qwen2Model
    from transformers.utils import logging as hf_logging

    from omnisdk import checkpoint as ckpt
    from omnisdk.model import OmniModel
    from omnisdk.tokenizer_builder import build_wordpiece_tokenizer

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(build_wordpiece_tokenizer(root / "wordpiece")))
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    base = OmniModel.create(Qwen2Model(config), tokenizer, plugins=["text"], seed=0)
    print(f"backbone: Qwen2, {sum(p.numel() for p in base.backbone.parameters()) / 1e6:.1f}M parameters", flush=True)
    paths = {"base": root / "base"}
    base.save(paths["base"])
    base_fp = base.fingerprint
    state = {k: v.clone() for k, v in base.backbone.state_dict().items()}
    for i in range(len(WEIGHTS)):
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for name, param in base.backbone.named_parameters():
                param.copy_(state[name] + 0.01 * torch.randn(param.shape, generator=g))
        base._fingerprint = None
        paths[f"s{i}"] = root / f"s{i}"
        base.save(paths[f"s{i}"], lineage=ckpt.Lineage(stage="specialist", parents=[base_fp], settings={"plugin": "text"}))
    for name, path in list(paths.items()):
        hf = Qwen2ForCausalLM(config)
        hf.model.load_state_dict({k[len("backbone."):]: v for k, v in ckpt.load_weights(path).items() if k.startswith("backbone.")})
        hf.save_pretrained(root / f"{name}_hf")
        tokenizer.save_pretrained(root / f"{name}_hf")
        paths[f"{name}_hf"] = root / f"{name}_hf"
    return paths


def measured(cmd: list[str], log: Path) -> dict:
    with open(log, "w") as fh:
        out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], stdout=subprocess.PIPE, stderr=fh, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{cmd[0]} failed ({result['rc']}); see {log}")
    return result


def run_omnisdk(paths: dict[str, Path], method: str, density: float, out: Path, specialists: int = 4) -> dict:
    cmd = [sys.executable, "-m", "omnisdk", "fuse", "--base", str(paths["base"]), "--method", method,
           "--density", str(density), "--lambda", str(LAMBDA), "--weights", ",".join(map(str, WEIGHTS[:specialists])),
           "--seed", "0", "--out", str(out), "--json"]
    for i in range(specialists):
        cmd += ["--specialist", str(paths[f"s{i}"])]
    return measured(cmd, out.parent / f"{out.name}.log")


def run_mergekit(mergekit: str, paths: dict[str, Path], method: str, density: float, extra: dict, out: Path) -> dict:
    models = [{"model": str(paths[f"s{i}_hf"].resolve()), "parameters": {"weight": w, "density": density}}
              for i, w in enumerate(WEIGHTS)]
    config = {"merge_method": method, "base_model": str(paths["base_hf"].resolve()), "models": models,
              "parameters": {"lambda": LAMBDA, **extra}, "dtype": "float32"}
    config_path = out.parent / f"{out.name}.yml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return measured([mergekit, str(config_path), str(out), "--random-seed", "0", "--quiet"], out.parent / f"{out.name}.log")


def backbone_of(directory: Path) -> dict:
    from safetensors.torch import load_file

    return {k[len("backbone."):]: v for k, v in load_file(str(directory / "model.safetensors")).items() if k.startswith("backbone.")}


def compare(omni_dir: Path, mergekit_dir: Path, paths: dict[str, Path], method: str, density: float) -> dict:
    """Differences between the two merged backbones; for ties, which come from magnitude ties at a trim threshold."""
    import torch
    from safetensors.torch import load_file

    ours, base = backbone_of(omni_dir), backbone_of(paths["base"])
    theirs = {}
    for shard in sorted(mergekit_dir.glob("*.safetensors")):
        theirs.update({k.removeprefix("model."): v for k, v in load_file(str(shard)).items()})
    common = sorted(set(ours) & set(theirs))
    diffs = {k: (ours[k] - theirs[k].float()).abs() for k in common}
    differing = {k: (d > 1e-5).reshape(-1).nonzero().squeeze(1) for k, d in diffs.items()}
    explained = 0
    if method == "ties":  # an entry whose |delta| sits exactly at some specialist's threshold: a tie-break
        specialists = [backbone_of(paths[f"s{i}"]) for i in range(len(WEIGHTS))]
        for k, idx in differing.items():
            if idx.numel():
                tied = torch.zeros(idx.numel(), dtype=torch.bool)
                for s in specialists:
                    m = (s[k] - base[k]).abs().reshape(-1)
                    threshold = m.kthvalue(m.numel() - max(1, int(density * m.numel())) + 1).values
                    tied |= m[idx] == threshold
                explained += int(tied.sum())
                diffs[k].reshape(-1)[idx[tied]] = 0
    diff_sq = sum(float((ours[k] - theirs[k].float()).pow(2).sum()) for k in common)
    update_sq = sum(float((ours[k] - base[k]).pow(2).sum()) for k in common)
    their_update_sq = sum(float((theirs[k].float() - base[k]).pow(2).sum()) for k in common)
    return {"tensors": len(common), "missing_in_mergekit": sorted(set(ours) - set(theirs))[:3],
            "max_abs_diff": max(float(d.max()) for d in diffs.values()),
            "entries_over_1e-5": sum(i.numel() for i in differing.values()), "threshold_ties": explained,
            "entries": sum(ours[k].numel() for k in common), "relative_diff": (diff_sq / update_sq) ** 0.5 if update_sq else 0.0,
            "update_norm_ratio": (update_sq / their_update_sq) ** 0.5 if their_update_sq else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-yaml")
    parser.add_argument("--workdir", type=Path, help="keep the checkpoints here (default: a temporary directory)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        paths = build_inputs(root, args.hidden, args.layers, args.vocab, args.intermediate)
        rows = {}
        for method in args.methods.split(","):
            options, extra = METHODS[method]
            omni = run_omnisdk(paths, method, options["density"], root / f"omni_{method}")
            mk = run_mergekit(args.mergekit, paths, method, options["density"], extra, root / f"mk_{method}")
            rows[method] = {"omnisdk": omni, "mergekit": mk, **compare(root / f"omni_{method}", root / f"mk_{method}", paths, method, options["density"]),
                            "wall_ratio": omni["wall_s"] / mk["wall_s"], "rss_ratio": omni["peak_rss_mb"] / mk["peak_rss_mb"]}
            print(f"{method}: done", flush=True)
        one = run_omnisdk(paths, "ties", 0.5, root / "omni_ties_1", specialists=1)
        floor = measured([sys.executable, "-c", "import torch, safetensors"], root / "floor.log")
        report(rows, one, floor)
        if args.json:
            args.json.write_text(json.dumps({"methods": rows, "omnisdk_ties_1_specialist": one, "import_torch": floor}, indent=2))


def report(rows: dict, one: dict, floor: dict) -> None:
    print("\nmax abs diff leaves out the entries that differ only by a tie-break at a trim threshold (ties)")
    print("\n| method | max abs diff | entries > 1e-5 (threshold ties) | rel. diff of update | update norm ratio | omnisdk s | mergekit s | wall ratio | omnisdk MB | mergekit MB | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, r in rows.items():
        if r["missing_in_mergekit"]:
            print(f"warning: mergekit's {method} output lacks {r['missing_in_mergekit']}")
        print(f"| {method} | {r['max_abs_diff']:.2e} | {r['entries_over_1e-5']} of {r['entries']} ({r['threshold_ties']}) | {r['relative_diff']:.3f} | {r['update_norm_ratio']:.4f} | {r['omnisdk']['wall_s']:.1f} | "
              f"{r['mergekit']['wall_s']:.1f} | {r['wall_ratio']:.2f} | {r['omnisdk']['peak_rss_mb']:.0f} | "
              f"{r['mergekit']['peak_rss_mb']:.0f} | {r['rss_ratio']:.2f} |")
    four = rows.get("ties", {}).get("omnisdk")
    if four:
        print(f"\nomnisdk fuse (ties) peak RSS: 1 specialist {one['peak_rss_mb']:.0f} MB, 4 specialists {four['peak_rss_mb']:.0f} MB; "
              f"a process that only imports torch: {floor['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
