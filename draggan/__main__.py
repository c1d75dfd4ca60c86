"""`python -m draggan COMMAND ...` (or `draggan COMMAND ...`): each command lives in `draggan/commands/<name>.py`.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Errors meant for the user (`stylegan2.errors.UserError`) are caught here, once: one line on
stderr, exit status 2; so are argparse's (a bad flag or value: one line naming `--help`, not the
usage block). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (exit status 2), as every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


COMMANDS = ["render", "convert", "drag", "bench", "invert", "quality", "experiment", "train", "train-auto"]


def main(argv: list[str] | None = None) -> int:
    from stylegan2.errors import UserError

    parser = OneLineParser(prog="draggan", description="DragGAN tools (also: python -m draggan)")
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad flag (2, its line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return modules[args.command].run(args)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return 2


def main_exit() -> None:
    """The `draggan` console script."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
