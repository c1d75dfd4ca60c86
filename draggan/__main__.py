"""`python -m draggan COMMAND ...`: each command lives in `draggan/commands/<name>.py`.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["render", "convert", "drag", "bench", "invert", "quality", "train"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m draggan", description="DragGAN tools")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"draggan.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"draggan.commands.{name}":
                raise
            continue  # command not built yet
        modules[name] = mod
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.HELP))
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
