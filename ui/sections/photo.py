"""Real photo: upload, preview the square, Invert (PTI) with its progress, Cancel."""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from draggan.config import DragInputError
from draggan.draw import enlarge
from draggan.sessions import read_photo
from pti import InversionCancelled, parse_crop
from pti.inversion import stage_text
from stylegan2 import catalog
from stylegan2.errors import UserError

from ..context import HELP_TEXT, AppContext
from ..views import ViewImage, view_scale
from ..wiring import Page, bind, keep_on_error
from . import embedding
from .embedding import photo_report

STAGES = {"project": "Projecting", "tune": "Tuning"}


def preview_photo(ctx: AppContext, path: str | None, crop: str, model: str) -> tuple[np.ndarray | None, str]:
    """The square the inversion will use, at the model's resolution, with notes (or why it cannot be used)."""
    if not path:
        return None, ""
    model = (model or ctx.default_model).strip()
    try:
        try:
            resolution = catalog.get_entry(model).resolution
        except KeyError:
            resolution = ctx.sessions.generator(model).img_resolution
        box = parse_crop(crop) if crop and crop.strip() else None
        image, notes = read_photo(path, resolution, box)
    except UserError as e:
        return None, f"⚠️ {e}"
    return enlarge(image, view_scale(resolution)), "  \n".join(notes)


def show_preview(ctx: AppContext, path: str | None, crop_text: str, model: str):
    image, notes = preview_photo(ctx, path, crop_text, model)
    return image, notes, gr.Button(interactive=image is not None)


def invert(ctx: AppContext, photo: str | None, crop: str, preset: str, model: str, latent_space: str,
           request: gr.Request, progress=gr.Progress()):
    """Invert a photo into a model (PTI) and edit it. photo: an image file; crop: '' for the centre
    square, or 'x0,y0,x1,y1' in pixels of the upright photo; preset: 'fast' or 'paper'; model and
    latent_space as for /generate. Returns the view, the status line, a hint and a report."""
    if not photo:
        raise DragInputError("Upload a photo (JPEG, PNG or WebP) before pressing Invert")
    if not isinstance(preset, str) or preset not in ctx.presets:
        raise DragInputError(f"preset must be one of {', '.join(ctx.presets)}, got {str(preset)[:40]!r}")
    box = parse_crop(crop) if crop and crop.strip() else None
    model = (model or ctx.default_model).strip()
    last: dict[str, Any] = {}

    def on_step(stage: str, step: int, total: int, loss: float) -> None:
        last.update(stage=stage, step=step, total=total)
        if "loss" not in last:  # what the inversion optimizes, loaded by now: the line names a fallback
            last["loss"] = ctx.sessions.perceptual()
        progress((step, total), desc=stage_text(stage, last["loss"]), unit="steps")

    progress(0, desc=f"Loading {ctx.model_label(model)}")
    try:
        sess, notes = ctx.sessions.invert_photo(request.session_hash, model, photo, ctx.presets[preset],
                                                box, latent_space, on_step, client=ctx.client(request))
    except InversionCancelled:
        where = (f" while {STAGES[last['stage']].lower()} (step {last['step']} of {last['total']})"
                 if last else " before it started")
        return (*ctx.unchanged(request), f"Cancelled{where}: the image is as it was.")
    return ctx.view(sess), ctx.status(sess), HELP_TEXT, photo_report(sess, notes)


def cancel_invert(ctx: AppContext, request: gr.Request) -> None:
    """Cancel this session's inversion before its next step; the image stays as it was."""
    ctx.sessions.cancel_invert(request.session_hash)


def arm_invert(ctx: AppContext, request: gr.Request) -> None:
    """Ready the Cancel of an inversion about to be queued, so a Cancel while it waits for the device stops it."""
    ctx.sessions.arm_invert(request.session_hash)


def build(ctx: AppContext, page: Page) -> None:
    with gr.Accordion("Real photo", open=False):
        photo_in = gr.File(label="Photo (JPEG, PNG or WebP)", file_types=["image"], type="filepath", height=170)
        preview = ViewImage(type="numpy", interactive=False, label="What will be inverted", height=160, buttons=[])
        crop_in = gr.Textbox("", label="Crop", max_lines=1, placeholder="x0,y0,x1,y1",
                             info="Empty: the centre square. Else a box in pixels of the upright photo")
        preset_in = gr.Radio(list(ctx.presets), value="fast" if "fast" in ctx.presets else None, label="Preset",
                             info=" · ".join(f"{k}: {p.w_steps} + {p.tune_steps} steps" for k, p in ctx.presets.items()))
        with gr.Row():
            invert_btn = gr.Button("Invert", variant="primary", elem_id="invert", interactive=False)
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel_invert")
        # Right under Invert, and tall enough to show the inversion's progress bar (empty, it would show none,
        # and the image's own progress is out of view when this part of the page is).
        report = gr.Markdown("Inverts into the model chosen above; then drag it as any image.", elem_id="photo_report",
                             min_height=64)
        with gr.Row():
            save_btn = gr.Button("Save embedding", size="sm")
            load_btn = gr.UploadButton("Load embedding", file_types=[".safetensors"], size="sm")
        embedding_file = gr.File(label="Embedding", interactive=False, visible=False)

    preview_event = dict(fn=bind(show_preview, ctx), inputs=[photo_in, crop_in, page["model"]],
                         outputs=[preview, report, invert_btn], trigger_mode="always_last", show_progress="hidden",
                         api_visibility="private", concurrency_limit=2, concurrency_id="render")
    photo_in.change(**preview_event)
    crop_in.change(**preview_event)
    outputs = [page["view"], page["status"], page["info"], report]
    inputs = [photo_in, crop_in, preset_in, page["model"], page["latent_space"]]
    heavy = dict(concurrency_id="drag", concurrency_limit=None)
    handler = bind(invert, ctx)
    page.new_image_events.append(
        invert_btn.click(bind(arm_invert, ctx), None, None, queue=False, api_visibility="private")
        .then(keep_on_error(4, 3)(handler), inputs, outputs, api_visibility="private", **heavy))
    page.api("invert", handler, inputs, outputs, **heavy)
    cancel_btn.click(bind(cancel_invert, ctx), None, None, api_name="cancel_invert", show_progress="hidden",
                     queue=False)
    embedding.build(ctx, page, save_btn, load_btn, embedding_file, outputs)
