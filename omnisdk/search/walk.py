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
from omnisdk.search.rules import Selector, WalkRules

#: The namespace of omnisdk point ids (uuid5 of a fixed name, so it never changes).
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/omnisdk/omnisdk/point")


@dataclass
class Walk:
    """The regular files under the roots, sorted, what was passed over (cause -> count), and the
    files over the size cap with their sizes."""

    files: list[Path] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    too_large: list[tuple[Path, int]] = field(default_factory=list)


def walk(roots: Iterable[Path], rules: WalkRules | None = None) -> Walk:
    """Regular files under `roots` (absolute, resolved), skipping hidden names, every symlink, and
    what `rules` leave out (see omnisdk.search.rules: include/exclude, ignore files, size cap).

    A root named explicitly is used even if hidden, excluded or ignored (the user named it); a root
    that is a symlink is resolved. Inside the roots no symlink is followed, to a file or a folder:
    one pointing outside would index what was not asked for, one pointing inside would index a file
    twice. Skips are counted by cause: hidden, symlink, special, excluded, ignored, not included,
    too large.
    """
    rules = rules or WalkRules()
    select = Selector(rules)
    result = Walk()
    seen: set[Path] = set()
    for root in roots:
        _walk_root(result, seen, select, Path(root))
    result.files.sort()
    return result


def _walk_root(result: Walk, seen: set[Path], select: Selector, root: Path) -> None:
    """One named root, resolved: a file is taken as it is, a folder is walked."""
    root = root.resolve()
    if root.is_file():
        _add(result, seen, root, select.rules.max_file_bytes)
    else:
        _walk_folder(result, seen, select, root, root, select.ignore_specs(root, []))


def walk_paths(paths: Iterable[str | Path], roots: Iterable[Path], rules: WalkRules | None = None) -> Walk:
    """What `walk(roots, rules)` would select at or below each of `paths` (changed files or folders
    under the roots, as a watcher reports them), without walking the rest of the roots.

    A path's folders between its root and it are judged as the walk judges them (hidden, symlink,
    excluded, ignored by an ignore file above), so a file in an excluded folder stays out. A path
    that is gone, or outside every root, selects nothing.
    """
    rules = rules or WalkRules()
    select = Selector(rules)
    roots = [Path(r) for r in roots]
    result = Walk()
    seen: set[Path] = set()
    for path in paths:
        path = Path(os.path.abspath(path))  # not resolved: a symlink must stay one, to be skipped
        root = max((r for r in roots if path == r or path.is_relative_to(r)), key=lambda r: len(r.parts), default=None)
        if root is None or not os.path.lexists(path):
            continue
        if path == root:
            _walk_root(result, seen, select, root)
            continue
        specs = select.ignore_specs(root, [])
        cause = None
        for folder in list(reversed(path.parents))[len(root.parts):]:  # the folders from below the root to the parent
            cause = _cause(select, root, folder, True, specs)
            if cause:
                break
            specs = select.ignore_specs(folder, specs)
        is_dir = path.is_dir() and not path.is_symlink()
        cause = cause or _cause(select, root, path, is_dir, specs)
        if cause:
            result.skipped[cause] += 1
        elif is_dir:
            _walk_folder(result, seen, select, root, path, select.ignore_specs(path, specs))
        else:
            _add(result, seen, path, rules.max_file_bytes)
    result.files.sort()
    return result


def _walk_folder(result: Walk, seen: set[Path], select: Selector, root: Path, top: Path, top_specs: list) -> None:
    """The selected files under `top` (a folder under `root`, or `root`), whose ignore specs are `top_specs`."""
    cap = select.rules.max_file_bytes
    specs = {top: top_specs}
    for directory, dirnames, filenames in os.walk(top, followlinks=False):
        base = Path(directory)
        inherited = specs.pop(base, [])
        kept = []
        for name in sorted(dirnames):
            path = base / name
            cause = _cause(select, root, path, True, inherited)
            if cause:
                result.skipped[cause] += 1
            else:
                kept.append(name)
                specs[path] = select.ignore_specs(path, inherited)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = base / name
            cause = _cause(select, root, path, False, inherited)
            if cause:
                result.skipped[cause] += 1
            else:
                _add(result, seen, path, cap)


def _cause(select: Selector, root: Path, path: Path, is_dir: bool, specs: list) -> str | None:
    if path.name.startswith("."):
        return "hidden"
    if path.is_symlink():
        return "symlink"
    return select.cause(root, path, is_dir, specs)


def _add(result: Walk, seen: set[Path], path: Path, cap: int | None = None) -> None:
    if path in seen:
        return
    seen.add(path)
    try:
        st = path.stat(follow_symlinks=False)
    except OSError:  # gone between listing and stat: nothing to index
        return
    if not stat_module.S_ISREG(st.st_mode):
        result.skipped["special"] += 1
    elif cap is not None and st.st_size > cap:
        result.skipped["too large"] += 1
        result.too_large.append((path, st.st_size))
    else:
        result.files.append(path)


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
