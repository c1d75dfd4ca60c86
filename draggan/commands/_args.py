"""Argument checks the commands share: seeds, and output files checked before any work is done.

Each check fails with one line (argparse's `ArgumentTypeError` for a flag's value, `OutputPathError`
for an output file), which `draggan.__main__` prints once with exit status 2.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Iterable

from draggan.config import SEED_MAX  # numpy's RandomState takes seeds 0 .. 2**32 - 1, as the app's Seed box
from stylegan2.errors import UserError


class OutputPathError(UserError):
    """An output file that could not be written: checked before the work that would fill it."""


def seed(text: str) -> int:
    """argparse type: a whole number 0 .. SEED_MAX."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {SEED_MAX}, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {SEED_MAX}, got {value}")
    return value


def number(minimum: float | None = None, *, whole: bool = False, strict: bool = False):
    """argparse type: a finite number (whole: an integer), at least `minimum` (strict: above it)."""
    kind = "a whole number" if whole else "a number"
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"

    def parse(text: str) -> float | int:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (not whole or value.is_integer())
        if ok and minimum is not None:
            ok = value > minimum if strict else value >= minimum
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {kind}{bound}, got {text!r}")
        return int(value) if whole else value
    parse.__name__ = "int" if whole else "float"
    return parse


positive = number(0, strict=True)
finite = number()
count = number(1, whole=True)


def image_suffixes() -> set[str]:
    """Suffixes Pillow can write an image to (.png, .jpg, .webp, ...)."""
    from PIL import Image

    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def check_suffix(path: str | os.PathLike, flag: str, suffixes: Iterable[str], kind: str = "file") -> None:
    """Raise OutputPathError unless `path` ends in one of `suffixes` (lower case, with the dot)."""
    allowed = sorted(suffixes)
    name = Path(path).name
    if Path(path).suffix.lower() not in allowed:
        common = [s for s in (".png", ".jpg", ".webp") if s in allowed]
        shown = ", ".join(allowed) if len(allowed) <= 6 or not common else ", ".join(common) + ", ..."
        raise OutputPathError(f"{flag}: name the {kind} {shown}, not {name!r}")


def check_output(path: str | os.PathLike | None, flag: str, suffixes: Iterable[str] | None = None,
                 kind: str = "file") -> None:
    """Raise OutputPathError unless `path` can be written: its folder exists and is writable, it is not a
    folder itself, and (with `suffixes`) its suffix is one of them. None (flag not given) passes."""
    if path is None:
        return
    if suffixes is not None:
        check_suffix(path, flag, suffixes, kind)
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{flag}: {p} is a folder; give a file name in it")
    folder = p.parent
    if not folder.is_dir():
        raise OutputPathError(f"{flag}: the folder {folder} does not exist; create it first or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag}: the folder {folder} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{flag}: {p} exists and is not writable")
