"""Peak memory while loading and fusing a random Qwen2-VL of about 2B parameters on CPU, against its checkpoint size.

Issue 11's target: loading and fusing never hold a checkpoint twice; peak RSS at most 1.3x the
checkpoint. Each phase runs in a child process of its own, so its peak RSS (ru_maxrss, from wait4)
is that phase's alone, interpreter and torch included (about 0.4 GB, reported as "baseline"):

1. build (not measured): Qwen2-VL-2B's shapes (28 text layers of 1536, a 32-block vision tower,
   the 151,936-token vocabulary), random bf16 weights, `save_pretrained` into a temp dir;
2. load: `omnisdk.backbone.load_pretrained` of that directory (what `omnisdk init --backbone` runs);
3. init: `OmniModel.create` + `save` of a text-only base (the omnisdk checkpoint fusion reads);
4. specialist (not measured): the base loaded, one tensor changed, saved with the base as parent;
5. fuse: task arithmetic of the base and that specialist.

    python bench/load_rss.py [--layers 28] [--workdir DIR] [--keep]

Needs about 3x the checkpoint (4.4 GB bf16) of free memory and 4x of free disk. Not run by CI.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHASES = ("baseline", "build", "load", "init", "specialist", "fuse")


def phase(name: str, work: Path, layers: int) -> None:
    """The body of one child process."""
    import torch

    if name == "baseline":
        import transformers  # noqa: F401  (what every phase imports anyway)

        import omnisdk.model  # noqa: F401
    elif name == "build":
        build(work / "source", layers)
    elif name == "load":
        from omnisdk.backbone import load_pretrained

        model, _ = load_pretrained(work / "source")
        print(json.dumps({"dtype": str(next(model.parameters()).dtype),
                          "params": sum(p.numel() for p in model.parameters())}))
    elif name == "init":
        from omnisdk.model import OmniModel

        OmniModel.create(str(work / "source"), plugins=["text"]).save(work / "base")
    elif name == "specialist":
        from omnisdk import checkpoint as ckpt
        from omnisdk.model import OmniModel

        model = OmniModel.load(work / "base", device="cpu")
        with torch.no_grad():
            model.backbone.get_input_embeddings().weight[:8] += 0.01
        model.save(work / "specialist", ckpt.Lineage(stage="specialist", parents=[model.fingerprint]))
    elif name == "fuse":
        from omnisdk.fusion import fuse

        fuse(work / "base", [work / "specialist"], method="task_arithmetic", out=work / "fused", progress=False)


def build(directory: Path, layers: int) -> None:
    """Qwen2-VL-2B's shapes with random bf16 weights, a small BPE tokenizer with the vision tokens, its image processor."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer, Qwen2VLImageProcessor

    from omnisdk.tokenizer_builder import build_bpe_tokenizer

    build_bpe_tokenizer(directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokens = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    tokenizer.save_pretrained(str(directory))
    ids = dict(zip(("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"),
                   tokenizer.convert_tokens_to_ids(tokens)))
    text = dict(vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers,
                num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, eos_token_id=tokenizer.eos_token_id)
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = AutoConfig.for_model("qwen2_vl", text_config=text, vision_config=vision, **ids)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(directory))
    Qwen2VLImageProcessor().save_pretrained(str(directory))


def run_phase(name: str, work: Path, layers: int) -> float:
    """Run one phase in a child; its peak RSS in GB."""
    child = subprocess.Popen([sys.executable, __file__, "--phase", name, "--workdir", str(work), "--layers", str(layers)])
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"phase {name} failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_maxrss / 1024**2  # kB on Linux


def size_gb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors")) / 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=28, help="text layers (28: Qwen2-VL-2B)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return phase(args.phase, args.workdir, args.layers)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="load_rss-"))
    try:
        peaks = {name: run_phase(name, work, args.layers) for name in PHASES}
        sizes = {"source": size_gb(work / "source"), "base": size_gb(work / "base")}
        print(f"checkpoint: source {sizes['source']:.2f} GB (bf16 safetensors), omnisdk base {sizes['base']:.2f} GB")
        print("| phase | peak RSS GB | / checkpoint | less baseline, / checkpoint |\n|---|---|---|---|")
        for name, against in (("load", "source"), ("init", "source"), ("fuse", "base")):
            peak, size = peaks[name], sizes[against]
            print(f"| {name} | {peak:.2f} | {peak / size:.2f}x {against} | {(peak - peaks['baseline']) / size:.2f}x |")
        print(f"baseline (imports) {peaks['baseline']:.2f} GB; build {peaks['build']:.2f} GB; specialist {peaks['specialist']:.2f} GB")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
