"""Which files a walk selects: include/exclude globs, ignore files, and a size cap.

Patterns use gitignore syntax through `pathspec` (a maintained implementation of git's rules):
`*.md` matches at any depth, `drafts/` a folder anywhere, `/notes/*.txt` from the root, and `!`
re-includes. `--include`/`--exclude` patterns are relative to each root given; a `.gitignore` or
`.omnisdkignore` is relative to its own folder and covers everything below it, a deeper file
overriding a shallower one, the last matching line winning, as git does. A folder that is
excluded or ignored is not entered.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from omnisdk.errors import OmniError

#: Ignore files honoured unless `ignore_files` is off, in the order read (the later wins a tie).
IGNORE_FILES = (".gitignore", ".omnisdkignore")


class WalkRules(BaseModel):
    """What `omnisdk index` walks; recorded per root in the collection's metadata."""

    model_config = ConfigDict(extra="forbid")

    #: only files matching one of these (gitignore syntax, relative to the root) are indexed.
    include: list[str] = []
    #: files and folders matching one of these are skipped.
    exclude: list[str] = []
    #: honour .gitignore and .omnisdkignore files under the roots.
    ignore_files: bool = True
    #: files larger than this many MiB are skipped (counted and listed in the report).
    max_file_mb: float | None = Field(None, gt=0)

    @property
    def max_file_bytes(self) -> int | None:
        return None if self.max_file_mb is None else int(self.max_file_mb * 1024 * 1024)


def _pathspec():
    try:
        import pathspec
    except ImportError as exc:
        raise OmniError("include/exclude patterns and ignore files need pathspec: pip install 'omnisdk[search]'") from exc
    return pathspec


def compile_patterns(lines: list[str], where: str) -> Any:
    """A gitignore-style matcher of `lines`; an invalid pattern is an OmniError naming it and `where`."""
    spec_cls = _pathspec().GitIgnoreSpec
    try:
        return spec_cls.from_lines(lines)
    except Exception as exc:  # pathspec raises GitWildMatchPatternError (a ValueError) and others
        raise OmniError(f"invalid pattern in {where}: {exc} (patterns use .gitignore syntax)") from exc


class Selector:
    """Decides, folder by folder, why a path is skipped (None: it is kept)."""

    def __init__(self, rules: WalkRules):
        self.rules = rules
        self.include = compile_patterns(rules.include, "--include") if rules.include else None
        self.exclude = compile_patterns(rules.exclude, "--exclude") if rules.exclude else None

    def ignore_specs(self, directory: Path, inherited: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
        """The ignore files that apply below `directory`: its parents' and its own."""
        if not self.rules.ignore_files:
            return inherited
        lines: list[str] = []
        for name in IGNORE_FILES:
            try:
                lines += (directory / name).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:  # absent (the usual case) or unreadable: nothing to honour
                continue
        lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            return inherited
        return [*inherited, (directory, compile_patterns(lines, str(directory / "(ignore file)")))]

    def cause(self, root: Path, path: Path, is_dir: bool, specs: list[tuple[Path, Any]]) -> str | None:
        suffix = "/" if is_dir else ""
        relative = path.relative_to(root).as_posix() + suffix
        if self.exclude is not None and self.exclude.match_file(relative):
            return "excluded"
        ignored = None
        for base, spec in specs:  # deepest last: its decision stands
            decision = spec.check_file(path.relative_to(base).as_posix() + suffix).include
            if decision is not None:
                ignored = decision
        if ignored:
            return "ignored"
        if not is_dir and self.include is not None and not self.include.match_file(relative):
            return "not included"
        return None
