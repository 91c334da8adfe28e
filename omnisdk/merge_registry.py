"""Built-in merge methods register here; the fusion issue fills the registry (task arithmetic, TIES, DARE)."""
from __future__ import annotations

from omnisdk.hookspecs import hookimpl


@hookimpl
def omnisdk_register_merge_methods(register):
    """No built-in methods yet: fusion lands with the decouple-fuse-recover issue."""
