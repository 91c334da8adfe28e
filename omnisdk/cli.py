"""The `omnisdk` command line. Errors print one line and exit non-zero; `--debug` shows tracebacks.

Every command, built-in or third-party, is added through the `omnisdk_register_commands` hook: the
built-in ones live in their subpackages' `commands.py` modules (listed in
`omnisdk.plugin_manager.BUILTIN_COMMANDS`), which the plugin manager registers like any plugin.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from omnisdk import __version__
# Re-exported: older imports name them here.
from omnisdk.commands import (  # noqa: F401
    EXIT_ERROR,
    EXIT_ITEMS_FAILED,
    cmd_embed,
    cmd_info,
    cmd_init,
    cmd_plugins,
    expand_chunks,
    model_parts,
    parse_input,
)
from omnisdk.errors import OmniError
from omnisdk.tables import markdown_table  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    """The `omnisdk` parser, with every command that a plugin (built-in or installed) registers."""
    from omnisdk.plugin_manager import register_builtin_commands

    parser = argparse.ArgumentParser(prog="omnisdk", description="Omni-modal embeddings: decouple, fuse, recover.")
    parser.add_argument("--version", action="version", version=f"omnisdk {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register_builtin_commands().hook.omnisdk_register_commands(subparsers=sub)
    _accept_debug_everywhere(parser)
    return parser


def _accept_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let `--debug` follow any (sub)command too, as in `omnisdk embed --debug ...`.

    Our one-line errors say "run with --debug", and users add it at the end. SUPPRESS keeps a
    subcommand that was not given it from resetting the top-level flag to False.
    """
    for action in parser._actions:  # argparse exposes subparsers only through this attribute
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for subparser in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            if "--debug" not in subparser._option_string_actions:
                subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show full tracebacks and debug logs")
            _accept_debug_everywhere(subparser)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries(debug)
    try:
        args = build_parser().parse_args(argv)
        debug = bool(getattr(args, "debug", False))  # "--debug" as a value (a text to embed) is not the flag
        return int(args.func(args) or 0)
    except OmniError as exc:
        if debug:
            raise
        print(f"omnisdk: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("omnisdk: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unplanned: one line, the traceback only with --debug
        if debug:
            raise
        print(f"omnisdk: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _quiet_libraries(debug: bool) -> None:
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


if __name__ == "__main__":
    sys.exit(main())
