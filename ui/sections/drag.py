"""Drag and the Method choice: the /drag endpoint, its progress line and frame JSON. Stop, Undo and the point
buttons sit under the image too (history.py, points.py)."""
from __future__ import annotations

import inspect
from typing import Any, Iterator

import gradio as gr

from draggan.config import DragFrame, parse_points, validate_points
from draggan.methods import METHODS
from draggan.sessions import stream_newest

from ..context import AppContext
from ..controls import OpenRadio, drag_config, drag_parameters
from ..views import InlineFrame
from ..wiring import NOTICES, Page, bind, keep_on_error
from . import history, points

DONE_TEXT = {"reached": "Reached the targets", "stopped": "Stopped", "max_steps": "Stopped at max steps",
             "predicted": "Predicted", "time_limit": "Stopped at the time limit"}
AFTER_TEXT = {"time_limit": "A drag may run for a limited time here: press **Drag** to continue from where it stopped."}


def drag_frames(ctx: AppContext, handles: str, targets: str, values: dict[str, Any],
                request: gr.Request) -> Iterator[tuple]:
    """Every input checked (points and settings here, the method by the session against its model) before
    anything changes, then the drag's frames as (view, line, JSON)."""
    sess = ctx.session(request)
    h, t = parse_points(handles, "handles"), parse_points(targets, "targets")
    if not h and not t:
        h, t = sess.handles_xy, sess.targets_xy
    h, t = validate_points(h, t, sess.resolution)  # before any arithmetic on them
    cfg, method = drag_config(sess.model, values)
    asked = [[float(round(x)), float(round(y))] for x, y in h]
    # Checks the method (nothing has changed if it is refused); reports its place while it waits for the device.
    frames = sess.run_drag(h, t, cfg, method, report_wait=True)
    # The drag runs in its own thread and the stream shows its newest frame: encoding and sending a
    # frame never holds up the next step.
    NOTICES.clear(request)
    for frame in stream_newest(frames, sess.stop):
        # Something refused meanwhile ("Wait for the drag to finish ...") stays in the line until the drag ends.
        notice = "" if frame.done or not NOTICES.get(request) else f"  \n⚠️ {NOTICES.get(request)}"
        if frame.reason == "waiting":  # in line for the device: the image stays as it is
            yield gr.skip(), waiting_text(frame.queue) + notice, waiting_json(frame)
            continue
        moved = [(i, a, b) for i, (a, b) in enumerate(zip(asked, frame.start_xy or asked)) if a != b]
        view = ctx.view(sess, frame)
        yield view if frame.done else InlineFrame(view), frame_text(frame, moved) + notice, frame_json(frame, moved)


def drag(ctx: AppContext, *args, **kwargs) -> Iterator[tuple]:
    """Drag handles to targets, streaming frames at the frame rate: handles and targets are JSON lists of
    [x, y] image pixels (both empty: the points clicked in the UI); method: draggan, straightforward, auto,
    auto-refine. Yields the view, a progress line and the frame as JSON (step, handles, targets, distances,
    mean_distance, ms_per_step, done, reason, nearest_moved). While the drag waits for the device, its frames
    have reason 'waiting', no view (the image is left as it is) and queue {place: 1 = next, seconds: a rough wait
    or null}. Views before the last come inline as JPEG data
    URLs ({"url": "data:image/jpeg;base64,..."}); the last view is a file (PNG)."""
    handles, targets, values, request = drag_arguments(args, kwargs)
    yield from drag_frames(ctx, handles, targets, values, request)


def refine(ctx: AppContext, *args, **kwargs) -> Iterator[tuple]:
    """Continue a drag that Auto ended short: the optimizer (method draggan) from where it stopped, towards the
    session's targets; the other settings as for /drag."""
    _, _, values, request = drag_arguments(args, kwargs)
    yield from drag_frames(ctx, "", "", {**values, "method": "draggan"}, request)


def drag_arguments(args: tuple, kwargs: dict) -> tuple[str, str, dict[str, Any], Any]:
    """/drag's arguments -> (handles, targets, the settings by name, the request)."""
    bound = drag_signature().bind(*args, **kwargs)
    bound.apply_defaults()
    values = {n: bound.arguments[n] for n in drag_parameters()}
    return bound.arguments["handles"], bound.arguments["targets"], values, bound.arguments["request"]


def drag_signature(with_ctx: bool = False) -> inspect.Signature:
    """The /drag endpoint's parameters, from the settings: Gradio reads them (and finds the request) here."""
    P = inspect.Parameter
    return inspect.Signature([*([P("ctx", P.POSITIONAL_OR_KEYWORD)] if with_ctx else []),
                              P("handles", P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
                              P("targets", P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
                              *[P(n, P.POSITIONAL_OR_KEYWORD, default=None) for n in drag_parameters()],
                              P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])


for _fn in (drag, refine):
    _fn.__annotations__ = {"handles": str, "targets": str, "request": gr.Request}
    _fn.__signature__ = drag_signature(with_ctx=True)


def arm_drag(ctx: AppContext, request: gr.Request) -> None:
    """Drag was pressed: a Stop from now on reaches this drag, even while it waits in Gradio's queue."""
    if ctx.has_session(request):
        ctx.session(request).arm_drag()


def hide() -> gr.Button:
    return gr.Button(visible=False)


def show_refine(frame: dict | None) -> gr.Button:
    """Refine is offered only after a drag that Auto ended short."""
    return gr.Button(visible=isinstance(frame, dict) and frame.get("reason") == "short")


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def waiting_text(queue: tuple[int, float | None] | None, bold: str = "**") -> str:
    """'Waiting for the device: 2nd in line, about 20 s' (no estimate: '... 2nd in line'); in Markdown, unless
    bold is "" (plain text: a progress line)."""
    place, seconds = queue or (1, None)
    text = f"⏳ Waiting for the device: {bold}{ordinal(place)}{bold} in line"
    return text + (f", about {max(1, round(seconds))} s" if seconds is not None else "")


def waiting_json(frame: DragFrame) -> dict[str, Any]:
    place, seconds = frame.queue or (1, None)
    return {"step": 0, "handles": frame.handles_xy, "targets": frame.targets_xy, "distances": [],
            "mean_distance": None, "ms_per_step": 0.0, "done": False, "reason": "waiting", "nearest_moved": [],
            "queue": {"place": place, "seconds": seconds}}


def done_text(frame: DragFrame) -> str:
    if frame.reason == "short":
        return (f"**Predicted**, but a handle stopped {max(frame.distances, default=0.0):.1f} px short: press "
                f"**Refine** to continue with the optimizer  \n{frame.step} steps · mean distance "
                f"{frame.mean_distance:.1f} px")
    text = f"**{DONE_TEXT.get(frame.reason, frame.reason)}** after {frame.step} steps · " \
           f"mean distance {frame.mean_distance:.1f} px"
    return text + (f"  \n{AFTER_TEXT[frame.reason]}" if frame.reason in AFTER_TEXT else "")


def frame_text(frame: DragFrame, moved) -> str:
    if frame.done:
        text = done_text(frame)
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
    # Offered only after Auto stopped short: continues with the optimizer from there.
    refine_btn = gr.Button("Refine", variant="primary", visible=False, elem_id="refine")
    with gr.Row():
        undo_btn = gr.Button("Undo drag", size="sm")
        reset_btn = gr.Button("Reset image", size="sm")
        undo_point_btn = gr.Button("Undo point", size="sm")
        clear_points_btn = gr.Button("Clear points", size="sm", elem_id="clear_points")
    page["method"] = OpenRadio([(METHODS["draggan"].label, "draggan")], value="draggan", label="Method",
                              elem_id="method")
    page["method_note"] = gr.Markdown("", elem_id="method_note")
    for fn in (drag, refine):
        fn.__signature__ = drag_signature(with_ctx=True)  # the settings as they are now (a test may add one)
    handler = bind(drag, ctx)

    def wire_drag() -> None:  # once every control exists (the settings are built after this section)
        inputs = [page["handles"], page["targets"], *[page[n] for n in drag_parameters()]]
        outputs = [page["view"], page["info"], page["frame"]]
        drag_kw = dict(concurrency_id="drag", concurrency_limit=None, show_progress="minimal")
        quick = dict(queue=False, api_visibility="private", show_progress="hidden")
        for btn, fn in ((drag_btn, handler), (refine_btn, bind(refine, ctx))):
            btn.click(bind(arm_drag, ctx), None, None, **quick).then(hide, None, refine_btn, **quick) \
                .then(keep_on_error(3, 1)(fn), inputs, outputs, api_visibility="private", **drag_kw) \
                .then(show_refine, page["frame"], refine_btn, **quick).then(**page.refresh_mask)
        for event in page.new_image_events:
            event.then(hide, None, refine_btn, **quick)
        page.api("drag", handler, inputs, outputs, **drag_kw)

    page.wire_later.append(wire_drag)
    history.build(ctx, page, stop_btn, undo_btn, reset_btn)
    points.build(ctx, page, undo_point_btn, clear_points_btn)
