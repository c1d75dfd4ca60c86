"""The Mask tab: paint the area the drag may change; show or clear the mask; λ."""
from __future__ import annotations

from typing import Any

import gradio as gr

from draggan.draw import enlarge
from draggan.public import MAX_MASK_PX, image_size
from stylegan2.errors import UserError

from draggan.config import DragInputError

from ..context import AppContext
from ..controls import app_settings, control_defaults
from ..views import MAX_MASK_LAYERS, VIEW_MIN_PX, cached_png, mask_from_layers, mask_layer, view_scale
from ..wiring import Page, bind, keep_on_error
from .settings import control_row


def check_layers(layers: list) -> None:
    """Refuse a mask editor's layers by their count and each one's header (its size), before any is decoded:
    8 layers of 79 MP, decoded first and measured after, cost 2.9 GB in one request (issue 26 item 3)."""
    if len(layers) > MAX_MASK_LAYERS:
        raise DragInputError(f"A mask has at most {MAX_MASK_LAYERS} layers, got {len(layers)}")
    for layer in layers:
        source = layer
        if not isinstance(layer, (bytes, bytearray, memoryview)):
            source = getattr(layer, "path", None) or getattr(layer, "url", None)
        if source is not None:
            image_size(source, MAX_MASK_PX, "A mask layer")

from gradio.events import Dependency

class MaskEditor(gr.ImageEditor):
    """Gradio's image editor, whose layers are checked from their headers before they are decoded, and whose
    background and composite (the app's own picture, and the two combined) are never decoded: only the layers
    make the mask. A refused value reaches the handler as {"refused": message}, to be shown beside the image."""

    def get_block_name(self) -> str:
        return "imageeditor"

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        if payload.id is not None:  # sent in pieces beforehand (Gradio's blob storage)
            stored = self.blob_storage.pop(payload.id, None)
            layers = list(stored.layers or []) if stored is not None else []
        else:
            layers = list(payload.layers or [])
        try:
            check_layers(layers)
        except UserError as e:
            return {"background": None, "layers": [], "composite": None, "refused": str(e)}
        decoded = [self.convert_and_format_image(layer) for layer in layers]
        return {"background": None, "layers": [x for x in decoded if x is not None], "composite": None}
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


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
    editor = page["mask_editor"] = MaskEditor(
        type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, format="png",
        brush=gr.Brush(colors=[("rgb(34, 197, 94)", 0.5)], color_mode="fixed"),
        label="Paint the area the drag may change", canvas_size=(VIEW_MIN_PX * 2, VIEW_MIN_PX * 2), height=520)
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