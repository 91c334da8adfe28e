"""omnisdk: one embedding space for text, images, videos, PDF pages and audio."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Item", "Locator", "OmniModel", "__version__"]


def __getattr__(name: str):
    # Lazy: `import omnisdk` stays cheap (no torch) for the CLI's fast paths and plugin discovery.
    if name == "OmniModel":
        from omnisdk.model import OmniModel

        return OmniModel
    if name in ("Item", "Locator"):
        from omnisdk import items

        return getattr(items, name)
    raise AttributeError(f"module 'omnisdk' has no attribute {name!r}")
