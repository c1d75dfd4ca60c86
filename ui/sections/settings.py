"""The drag settings from DRAG_CONTROLS, each with a ↺ reset to the current model's default."""
from __future__ import annotations

from typing import Any

import gradio as gr

from draggan.config import DragConfig

from ..context import AppContext
from ..controls import DRAG_CONTROLS, BoundedSlider, control_defaults
from ..wiring import Page


def control_default(ctx: AppContext, name: str, request: gr.Request) -> Any:
    """The ↺ of one control: its default for the session's model."""
    return control_defaults(ctx.model_of(request))[name]


def drag_defaults(ctx: AppContext, request: gr.Request):
    """Drag settings suited to this session's model (its catalog drag_defaults, else the paper's):
    lr, r1, r2, r3, feature_block, max_steps."""
    d = control_defaults(ctx.model_of(request))
    return tuple(d[n] for n in DragConfig.MODEL_KEYS)


def control_row(ctx: AppContext, page: Page, name: str, value: Any) -> None:
    """The component of DRAG_CONTROLS[name] (into page[name]), with a ↺ that returns to the model's default."""
    c = DRAG_CONTROLS[name]
    with gr.Row(equal_height=True):
        if c.kind == "slider":
            page[name] = BoundedSlider(c.minimum, c.maximum, value=value, step=c.step, label=c.label, info=c.info,
                                       buttons=[], scale=8, elem_id=f"ctl_{name}")
        elif c.kind == "checkbox":
            page[name] = gr.Checkbox(value, label=c.label, elem_id=f"ctl_{name}")
        else:
            page[name] = gr.Radio(list(c.choices), value=value, label=c.label, elem_id=f"ctl_{name}")
        if not c.reset:
            return
        btn = gr.Button("↺", size="sm", scale=1, min_width=40, elem_classes=["reset-btn"], elem_id=f"reset_{name}")

    def model_default(request: gr.Request):
        return control_default(ctx, name, request)

    btn.click(model_default, None, page[name], api_visibility="private", queue=False, show_progress="hidden")


def build(ctx: AppContext, page: Page) -> None:
    start = control_defaults(ctx.default_model)
    for name, c in DRAG_CONTROLS.items():
        if c.section == "main":
            control_row(ctx, page, name, start[name])
    defaults_btn = gr.Button("All settings: this model's defaults", size="sm")
    with gr.Accordion("Advanced", open=False):
        for name, c in DRAG_CONTROLS.items():
            if c.section == "advanced":
                control_row(ctx, page, name, start[name])

    def model_defaults(request: gr.Request):
        return drag_defaults(ctx, request)
    model_defaults.__doc__ = drag_defaults.__doc__

    defaults_btn.click(model_defaults, None, [page[n] for n in DragConfig.MODEL_KEYS], api_name="drag_defaults",
                       concurrency_limit=None)
