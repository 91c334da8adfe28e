"""Which files an index covers, how a file's content is named (sha256), and its points' ids."""
from __future__ import annotations

import hashlib
import json
import os
import stat as stat_module
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from omnisdk.items import Locator

#: The namespace of omnisdk point ids (uuid5 of a fixed name, so it never changes).
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/omnisdk/omnisdk/point")


@dataclass
class Walk:
    """The regular files under the roots, sorted, and what was passed over (reason -> count)."""

    files: list[Path] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def walk(roots: Iterable[Path]) -> Walk:
    """Regular files under `roots` (absolute, resolved), skipping hidden names and every symlink.

    A root named explicitly is used even if hidden; a root that is a symlink is resolved (the user
    named it). Inside the roots no symlink is followed, to a file or a folder: one pointing outside
    would index what was not asked for, one pointing inside would index a file twice.
    """
    result = Walk()
    seen: set[Path] = set()
    for root in roots:
        root = Path(root).resolve()
        if root.is_file():
            _add(result, seen, root)
            continue
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(directory)
            kept = []
            for name in sorted(dirnames):
                if name.startswith("."):
                    result.skipped["hidden"] += 1
                elif (base / name).is_symlink():
                    result.skipped["symlink"] += 1
                else:
                    kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                path = base / name
                if name.startswith("."):
                    result.skipped["hidden"] += 1
                elif path.is_symlink():
                    result.skipped["symlink"] += 1
                else:
                    _add(result, seen, path)
    result.files.sort()
    return result


def _add(result: Walk, seen: set[Path], path: Path) -> None:
    if path in seen:
        return
    seen.add(path)
    try:
        mode = path.stat(follow_symlinks=False).st_mode
    except OSError:  # gone between listing and stat: nothing to index
        return
    if stat_module.S_ISREG(mode):
        result.files.append(path)
    else:
        result.skipped["special"] += 1


def under(path: str | Path, roots: Iterable[Path]) -> bool:
    """Whether `path` is one of the roots or inside one."""
    path = Path(path)
    return any(path == root or path.is_relative_to(root) for root in roots)


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def locator_key(locator: Locator | dict | None) -> str:
    """A canonical text for a locator: '{}' for a whole file, sorted JSON otherwise."""
    data = locator.to_dict() if isinstance(locator, Locator) else (locator or {})
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def point_id(sha256: str, source: str, locator: Locator | dict | None) -> str:
    """The id of a chunk's point: uuid5 of (content sha256, absolute source path, locator).

    The same file content at the same place always gets the same ids, so writing a file's points
    again replaces them (idempotent: a killed run resumes without duplicates). The source is part
    of the id so that two identical files at two paths are two results, each with its own source;
    a moved file reuses its stored vectors instead of being embedded again (see Indexer).
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{sha256}\n{source}\n{locator_key(locator)}"))
