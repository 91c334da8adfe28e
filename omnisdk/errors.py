"""Exceptions that omnisdk raises on purpose; each message names the value and the fix."""
from __future__ import annotations


class OmniError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class PluginNotInstalledError(OmniError):
    """A manifest or a call names a modality whose plugin is not installed."""

    def __init__(self, name: str, extra: str | None = None, package: str | None = None):
        self.name = name
        self.extra = extra
        if extra:
            fix = f"pip install 'omnisdk[{extra}]'"
        elif package and package != "omnisdk":
            fix = f"pip install {package}"
        else:
            fix = f"install the package that provides the '{name}' modality"
        self.install = fix
        super().__init__(f"modality plugin '{name}' is not available: {fix}")


class PluginUnavailableError(PluginNotInstalledError):
    """The plugin is registered but a library it needs is missing."""

    def __init__(self, name: str, extra: str | None, missing: list[str]):
        super().__init__(name, extra)
        self.missing = missing
        self.args = (f"{self.args[0]} (missing: {', '.join(missing)})",)


class CheckpointError(OmniError):
    """A checkpoint directory is missing, unsafe, corrupt or of an unknown format."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint holds pickled weights, which omnisdk never loads."""


class ModalityDetectionError(OmniError):
    """No installed plugin claims an input."""


class ItemError(OmniError):
    """One input item failed; the rest of its batch is unaffected."""

    def __init__(self, index: int, item: object, cause: str):
        self.index = index
        self.item = item
        self.cause = cause
        super().__init__(f"item {index} ({describe(item)}): {cause}")


class ItemErrors(OmniError):
    """Several items failed; `embeddings` still holds the rows of the good ones."""

    def __init__(self, errors: list[ItemError], embeddings=None):
        self.errors = errors
        self.embeddings = embeddings
        lines = "; ".join(str(e) for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} item(s) failed: {lines}{more}")


def describe(item: object, width: int = 60) -> str:
    """A short human label for an item in an error message."""
    label = getattr(item, "label", None)
    text = label() if callable(label) else repr(item)
    return text if len(text) <= width else "..." + text[-(width - 3) :]  # the end holds the file name


class WriteError(OmniError):
    """The filesystem refused a write (full, over quota, read-only): one line saying what and what to do."""

    _HINTS = {28: "the disk is full: free some space and run the command again",
              122: "the disk quota is exhausted: free some space and run the command again",
              30: "the filesystem is read-only: write somewhere else, or remount it read-write"}

    @classmethod
    def of(cls, exc: OSError, what: str) -> "WriteError":
        hint = cls._HINTS.get(exc.errno or 0)
        reason = (exc.strerror or str(exc)).lower()
        return cls(f"{what} failed: {reason}" + (f"; {hint}" if hint else ""))
