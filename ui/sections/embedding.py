"""Save embedding / Load embedding: a photo session to a file and back."""
from __future__ import annotations

import gradio as gr

from draggan.config import DragInputError

from draggan.sessions import EditSession
from pti import PixelDistance

from ..context import HELP_TEXT, AppContext
from ..wiring import Page, bind, keep_on_error


OFFLINE_LOSS_NOTE = ("Inverted with the offline pixel loss (no perceptual weights): texture may be less faithful "
                     "than with the perceptual loss, which needs its weights from the Hub once")


def photo_report(sess: EditSession, notes: list[str]) -> str:
    p, t = sess.photo.projection, sess.photo.tuning
    text = (f"Projected in {p.steps} steps (PSNR {p.psnr_before:.1f} → {p.psnr_after:.1f} dB), tuned in "
            f"{t.steps} (→ **{t.psnr_after:.1f} dB**), {p.seconds + t.seconds:.0f} s. Drag it as any image.")
    if getattr(sess.photo, "loss", "") == PixelDistance.description:
        notes = [OFFLINE_LOSS_NOTE, *notes]
    return "  \n".join([text, *notes])


def save_embedding(ctx: AppContext, request: gr.Request) -> str:
    """This session's photo as an embedding file (.safetensors), for /load_embedding or `draggan drag`."""
    return str(ctx.sessions.save_photo(request.session_hash))


def load_embedding(ctx: AppContext, embedding: str | None, latent_space: str, request: gr.Request,
                   progress=gr.Progress()):
    """Edit the photo of an embedding file (from Save embedding or `python -m draggan invert`).
    Returns the view, the status line, a hint and a report."""
    if not embedding:
        raise DragInputError("Choose an embedding file (.safetensors) to load")
    progress(0, desc="Loading the embedding")
    sess = ctx.sessions.load_photo(request.session_hash, embedding, latent_space, client=ctx.client(request))
    return ctx.view(sess), ctx.status(sess), HELP_TEXT, photo_report(sess, [])


def show_file() -> gr.File:
    return gr.File(visible=True)


def build(ctx: AppContext, page: Page, save_btn: gr.Button, load_btn: gr.UploadButton, embedding_file: gr.File,
          outputs: list) -> None:
    save = bind(save_embedding, ctx)
    save_btn.click(keep_on_error(1, None)(save), None, embedding_file, api_visibility="private",
                   concurrency_limit=None).success(show_file, None, embedding_file, api_visibility="private",
                                                   queue=False)
    page.api("save_embedding", save, None, embedding_file, concurrency_limit=None)
    heavy = dict(concurrency_id="drag", concurrency_limit=None)
    load = bind(load_embedding, ctx)
    page.new_image_events.append(load_btn.upload(keep_on_error(4, 3)(load), [load_btn, page["latent_space"]],
                                                 outputs, api_visibility="private", **heavy))
    page.api("load_embedding", load, [page["embedding_in"], page["latent_space"]], outputs, **heavy)
