"""Save: the image as a PNG, the last drag as a video (played in the page)."""
from __future__ import annotations

import gradio as gr
from PIL import Image

from draggan.config import DragInputError

from ..context import AppContext
from ..wiring import Page, bind, keep_on_error

VIDEO_FORMATS = ("mp4", "webm", "gif")
# Exports start at once: each session's one export waits for its turn in our code (Session.export_video), so a
# second one from the same session is refused at once instead of filling Gradio's queue.
EXPORT_GROUP = dict(concurrency_limit=None, concurrency_id="export")


def save_image(ctx: AppContext, request: gr.Request) -> str:
    """The current image as a PNG at the model's resolution."""
    sess = ctx.session(request)
    ctx.check_disk(sess.workdir())
    path = sess.workdir() / f"{ctx.file_stem(sess)}.png"
    Image.fromarray(sess.image()).save(path)
    return str(path)


def export_video(ctx: AppContext, video_format: str, overlay: bool, request: gr.Request, progress=gr.Progress()) -> str:
    """The last drag as a video, every step of it: video_format 'mp4' (H.264), 'webm' (VP9) or 'gif'; overlay
    draws the points."""
    if not isinstance(video_format, str) or video_format not in VIDEO_FORMATS:
        raise DragInputError(f"video_format must be mp4, webm or gif, got {str(video_format)[:20]!r}")
    sess = ctx.session(request)
    ctx.check_disk(sess.workdir())
    path = sess.workdir() / f"{ctx.file_stem(sess)}.{video_format}"

    def rendered(done: int, total: int) -> None:
        progress((done, total), desc="Rendering the video", unit="frames")

    return str(sess.export_video(path, overlay=bool(overlay), progress=rendered))


def export_and_play(ctx: AppContext, video_format: str, overlay: bool, request: gr.Request, progress=gr.Progress()):
    path = export_video(ctx, video_format, overlay, request, progress)
    playable = video_format in ("mp4", "webm")
    return path, gr.Video(value=path if playable else None, visible=playable), ""


def build(ctx: AppContext, page: Page) -> None:
    with gr.Accordion("Save", open=False):
        with gr.Row():
            save_btn = gr.Button("Save image (PNG)", size="sm")
            export_btn = gr.Button("Export drag as video", size="sm", elem_id="export_video")
        with gr.Row():
            video_format = gr.Radio(list(VIDEO_FORMATS), value="mp4", label="Video format")
            overlay = gr.Checkbox(True, label="Draw points in the video")
        note = gr.Markdown("", elem_id="save_note")  # why an export was refused, beside its button
        download = gr.File(label="Download", interactive=False, elem_id="download")
        # The exported MP4/WebM, played in the page (a GIF shows in Download only).
        played = gr.Video(label="The drag", interactive=False, visible=False, elem_id="drag_video", buttons=[])

    save = bind(save_image, ctx)
    save_btn.click(keep_on_error(1, None)(save), None, download, api_visibility="private", concurrency_limit=None)
    page.api("save_image", save, None, download, concurrency_limit=None)
    # Exports wait on their own (EXPORT_GROUP), so a line of them never delays anyone's Generate or Undo.
    export_btn.click(keep_on_error(3, 2)(bind(export_and_play, ctx)), [video_format, overlay],
                     [download, played, note], api_visibility="private", **EXPORT_GROUP)
    page.api("export_video", bind(export_video, ctx), [video_format, overlay], download, **EXPORT_GROUP)
