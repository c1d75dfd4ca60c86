"""`python -m draggan COMMAND ...` (or `draggan COMMAND ...`): each command lives in `draggan/commands/<name>.py`.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Errors meant for the user (`stylegan2.errors.UserError`) are caught here, once: one line on
stderr, exit status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["render", "convert", "drag", "bench", "invert", "quality", "experiment", "train", "train-auto"]


def main(argv: list[str] | None = None) -> int:
    from stylegan2.errors import UserError

    parser = argparse.ArgumentParser(prog="draggan", description="DragGAN tools (also: python -m draggan)")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        module_name = f"draggan.commands.{name.replace('-', '_')}"
        try:
            mod = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # command not built yet
        modules[name] = mod
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.HELP))
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def main_exit() -> None:
    """The `draggan` console script."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
