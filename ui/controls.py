"""The drag's controls, read from DragConfig's SETTINGS (one set of bounds for the UI, the API, the command
line and DragConfig.validate): the sliders, their resets, the /drag endpoint's parameters and the value checks
that name the field ("Step size must be between 0.0005 and 0.1, got 5"). Two controls are the app's own: the
Method (from the method registry) and the frame rate."""
from __future__ import annotations

from typing import Any

import gradio as gr

from draggan.config import APP_FRAME_RATE, APP_FRAME_SHARE, SETTINGS, DragConfig, DragInputError, Setting

FRAME_RATE, FRAME_SHARE = APP_FRAME_RATE, APP_FRAME_SHARE  # how a drag's frames are paced (draggan/config.py)
SECTIONS = ("main", "advanced", "mask")
FRAME_RATE_SETTING = Setting("frame_rate", "Frames per second shown (0: every step)", "float", 0, 60, 1,
                             section="advanced", help="0: every step; the drag never waits for the browser")
APP_ONLY = ("method", "frame_rate")               # the app's own controls, after the settings


def app_settings() -> dict[str, Setting]:
    """The settings the app shows (those with a section), in DragConfig's order, then the frame rate."""
    return {**{n: s for n, s in SETTINGS.items() if s.section in SECTIONS}, "frame_rate": FRAME_RATE_SETTING}


# The /drag endpoint's parameters after handles and targets, in the order API clients pass them by position.
# A setting given a section later joins the page and the endpoint after these (positions never shift).
API_ORDER = ("lr", "r1", "r2", "r3", "nearest", "max_steps", "lambda_mask", "feature_block", "rows", "frame_every",
             "tracking", "method", "frame_rate", "mask_term", "hold")


def drag_parameters() -> list[str]:
    """The /drag endpoint's parameters after handles and targets: the settings the app shows (API_ORDER first,
    then any other setting with a section), the method and the frame rate."""
    shown = [n for n in app_settings() if n != "frame_rate"]
    return [n for n in API_ORDER if n in shown or n in APP_ONLY] + [n for n in shown if n not in API_ORDER]


def control_defaults(model: str | None) -> dict[str, Any]:
    """Every control's value for `model`: DragConfig.for_model's, plus the method and frame rate."""
    cfg = DragConfig.for_model(model)
    return {**{k: getattr(cfg, k) for k in app_settings() if k != "frame_rate"}, "method": "draggan",
            "frame_rate": FRAME_RATE}


def drag_config(model: str, values: dict[str, Any]) -> tuple[DragConfig, str]:
    """The control values of a /drag call -> (DragConfig for the model, method). Each value checked here
    against its Setting; None: the model's default. The session checks the method against its model."""
    values = dict(values)
    method = values.pop("method", None) or "draggan"
    rate = values.pop("frame_rate", None)
    rate = FRAME_RATE if rate is None else FRAME_RATE_SETTING.check(rate)
    given = {k: SETTINGS[k].check(v) for k, v in values.items() if v is not None}
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
