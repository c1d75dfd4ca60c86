"""The drag settings as command-line flags, made in one loop from `draggan.config.SETTINGS`, and --method
from the method registry (`draggan.methods.METHODS`): a new setting or method shows in every command that
drags (drag, quality, experiment) without touching them.

A setting `name` becomes `--name-with-dashes` (max_steps also `--steps`), with the setting's help, its
bounds and default in the help text, and its value checked by `Setting.check` while the flags are parsed:
a bad value is one line, exit status 2, before anything loads. Every flag defaults to None, "not given":
`DragConfig.for_model` then takes the model's catalog `drag_defaults`, else DragConfig's own.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable

# Flags that keep the names they had before SETTINGS existed (the first is the one the help shows).
FLAG_NAMES = {"max_steps": ("--steps", "--max-steps")}


def flags_of(name: str) -> tuple[str, ...]:
    return FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))


def setting_type(setting, flag: str) -> Callable[[str], Any]:
    """argparse type for a number setting: the text as a number, then `setting.check` (bounds, whole numbers)."""
    from draggan.config import DragInputError

    def parse(text: str) -> Any:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        try:
            return setting.check(value, flag)
        except DragInputError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag} ")) from None
    parse.__name__ = setting.kind
    return parse


def _range(setting) -> str:
    if setting.kind == "choice":
        return ""
    if setting.kind == "bool":
        return "on or off; "
    hi = f"below {setting.maximum:g}" if setting.below_maximum else f"to {setting.maximum:g}"
    return f"{setting.minimum:g} {hi}; "


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_help(setting, default_text: str) -> str:
    return f"{setting.help} ({_range(setting)}default {default_text})".replace("%", "%%")


def add_setting_arguments(parser: argparse.ArgumentParser, exclude: Iterable[str] = (),
                          defaults: dict[str, Any] | None = None) -> list[str]:
    """One flag per drag setting of SETTINGS but those in `exclude`; returns the settings added (their dests).

    defaults: a command's own defaults for some settings (e.g. experiment's 300 steps); the others are None.
    """
    from draggan.config import SETTINGS, DragConfig

    defaults = defaults or {}
    base = DragConfig()
    group = parser.add_argument_group("drag settings", "each from draggan.config.SETTINGS; radii in 512-px units")
    added = []
    for name, setting in SETTINGS.items():
        if name in exclude:
            continue
        flags = flags_of(name)
        default = defaults.get(name)
        if default is not None:
            text = _show(default)
        else:
            text = f"the model's, else {_show(getattr(base, name))}" if setting.reset else _show(getattr(base, name))
        options: dict[str, Any] = dict(dest=name, default=default, help=setting_help(setting, text))
        if setting.kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
        elif setting.kind == "choice":
            options["choices"] = [value for _, value in setting.choices]
        else:
            options.update(type=setting_type(setting, flags[0]), metavar="N" if setting.kind == "int" else "X")
        group.add_argument(*flags, **options)
        added.append(name)
    parser.set_defaults(_settings=added)
    return added


def setting_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings whose flags were given (or that the command defaults), by DragConfig field name."""
    return {name: getattr(args, name) for name in getattr(args, "_settings", ()) if getattr(args, name) is not None}


def method_help() -> str:
    """Every registered method: name = label, and which need the model's Auto DragGAN predictor."""
    from draggan.methods import METHODS

    parts = [f"{name} = {spec.label}" + (" (needs the model's Auto DragGAN predictor)" if spec.learned else "")
             for name, spec in METHODS.items()]
    return "; ".join(parts).replace("%", "%%")


def add_method_argument(parser: argparse.ArgumentParser, default: str = "draggan") -> None:
    """--method, its choices the registered methods (read when the parser is built)."""
    from draggan.methods import method_names

    parser.add_argument("--method", choices=method_names(), default=default,
                        help=f"drag method (default {default}): {method_help()}")
