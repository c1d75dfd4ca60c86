"""Clicks on the view become points; Undo point, Clear points. Applied in the order the person made them.

The page numbers each points event as it fires (`NEXT_NUMBER`, the event's `js`, fills the hidden `order`
input) and the session applies them in that order (`ui.ordering.InOrder`), whatever order their requests
arrive in. The reply of each event shows the points after everything applied so far."""
from __future__ import annotations

import math
from typing import Any, Callable

import gradio as gr

from ..context import AppContext
from ..views import view_to_image_xy
from ..wiring import NOTICES, Page, bind, keep_on_error

# The page's count of its points events, read at the moment the event fires (one count per page load, as the
# session is one per page load).
NEXT_NUMBER = "(order) => (window.__dragganPointsOrder = (window.__dragganPointsOrder || 0) + 1)"


def event_number(order: Any) -> int | None:
    """The page's number for an event; None (apply at once) when it has none or it is not a count."""
    if isinstance(order, bool) or not isinstance(order, (int, float)) or not math.isfinite(order):
        return None
    return int(order) if order >= 1 and order == int(order) else None


def in_order(ctx: AppContext, request: gr.Request, order: Any, change: Callable[[Any], object]):
    """Apply change(session) in its turn, then show the session as it is now. When every change applied now
    was refused, the refusal is raised (the image stays as it was); when only some were, the hint says why."""
    def step() -> None:
        change(ctx.session(request))
    outcomes = ctx.points_order.apply(request.session_hash, event_number(order), step)
    if not outcomes:  # it waits for an earlier event, whose answer will show it: this one's would be stale and
        return gr.skip(), gr.skip()  # could reach the page after that one (a loaded server, two connections)
    refusals = [e for e in outcomes if e is not None]
    if refusals and len(refusals) == len(outcomes):
        raise refusals[-1]
    sess = ctx.session(request)
    if not refusals:
        return ctx.view(sess), ctx.points_text(sess)
    message = str(refusals[-1])
    gr.Warning(message)
    NOTICES.note(request, message)
    return ctx.view(sess), f"⚠️ {message}"


def click(ctx: AppContext, evt: gr.SelectData, request: gr.Request, order: float | None = None):
    """A click on the view: the next handle or target."""
    index = getattr(evt, "index", None)
    return in_order(ctx, request, order, lambda sess: sess.add_point(view_to_image_xy(index, sess.resolution)))


def undo_point(ctx: AppContext, request: gr.Request, order: float | None = None):
    return in_order(ctx, request, order, lambda sess: sess.undo_point())


def clear_points(ctx: AppContext, request: gr.Request, order: float | None = None):
    return in_order(ctx, request, order, lambda sess: sess.clear_points())


def build(ctx: AppContext, page: Page, undo_point_btn: gr.Button, clear_points_btn: gr.Button) -> None:
    view, outputs = page["view"], [page["view"], page["info"]]
    order = gr.Number(None, visible=False, precision=0, label="order")  # filled by NEXT_NUMBER as the event fires
    ordered = dict(concurrency_limit=1, concurrency_id="points", show_progress="hidden", api_visibility="private",
                   js=NEXT_NUMBER)
    view.select(keep_on_error(2, 1)(bind(click, ctx)), order, outputs, trigger_mode="multiple", **ordered)
    undo_point_btn.click(keep_on_error(2, 1)(bind(undo_point, ctx)), order, outputs, **ordered)
    clear_points_btn.click(keep_on_error(2, 1)(bind(clear_points, ctx)), order, outputs, **ordered)
