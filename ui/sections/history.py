"""Stop (never waits behind anything), Undo drag and Reset image."""
from __future__ import annotations

import gradio as gr

from ..context import AppContext
from ..wiring import Page, bind, keep_on_error


def stop(ctx: AppContext, request: gr.Request) -> None:
    """Stop this session's drag before its next step (also one still waiting to start)."""
    if ctx.has_session(request):
        ctx.session(request).stop()


def undo(ctx: AppContext, request: gr.Request):
    """Undo the last drag (or reset)."""
    sess = ctx.session(request)
    text = "Undone." if sess.undo() else "Nothing to undo."
    return ctx.view(sess), text


def reset(ctx: AppContext, request: gr.Request):
    """Back to the generated image (undoable), keeping the points."""
    sess = ctx.session(request)
    sess.reset()
    return ctx.view(sess), "Back to the generated image (Undo drag brings the edit back)."


def build(ctx: AppContext, page: Page, stop_btn: gr.Button, undo_btn: gr.Button, reset_btn: gr.Button) -> None:
    outputs = [page["view"], page["info"]]
    stop_btn.click(bind(stop, ctx), None, None, api_name="stop", show_progress="hidden", queue=False)
    for btn, fn, name in ((undo_btn, undo, "undo"), (reset_btn, reset, "reset")):
        handler = bind(fn, ctx)
        btn.click(keep_on_error(2, 1)(handler), None, outputs, api_visibility="private", concurrency_limit=None) \
            .then(**page.refresh_mask)
        page.api(name, handler, None, outputs, concurrency_limit=None)
