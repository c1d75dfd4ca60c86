"""Drag and the Method choice: the /drag endpoint, its progress line and frame JSON. Stop, Undo and the point
buttons sit under the image too (history.py, points.py)."""
from __future__ import annotations

import inspect
from typing import Any, Iterator

import gradio as gr

from draggan.config import DragFrame, DragInputError, parse_points, validate_points
from draggan.methods import METHODS
from draggan.sessions import stream_newest

from ..context import AppContext
from ..controls import OpenRadio, drag_config, drag_parameters
from ..views import InlineFrame
from ..wiring import Page, bind, keep_on_error
from . import history, points

DONE_TEXT = {"reached": "Reached the targets", "stopped": "Stopped", "max_steps": "Stopped at max steps",
             "predicted": "Predicted"}


def read_points(text: str, name: str) -> list[list[float]]:
    """parse_points, with a list nested too deep for the JSON parser refused in one line as well."""
    try:
        return parse_points(text, name)
    except RecursionError:
        raise DragInputError(f"{name} must be points like [[12, 30], [40, 8]]; got lists nested too deep") from None


def drag_frames(ctx: AppContext, handles: str, targets: str, values: dict[str, Any],
                request: gr.Request) -> Iterator[tuple]:
    """Every input checked (points and settings here, the method by the session against its model) before
    anything changes, then the drag's frames as (view, line, JSON)."""
    sess = ctx.session(request)
    h, t = read_points(handles, "handles"), read_points(targets, "targets")
    if not h and not t:
        h, t = sess.handles_xy, sess.targets_xy
    h, t = validate_points(h, t, sess.resolution)  # before any arithmetic on them
    cfg, method = drag_config(sess.model, values)
    asked = [[float(round(x)), float(round(y))] for x, y in h]
    frames = sess.run_drag(h, t, cfg, method)  # checks the method: nothing has changed if it is refused
    # The drag runs in its own thread and the stream shows its newest frame: encoding and sending a
    # frame never holds up the next step.
    for frame in stream_newest(frames, sess.stop):
        moved = [(i, a, b) for i, (a, b) in enumerate(zip(asked, frame.start_xy or asked)) if a != b]
        view = ctx.view(sess, frame)
        yield view if frame.done else InlineFrame(view), frame_text(frame, moved), frame_json(frame, moved)


def drag(ctx: AppContext, *args, **kwargs) -> Iterator[tuple]:
    """Drag handles to targets, streaming frames at the frame rate: handles and targets are JSON lists of
    [x, y] image pixels (both empty: the points clicked in the UI); method: draggan, straightforward, auto,
    auto-refine. Yields the view, a progress line and the frame as JSON (step, handles, targets, distances,
    mean_distance, ms_per_step, done, reason, nearest_moved). Views before the last come inline as JPEG data
    URLs ({"url": "data:image/jpeg;base64,..."}); the last view is a file (PNG)."""
    bound = drag_signature().bind(*args, **kwargs)
    bound.apply_defaults()
    values = {n: bound.arguments[n] for n in drag_parameters()}
    yield from drag_frames(ctx, bound.arguments["handles"], bound.arguments["targets"], values,
                           bound.arguments["request"])


def drag_signature(with_ctx: bool = False) -> inspect.Signature:
    """The /drag endpoint's parameters, from the settings: Gradio reads them (and finds the request) here."""
    P = inspect.Parameter
    return inspect.Signature([*([P("ctx", P.POSITIONAL_OR_KEYWORD)] if with_ctx else []),
                              P("handles", P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
                              P("targets", P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
                              *[P(n, P.POSITIONAL_OR_KEYWORD, default=None) for n in drag_parameters()],
                              P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])


drag.__annotations__ = {"handles": str, "targets": str, "request": gr.Request}
drag.__signature__ = drag_signature(with_ctx=True)


def arm_drag(ctx: AppContext, request: gr.Request) -> None:
    """Drag was pressed: a Stop from now on reaches this drag, even while it waits in Gradio's queue."""
    if ctx.has_session(request):
        ctx.session(request).arm_drag()


def frame_text(frame: DragFrame, moved) -> str:
    if frame.done:
        text = f"**{DONE_TEXT.get(frame.reason, frame.reason)}** after {frame.step} steps · " \
               f"mean distance {frame.mean_distance:.1f} px"
    else:
        text = f"Step **{frame.step}** · mean distance {frame.mean_distance:.1f} px · {frame.ms:.0f} ms/step"
    if moved:
        text += "  \nNearest moved " + ", ".join(
            f"handle {i + 1} ({a[0]:g}, {a[1]:g}) → ({b[0]:g}, {b[1]:g})" for i, a, b in moved)
    return text


def frame_json(frame: DragFrame, moved) -> dict[str, Any]:
    return {"step": frame.step, "handles": frame.handles_xy, "targets": frame.targets_xy,
            "distances": frame.distances, "mean_distance": frame.mean_distance, "ms_per_step": frame.ms,
            "done": frame.done, "reason": frame.reason,
            "nearest_moved": [{"handle": i + 1, "from": a, "to": b} for i, a, b in moved or []]}


def build(ctx: AppContext, page: Page) -> None:
    """Drag, Stop, Undo and the point buttons, under the image; the Method choice."""
    with gr.Row():
        drag_btn = gr.Button("Drag", variant="primary", elem_id="drag", scale=2)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
    with gr.Row():
        undo_btn = gr.Button("Undo drag", size="sm")
        reset_btn = gr.Button("Reset image", size="sm")
        undo_point_btn = gr.Button("Undo point", size="sm")
        clear_points_btn = gr.Button("Clear points", size="sm", elem_id="clear_points")
    page["method"] = OpenRadio([(METHODS["draggan"].label, "draggan")], value="draggan", label="Method",
                              elem_id="method")
    page["method_note"] = gr.Markdown("", elem_id="method_note")
    drag.__signature__ = drag_signature(with_ctx=True)  # the settings as they are now (a test may add one)
    handler = bind(drag, ctx)

    def wire_drag() -> None:  # once every control exists (the settings are built after this section)
        inputs = [page["handles"], page["targets"], *[page[n] for n in drag_parameters()]]
        outputs = [page["view"], page["info"], page["frame"]]
        drag_kw = dict(concurrency_id="drag", concurrency_limit=None, show_progress="minimal")
        drag_btn.click(bind(arm_drag, ctx), None, None, queue=False, api_visibility="private", show_progress="hidden") \
            .then(keep_on_error(3, 1)(handler), inputs, outputs, api_visibility="private", **drag_kw) \
            .then(**page.refresh_mask)
        page.api("drag", handler, inputs, outputs, **drag_kw)

    page.wire_later.append(wire_drag)
    history.build(ctx, page, stop_btn, undo_btn, reset_btn)
    points.build(ctx, page, undo_point_btn, clear_points_btn)
