"""The drag settings (DragConfig's SETTINGS with a section, and the frame rate), each resettable one with a ↺
back to the current model's default."""
from __future__ import annotations

from typing import Any

import gradio as gr

from ..context import AppContext
from ..controls import BoundedSlider, OpenRadio, app_settings, control_defaults
from ..wiring import Page, bind


def control_default(ctx: AppContext, name: str, request: gr.Request) -> Any:
    """The ↺ of one control: its default for the session's model."""
    return control_defaults(ctx.model_of(request))[name]


DRAG_DEFAULTS = ("lr", "r1", "r2", "r3", "feature_block", "max_steps")  # what /drag_defaults returns, in order


def model_defaults(ctx: AppContext, names: tuple[str, ...] | list[str], request: gr.Request) -> tuple:
    """The controls `names` at their defaults for the session's model."""
    d = control_defaults(ctx.model_of(request))
    return tuple(d[n] for n in names)


def drag_defaults(ctx: AppContext, request: gr.Request):
    """Drag settings suited to this session's model (its catalog drag_defaults, else the paper's):
    lr, r1, r2, r3, feature_block, max_steps."""
    return model_defaults(ctx, DRAG_DEFAULTS, request)


def control_row(ctx: AppContext, page: Page, name: str, value: Any) -> None:
    """The control of setting `name` (into page[name]), with a ↺ that returns to the model's default. Every
    value reaches the handler unchecked by Gradio: the Setting's own check names the field."""
    c = app_settings()[name]
    with gr.Row(equal_height=True):
        if c.kind in ("float", "int"):
            page[name] = BoundedSlider(c.minimum, c.maximum, value=value, step=c.step, label=c.label,
                                       info=c.help or None, buttons=[], scale=8, elem_id=f"ctl_{name}")
        elif c.kind == "bool":
            page[name] = gr.Checkbox(value, label=c.label, info=c.help or None, elem_id=f"ctl_{name}")
        else:
            page[name] = OpenRadio(list(c.choices), value=value, label=c.label, info=c.help or None,
                                   elem_id=f"ctl_{name}")
        if not c.reset:
            return
        btn = gr.Button("↺", size="sm", scale=1, min_width=40, elem_classes=["reset-btn"], elem_id=f"reset_{name}")

    def model_default(request: gr.Request):
        return control_default(ctx, name, request)

    btn.click(model_default, None, page[name], api_visibility="private", queue=False, show_progress="hidden")


def build(ctx: AppContext, page: Page) -> None:
    start = control_defaults(ctx.default_model)
    for name, c in app_settings().items():
        if c.section == "main":
            control_row(ctx, page, name, start[name])
    defaults_btn = gr.Button("All settings: this model's defaults", size="sm")
    with gr.Accordion("Advanced", open=False):
        for name, c in app_settings().items():
            if c.section == "advanced":
                control_row(ctx, page, name, start[name])

    resettable = [n for n, c in app_settings().items() if c.reset]

    def all_defaults(request: gr.Request):
        return model_defaults(ctx, resettable, request)

    defaults_btn.click(all_defaults, None, [page[n] for n in resettable], api_visibility="private",
                       concurrency_limit=None)
    page.api("drag_defaults", bind(drag_defaults, ctx), None, [page[n] for n in DRAG_DEFAULTS], concurrency_limit=None)
