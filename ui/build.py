"""The whole page: the sessions and context, the sections in their places, and what follows a new image."""
from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr
import torch

from draggan.compute import ComputeThread
from draggan.experiments.runner import ExperimentRuns
from draggan.public import PUBLIC_DELETE_CACHE
from draggan.sessions import PerceptualLoader, SessionManager
from pti import PTIPreset
from stylegan2 import catalog
from stylegan2.checkpoints import resolve_device

from draggan.config import DragConfig

from .context import HELP_TEXT, AppContext, ServerSettings, device_drag
from .controls import control_defaults
from .sections import drag, experiment, mask, model, photo, save, settings
from .views import ViewImage
from .wiring import Page, skips


@dataclasses.dataclass
class BuiltApp:
    """What build_demo makes: the Blocks to launch and the context its handlers share (for tests and scripts)."""
    demo: gr.Blocks
    ctx: AppContext
    components: dict[str, Any]
    experiments: ExperimentRuns = dataclasses.field(default_factory=ExperimentRuns)


RESETTABLE = list(DragConfig.MODEL_KEYS)  # the controls that follow the model (a ↺ each)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def follow_model(ctx: AppContext, applied: str | None, request: gr.Request):
    """After a new image: if its model is not the one the controls were set for, set them to its defaults;
    always offer the methods its model can run. Returns the model, the resettable controls, method, note."""
    if not ctx.has_session(request):
        return skips(len(RESETTABLE) + 3)
    sess = ctx.session(request)
    choices, note = ctx.method_choices(sess)
    method = gr.Radio(choices=choices, value="draggan")
    if sess.model == applied:
        return (*skips(len(RESETTABLE) + 1), method, note)
    d = control_defaults(sess.model)
    return (sess.model, *[d[n] for n in RESETTABLE], method, note)


def unload(ctx: AppContext, runs: ExperimentRuns, request: gr.Request) -> None:
    """A tab closed: its experiment stops and its session ends."""
    runs.stop(request.session_hash)
    ctx.points_order.forget(request.session_hash)
    ctx.sessions.close(request.session_hash)


def make_context(model: str | None, device: str, perceptual_loader: PerceptualLoader | None,
                 pti_presets: dict[str, PTIPreset] | None, **settings_kwargs: Any) -> AppContext:
    settings = ServerSettings(model=model, device=device, **settings_kwargs)
    dev = resolve_device(settings.device)
    from stylegan2.checkpoints import load_generator

    def load(spec: str, device: str):
        return load_generator(spec, device, allow_custom=not settings.public)

    sessions = SessionManager(device=str(dev), load=load, max_sessions=settings.max_sessions,
                              ttl_s=settings.session_ttl_s, perceptual_loader=perceptual_loader,
                              max_photos=settings.max_photos, max_per_client=settings.max_per_client,
                              device_slots=settings.concurrency, runner=device_drag, compute=ComputeThread(),
                              **settings.bounds())
    return AppContext(sessions, settings, settings.model or catalog.default_model(), device_label(dev), pti_presets)


def hidden_inputs(page: Page) -> None:
    """The API's inputs that the page never shows."""
    page["handles"] = gr.Textbox("", visible=False, label="handles")  # the API's points; the UI drags the clicks
    page["targets"] = gr.Textbox("", visible=False, label="targets")
    page["frame"] = gr.JSON(visible=False, label="frame")
    page["protocol"] = gr.Textbox("landmarks", visible=False, label="protocol")
    page["embedding_in"] = gr.File(visible=False, label="file")


def edit_tab(ctx: AppContext, page: Page) -> None:
    with gr.Row():
        with gr.Column(scale=3, min_width=300):  # first: at the top on a phone
            page["info"] = gr.Markdown(HELP_TEXT, elem_id="info", render=False)  # placed under the image
            with gr.Tabs():
                with gr.Tab("Points"):
                    page["view"] = ViewImage(type="numpy", interactive=False, show_label=False,
                                             buttons=["fullscreen"], elem_id="view", format="png")
                with gr.Tab("Mask") as mask_tab:
                    mask.build(ctx, page, mask_tab)
            page["info"].render()
            drag.build(ctx, page)
        with gr.Column(scale=2, min_width=300):
            model.build(ctx, page)
            settings.build(ctx, page)
            photo.build(ctx, page)
            save.build(ctx, page)


def follow_new_images(ctx: AppContext, page: Page) -> None:
    """After every new image: the mask editor shows it, and the drag controls follow its model."""
    applied = gr.State(ctx.default_model)  # the model the controls were last set for

    def follow(applied_model: str | None, request: gr.Request):
        return follow_model(ctx, applied_model, request)

    follow_event = dict(fn=follow, inputs=applied,
                        outputs=[applied, *[page[n] for n in RESETTABLE], page["method"], page["method_note"]],
                        show_progress="hidden", api_visibility="private", concurrency_limit=None)
    for event in page.new_image_events:
        event.then(**page.refresh_mask)
        event.success(**follow_event)


def build_demo(model: str | None = None, device: str = "auto", *, perceptual_loader: PerceptualLoader | None = None,
               pti_presets: dict[str, PTIPreset] | None = None, **settings_kwargs: Any) -> BuiltApp:
    """The app. model: default model spec (None: the catalog's default); device: auto, cpu, cuda or mps;
    settings_kwargs: the other ServerSettings fields (public=, max_sessions=, concurrency=, max_photos=, ...);
    perceptual_loader: device -> PerceptualDistance (default: pti.load_perceptual; tests pass a tiny one);
    pti_presets: the inversion presets offered, by name (default: pti.PRESETS)."""
    ctx = make_context(model, device, perceptual_loader, pti_presets, **settings_kwargs)
    runs = ExperimentRuns()
    delete_cache = PUBLIC_DELETE_CACHE if ctx.settings.public else (1800, 3600)  # (every, older than) seconds
    with gr.Blocks(title="DragGAN", analytics_enabled=False, delete_cache=delete_cache) as demo:
        page = Page(demo)
        gr.Markdown("# DragGAN\nDrag points on a generated image (or your photo); the hints under the image say "
                    "what to click next. Paint a mask (Mask tab) to keep the rest of the image fixed.")
        page["status"] = gr.Markdown(f"Device **{ctx.device_label}** · model **{ctx.model_label(ctx.default_model)}**: "
                                     "loading…", elem_id="status")
        hidden_inputs(page)
        with gr.Tabs():
            with gr.Tab("Edit"):
                edit_tab(ctx, page)
            with gr.Tab("Experiment"):
                experiment.build(ctx, page, runs)
        for wire in page.wire_later:
            wire()
        follow_new_images(ctx, page)

        def on_unload(request: gr.Request) -> None:
            unload(ctx, runs, request)
        demo.unload(on_unload)
    demo.queue(max_size=64)
    return BuiltApp(demo, ctx, page.components, runs)
