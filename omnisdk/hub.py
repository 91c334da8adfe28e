"""Where pretrained parts come from: a local directory or a Hugging Face hub id, by one code path.

A hub id resolves through the normal Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`), so a model a
user downloaded once loads offline afterwards. Failures name the source and, for a hub id, say
whether `HF_HUB_OFFLINE` forbade the download.
"""
from __future__ import annotations

import os
from pathlib import Path

from omnisdk.errors import CheckpointError

#: Config keys that say where a config came from rather than what the architecture is; they must
#: not be passed back when a part is rebuilt from a manifest.
CONFIG_NOISE = frozenset({
    "model_type", "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype",
    "id2label", "label2id", "output_hidden_states", "output_attentions", "return_dict",
})  # fmt: skip


def is_local(source: str | Path) -> bool:
    """True when `source` names something on this machine (a hub id never exists as a path)."""
    try:
        return Path(source).expanduser().exists()
    except OSError:
        return False


def offline() -> bool:
    """Whether downloads are forbidden: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in values)


def check_local_dir(source: str | Path, what: str) -> None:
    """A local source must be a directory without only-pickled weights; a hub id passes untouched."""
    from omnisdk.backbone import refuse_pickles

    if not is_local(source):
        return
    path = Path(source).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{what} source {path} is a file; name the directory that holds config.json")
    refuse_pickles(path)


def load_error(what: str, source: str | Path, exc: BaseException) -> CheckpointError:
    """A CheckpointError naming the part, its source and what to do."""
    if is_local(source):
        return CheckpointError(f"cannot load the {what} from {source}: {exc}")
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    if offline():
        return CheckpointError(
            f"cannot load the {what} '{source}': it is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 "
            "forbids downloading it. Run once with network access and HF_HUB_OFFLINE unset, or pass a local directory"
        )
    return CheckpointError(
        f"cannot load the {what} '{source}' from the Hugging Face hub or its cache ({cache}): {exc}. Check the id "
        "and the network; on a machine without one, download it elsewhere or set HF_HUB_OFFLINE=1 to use the cache only"
    )


def clean_config(config_dict: dict) -> dict:
    """A transformers config dict without provenance keys, with its model_type kept for rebuilding."""
    cleaned = {k: v for k, v in config_dict.items() if k not in CONFIG_NOISE}
    cleaned["model_type"] = config_dict["model_type"]
    return cleaned
