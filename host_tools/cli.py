"""``fer-host``: one entry point, one module per subcommand.

Each module in :data:`COMMANDS` has ``register(subparsers)`` which adds its
parser and sets ``func`` (returning an exit code). User errors
(:class:`agent.contracts.errors.FerError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# TensorFlow's C++ start-up chatter buries the one line a user needs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from agent.contracts.errors import run_command

COMMANDS = [
    "host_tools.train_cli",
    "host_tools.evaluate",
    "host_tools.export",
    "host_tools.convert",
    "host_tools.onnx_export",
    "host_tools.compile",
    "host_tools.make_raw",
    "host_tools.show_results",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-host", description="FER2013 -> model bundle -> DLC, on the workstation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("fer-host", args)


if __name__ == "__main__":
    sys.exit(main())
