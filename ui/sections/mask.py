"""The Mask tab: paint the area the drag may change; show or clear the mask; λ."""
from __future__ import annotations

from typing import Any

import gradio as gr

from draggan.draw import enlarge

from draggan.config import DragInputError

from ..context import AppContext
from ..controls import app_settings, control_defaults
from ..views import VIEW_MIN_PX, MaskEditor, cached_png, mask_from_layers, mask_layer, view_scale
from ..wiring import Page, bind, keep_on_error
from .settings import control_row


def editor_value(ctx: AppContext, cache: str, request: gr.Request):
    """The mask editor's content: the plain image (enlarged) with the current mask as its layer."""
    if not ctx.has_session(request):
        return gr.skip()
    sess = ctx.session(request)
    res = sess.resolution
    layers = [cached_png(mask_layer(sess.editable, res), cache)] if sess.editable is not None else []
    return {"background": cached_png(enlarge(sess.image(), view_scale(res)), cache), "layers": layers,
            "composite": None}


def apply_mask(ctx: AppContext, editor: dict | None, request: gr.Request):
    """What was painted becomes the session's mask; the view shows it. The line under the image is left as it
    is: the editor also reports its content after the app itself refreshed it (after a drag, Undo, Reset),
    and that must not replace the drag's result, "Undone." or "Stopped..." with the points' hint."""
    sess = ctx.session(request)
    if isinstance(editor, dict) and editor.get("refused"):
        raise DragInputError(editor["refused"])
    layers = editor.get("layers") if isinstance(editor, dict) else None
    sess.set_mask(mask_from_layers(layers, sess.resolution))
    return ctx.view(sess), gr.skip()


def clear_mask(ctx: AppContext, cache: str, request: gr.Request):
    sess = ctx.session(request)
    sess.set_mask(None)
    return ctx.view(sess), editor_value(ctx, cache, request)


def set_show_mask(ctx: AppContext, show: bool, request: gr.Request):
    sess = ctx.session(request)
    sess.show_mask = bool(show)
    return ctx.view(sess)


def build(ctx: AppContext, page: Page, mask_tab: Any) -> None:
    # The label above the editor, not on it: on a phone the editor's own toolbar covered its label.
    gr.Markdown("Paint the area the drag may change; the rest stays fixed.", elem_id="mask_label")
    editor = page["mask_editor"] = MaskEditor(
        type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, format="png",
        brush=gr.Brush(colors=[("rgb(34, 197, 94)", 0.5)], color_mode="fixed"),
        label="Paint the area the drag may change", show_label=False, canvas_size=(VIEW_MIN_PX * 2, VIEW_MIN_PX * 2),
        height=520)
    with gr.Row():
        show_mask = gr.Checkbox(True, label="Show the mask on the image")
        clear_mask_btn = gr.Button("Clear mask", size="sm")
    start = control_defaults(ctx.default_model)
    for name, setting in app_settings().items():  # λ: the model's
        if setting.section == "mask":
            control_row(ctx, page, name, start[name])
    private = dict(api_visibility="private", show_progress="hidden")
    cache = editor.GRADIO_CACHE  # the same picture as the view: see cached_png

    def refresh(request: gr.Request):
        return editor_value(ctx, cache, request)

    def clear(request: gr.Request):
        return clear_mask(ctx, cache, request)

    page.refresh_mask = dict(fn=refresh, inputs=None, outputs=editor, concurrency_limit=None, **private)
    mask_tab.select(**page.refresh_mask)
    editor.input(keep_on_error(2, 1)(bind(apply_mask, ctx)), editor, [page["view"], page["info"]],
                 trigger_mode="always_last", concurrency_limit=1, concurrency_id="points", **private)
    clear_mask_btn.click(keep_on_error(2, None)(clear), None, [page["view"], editor],
                         concurrency_limit=1, concurrency_id="points", **private)
    show_mask.change(keep_on_error(1, None)(bind(set_show_mask, ctx)), show_mask, page["view"],
                     concurrency_limit=None, **private)
