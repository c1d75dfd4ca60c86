"""Clicks on the view become points; Undo point, Clear points. In order, one at a time per session."""
from __future__ import annotations

import gradio as gr

from ..context import AppContext
from ..views import view_to_image_xy
from ..wiring import Page, bind, keep_on_error


def click(ctx: AppContext, evt: gr.SelectData, request: gr.Request):
    """A click on the view: the next handle or target."""
    sess = ctx.session(request)
    sess.add_point(view_to_image_xy(getattr(evt, "index", None), sess.resolution))
    return ctx.view(sess), ctx.points_text(sess)


def undo_point(ctx: AppContext, request: gr.Request):
    sess = ctx.session(request)
    sess.undo_point()
    return ctx.view(sess), ctx.points_text(sess)


def clear_points(ctx: AppContext, request: gr.Request):
    sess = ctx.session(request)
    sess.clear_points()
    return ctx.view(sess), ctx.points_text(sess)


def build(ctx: AppContext, page: Page, undo_point_btn: gr.Button, clear_points_btn: gr.Button) -> None:
    view, outputs = page["view"], [page["view"], page["info"]]
    ordered = dict(concurrency_limit=1, concurrency_id="points", show_progress="hidden", api_visibility="private")
    view.select(keep_on_error(2, 1)(bind(click, ctx)), None, outputs, trigger_mode="multiple", **ordered)
    undo_point_btn.click(keep_on_error(2, 1)(bind(undo_point, ctx)), None, outputs, **ordered)
    clear_points_btn.click(keep_on_error(2, 1)(bind(clear_points, ctx)), None, outputs, **ordered)
