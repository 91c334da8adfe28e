"""Built-in merge methods register here, through the same hook as a third party's."""
from __future__ import annotations

from omnisdk.hookspecs import hookimpl


@hookimpl
def omnisdk_register_merge_methods(register):
    """task_arithmetic, ties, dare_ties, dare_linear: see omnisdk.fusion.methods for the calling convention."""
    from omnisdk.fusion.methods import BUILTIN_METHODS

    for name, method in BUILTIN_METHODS.items():
        register(name, method)
