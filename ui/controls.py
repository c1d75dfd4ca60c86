"""The drag's controls: one mapping, DRAG_CONTROLS, drives the sliders, their resets, the /drag endpoint's
parameters and the DragConfig; and the value checks that name the field ("Step size must be between 0.0005
and 0.1, got 5")."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import gradio as gr

from draggan.config import APP_FRAME_RATE, APP_FRAME_SHARE, DragConfig, DragInputError
from draggan.methods import LABELS, METHOD_NAMES

FRAME_RATE, FRAME_SHARE = APP_FRAME_RATE, APP_FRAME_SHARE  # how a drag's frames are paced (draggan/config.py)


@dataclasses.dataclass(frozen=True)
class Control:
    """One drag setting as the UI shows it and the API takes it."""
    label: str
    kind: str                        # 'slider', 'checkbox', 'radio'
    section: str                     # 'main', 'advanced', 'mask', 'method'
    minimum: float = 0
    maximum: float = 1
    step: float = 1
    choices: tuple = ()
    info: str | None = None
    reset: bool = False              # a ↺ button that returns to the current model's default
    whole: bool = False              # a whole number

    @property
    def field(self) -> str:
        """The name messages use: the label up to its first ':' or '(' ("R1", "Step size", "λ")."""
        return self.label.split(":")[0].split("(")[0].strip()

    def check(self, value: Any) -> Any:
        """The value from the UI or the API, within the control's bounds, or a DragInputError naming the field."""
        if self.kind == "checkbox":
            return bool(value)
        if self.kind == "radio":
            allowed = [c[1] if isinstance(c, tuple) else c for c in self.choices]
            if value not in allowed:
                raise DragInputError(f"{self.field} must be one of {', '.join(map(str, allowed))}, "
                                     f"got {str(value)[:40]!r}")
            return value
        x = number(value)
        if not self.minimum <= x <= self.maximum:
            got = f"{x:g}" if math.isfinite(x) else repr(str(value)[:40])
            raise DragInputError(f"{self.field} must be between {self.minimum:g} and {self.maximum:g}, got {got}")
        if self.whole:
            if not x.is_integer():
                raise DragInputError(f"{self.field} must be a whole number, got {x:g}")
            return int(x)
        return x


DRAG_CONTROLS: dict[str, Control] = {  # order = the /drag endpoint's parameters after handles, targets
    "lr": Control("Step size", "slider", "main", 0.0005, 0.1, 0.0005, reset=True),
    "r1": Control("R1: motion radius", "slider", "main", 1, 128, 1, info="Radii in 512-px units", reset=True),
    "r2": Control("R2: tracking radius", "slider", "main", 1, 256, 1, reset=True),
    "r3": Control("R3: Nearest search radius", "slider", "main", 1, 256, 1, reset=True),
    "nearest": Control("Nearest: start each handle on the nearest edge", "checkbox", "main"),
    "max_steps": Control("Max steps", "slider", "main", 1, 2000, 1, reset=True, whole=True),
    "lambda_mask": Control("λ: how strongly the unpainted area is kept fixed", "slider", "mask", 0, 100, 0.5,
                           reset=True),
    "feature_block": Control("Feature block", "slider", "advanced", 1, 9, 1,
                             info="Synthesis block whose features drive the drag", reset=True, whole=True),
    "rows": Control("W+ rows optimized", "slider", "advanced", 1, 18, 1, reset=True, whole=True),
    "frame_every": Control("Show at most every n-th step", "slider", "advanced", 1, 50, 1, whole=True),
    "tracking": Control("Point tracking distance", "radio", "advanced",
                        choices=(("L1 (paper)", "l1"), ("L2 (official code)", "l2"))),
    "method": Control("Method", "radio", "method", choices=tuple((LABELS[m], m) for m in METHOD_NAMES)),
    "frame_rate": Control("Frames per second shown (0: every step)", "slider", "advanced", 0, 60, 1),
}
UI_METHODS = ("draggan", "auto", "auto-refine")  # the app's Method choice; the others are for benchmarks
APP_ONLY = ("method", "frame_rate")               # controls of the app, not DragConfig fields


def control_defaults(model: str | None) -> dict[str, Any]:
    """Every control's value for `model`: DragConfig.for_model's, plus the method and frame rate."""
    cfg = DragConfig.for_model(model)
    return {**{k: getattr(cfg, k) for k in DRAG_CONTROLS if k not in APP_ONLY}, "method": "draggan",
            "frame_rate": FRAME_RATE}


def control_value(name: str, value: Any) -> Any:
    """DRAG_CONTROLS[name].check(value)."""
    return DRAG_CONTROLS[name].check(value)


def drag_config(model: str, values: dict[str, Any]) -> tuple[DragConfig, str]:
    """The control values of a /drag call -> (DragConfig for the model, method). Each value checked here;
    None: the model's default. The method is checked by the caller, which knows the model's predictor."""
    values = dict(values)
    method = values.pop("method", None) or "draggan"
    if not isinstance(method, str):
        raise DragInputError(f"Method must be a method's name, got {str(method)[:40]!r}")
    rate = values.pop("frame_rate", None)
    rate = FRAME_RATE if rate is None else control_value("frame_rate", rate)
    given = {k: control_value(k, v) for k, v in values.items() if v is not None}
    return DragConfig.for_model(model, frame_interval_s=1 / rate if rate else 0.0,
                                frame_share=FRAME_SHARE if rate else 0.0, **given), method


def number(value: Any) -> float:
    """A float from whatever arrived (NaN for what is not a number: every range check then refuses it)."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def check_number(value: Any, name: str, lo: float, hi: float) -> float:
    """A number from lo to hi, or a DragInputError naming the field."""
    x = number(value)
    if not lo <= x <= hi:
        raise DragInputError(f"{name} must be a number from {lo:g} to {hi:g}, got {str(value)[:40]!r}")
    return x


def check_whole(value: Any, name: str, lo: float = 0, hi: float = 1e6) -> int:
    """A whole number from lo to hi, or a DragInputError naming the field."""
    x = check_number(value, name, lo, hi)
    if not x.is_integer():
        raise DragInputError(f"{name} must be a whole number, got {str(value)[:40]!r}")
    return int(x)


class BoundedSlider(gr.Slider):
    """A gr.Slider whose value reaches the handler unchecked, for sliders whose handler checks the bounds
    itself and names the field (Gradio's own check says only "Value 5.0 is greater than maximum value 0.1",
    before our code runs, and in the UI it would bypass keep_on_error)."""

    def get_block_name(self) -> str:
        return "slider"  # the browser shows it as Gradio's slider

    def preprocess(self, payload: Any) -> Any:
        return payload


class OpenRadio(gr.Radio):
    """A gr.Radio whose value reaches the handler unchecked: the Method radio, whose choices follow the
    session's model in the page while Gradio would check API calls against the first model's choices (and
    refuse "auto" on a model that has a predictor); the handler checks the method against the model."""

    def get_block_name(self) -> str:
        return "radio"

    def preprocess(self, payload: Any) -> Any:
        return payload
