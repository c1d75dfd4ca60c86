"""Save: the image as a PNG, the last drag as a video (played in the page)."""
from __future__ import annotations

import threading
from typing import Any, AsyncIterator, Iterator

import gradio as gr
from PIL import Image

from draggan.config import DragInputError
from draggan.sessions import astream_newest

from ..context import AppContext
from ..wiring import Page, bind, keep_on_error
from .drag import waiting_text

VIDEO_FORMATS = ("mp4", "webm", "gif")
# Exports start at once: each session's one export waits for its turn in our code (Session.export_steps), in a
# thread of its own that the handler awaits, so a line of exports holds none of Gradio's worker threads and a
# second one from the same session is refused at once instead of filling Gradio's queue.
EXPORT_GROUP = dict(concurrency_limit=None, concurrency_id="export")


def save_image(ctx: AppContext, request: gr.Request) -> str:
    """The current image as a PNG at the model's resolution."""
    sess = ctx.session(request)
    ctx.check_disk(sess.workdir())
    path = sess.workdir() / f"{ctx.file_stem(sess)}.png"
    Image.fromarray(sess.image()).save(path)
    return str(path)


def export_steps(ctx: AppContext, video_format: str, overlay: bool, request: gr.Request,
                 stop: threading.Event) -> Iterator[tuple[str, Any]]:
    """The checks, then the session's export in steps (Session.export_steps): run in a thread of its own."""
    if not isinstance(video_format, str) or video_format not in VIDEO_FORMATS:
        raise DragInputError(f"video_format must be mp4, webm or gif, got {str(video_format)[:20]!r}")
    sess = ctx.session(request)
    ctx.check_disk(sess.workdir())
    path = sess.workdir() / f"{ctx.file_stem(sess)}.{video_format}"
    yield from sess.export_steps(path, overlay=bool(overlay), stop=stop)


def export_updates(ctx: AppContext, video_format: str, overlay: bool, request: gr.Request) -> AsyncIterator:
    """`export_steps` awaited on the event loop (astream_newest): waiting its turn holds no worker thread; a
    client that leaves stops it."""
    stop = threading.Event()
    return astream_newest(export_steps(ctx, video_format, overlay, request, stop), stop.set)


def rendering_text(done: int, total: int) -> str:
    return f"Rendering the video: frame {done} of {total}"


async def export_video(ctx: AppContext, video_format: str, overlay: bool, request: gr.Request,
                       progress=gr.Progress()) -> str:
    """The last drag as a video, every step of it: video_format 'mp4' (H.264), 'webm' (VP9) or 'gif'; overlay
    draws the points. One export renders at a time: while this one waits, its progress says its place in line
    and a rough wait ('Waiting for the device: 2nd in line, about 20 s'), then the frames rendered."""
    written = None
    async for kind, value in export_updates(ctx, video_format, overlay, request):
        if kind == "waiting":
            progress(None, desc=waiting_text(value, bold=""))
        elif kind == "rendering":
            progress(value, desc="Rendering the video", unit="frames")
        else:
            written = value
    return str(written)


async def export_and_play(ctx: AppContext, video_format: str, overlay: bool, request: gr.Request):
    """The Export button: its place in line and the frames rendered beside it, then the file (and the video
    played in the page)."""
    async for kind, value in export_updates(ctx, video_format, overlay, request):
        if kind == "waiting":
            yield gr.skip(), gr.skip(), waiting_text(value)
        elif kind == "rendering":
            yield gr.skip(), gr.skip(), rendering_text(*value)
        else:
            playable = video_format in ("mp4", "webm")
            yield str(value), gr.Video(value=str(value) if playable else None, visible=playable), ""


def build(ctx: AppContext, page: Page) -> None:
    with gr.Accordion("Save", open=False):
        with gr.Row():
            save_btn = gr.Button("Save image (PNG)", size="sm")
            export_btn = gr.Button("Export drag as video", size="sm", elem_id="export_video")
        with gr.Row():
            video_format = gr.Radio(list(VIDEO_FORMATS), value="mp4", label="Video format")
            overlay = gr.Checkbox(True, label="Draw points in the video")
        note = gr.Markdown("", elem_id="save_note")  # an export's place in line, its frames, or why it was refused
        download = gr.File(label="Download", interactive=False, elem_id="download")
        # The exported MP4/WebM, played in the page (a GIF shows in Download only).
        played = gr.Video(label="The drag", interactive=False, visible=False, elem_id="drag_video", buttons=[])

    save = bind(save_image, ctx)
    save_btn.click(keep_on_error(1, None)(save), None, download, api_visibility="private", concurrency_limit=None)
    page.api("save_image", save, None, download, concurrency_limit=None)
    # Exports wait on their own (EXPORT_GROUP), so a line of them never delays anyone's Generate or Undo.
    export_btn.click(keep_on_error(3, 2)(bind(export_and_play, ctx)), [video_format, overlay],
                     [download, played, note], api_visibility="private", show_progress="minimal", **EXPORT_GROUP)
    page.api("export_video", bind(export_video, ctx), [video_format, overlay], download, **EXPORT_GROUP)
