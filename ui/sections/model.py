"""Model, seed, ψ, latent space and Generate; the first image of a new tab."""
from __future__ import annotations

import random

import gradio as gr

from draggan.config import DragInputError
from draggan.sessions import SEED_MAX
from stylegan2 import catalog
from stylegan2.errors import UserError

from ..context import HELP_TEXT, AppContext
from ..controls import BoundedSlider
from ..wiring import NOTICES, Page, bind


def generate_image(ctx: AppContext, model: str, seed: float, psi: float, latent_space: str, request: gr.Request,
                   progress=gr.Progress()):
    """Generate the image for a seed: model (catalog name; Hub `repo_id:filename` or a local path where the
    server allows custom models), seed (0 to 2^32-1), truncation psi (0 to 1), latent space ('w' or 'w+').
    Returns the view, the status line and a hint."""
    model = (model or ctx.default_model).strip()
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        raise DragInputError(f"Seed is empty: type a whole number from 0 to {SEED_MAX}, or press Random")
    progress(0, desc=f"Loading {ctx.model_label(model)}")
    sess = ctx.sessions.new_session(request.session_hash, model, seed, psi, latent_space,
                                    client=ctx.client(request))
    return ctx.view(sess), ctx.status(sess), HELP_TEXT


def ui_generate_image(ctx: AppContext, model: str, seed: float, psi: float, latent_space: str, request: gr.Request,
                      progress=gr.Progress()):
    """Generate, for the page: a refusal (a model that cannot load, a bad seed) keeps the image, says why
    beside it, and puts the Model choice back on the model shown."""
    try:
        return (*generate_image(ctx, model, seed, psi, latent_space, request, progress), gr.skip())
    except UserError as e:
        gr.Warning(str(e))
        NOTICES.note(request, str(e))
        return gr.skip(), gr.skip(), f"⚠️ {e}", ctx.model_of(request)


def on_load(ctx: AppContext, model: str, seed: float, psi: float, latent_space: str, request: gr.Request):
    """The first image of a new tab; if the model cannot be loaded, say so in the status line."""
    try:
        return generate_image(ctx, model, seed, psi, latent_space, request, lambda *a, **k: None)
    except UserError as e:
        return None, f"⚠️ {e}  \nDevice **{ctx.device_label}**: pick another model and press Generate.", ""


def licence_text(ctx: AppContext, model: str | None) -> str:
    """The chosen model's licence, as its catalog entry states it (issue 22), shown under the Model choice."""
    try:
        entry = catalog.get_entry((model or ctx.default_model).strip())
    except (KeyError, AttributeError):
        return "Licence: as the file's own source states (not a catalog model)"
    return f"Licence of {entry.label}: **{entry.licence}**"


def random_seed() -> int:
    return random.randint(0, SEED_MAX)


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    choices = [(e.label, e.name) for e in catalog.list_models()]
    if ctx.default_model not in [c[1] for c in choices]:
        choices.insert(0, (ctx.model_label(ctx.default_model), ctx.default_model))
    return choices


def build(ctx: AppContext, page: Page) -> None:
    info = ("A model from the list" if ctx.settings.public else
            "A catalog model, or type a Hub repo_id:filename or a local .pkl/.safetensors path")
    with gr.Group():
        page["model"] = gr.Dropdown(model_choices(ctx), value=ctx.default_model, label="Model",
                                    allow_custom_value=True, info=info)  # refused by our policy, one message
        licence = gr.Markdown(licence_text(ctx, ctx.default_model), elem_id="model_licence", padding=True)
        with gr.Row(equal_height=True):
            page["seed"] = gr.Number(0, label="Seed", info=f"0 to {SEED_MAX}", scale=3)
            dice = gr.Button("Random", scale=1, min_width=90)  # no emoji: a browser without an emoji font shows a box
        page["psi"] = BoundedSlider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")  # checked by check_psi
        page["latent_space"] = gr.Radio([("W", "w"), ("W+", "w+")], value="w+", label="Latent space")
        generate = gr.Button("Generate", variant="primary", elem_id="generate")

    inputs = [page["model"], page["seed"], page["psi"], page["latent_space"]]
    outputs = [page["view"], page["status"], page["info"]]
    handler = bind(generate_image, ctx)
    ui_generate, ui_outputs = bind(ui_generate_image, ctx), [*outputs, page["model"]]
    page.new_image_events.append(generate.click(ui_generate, inputs, ui_outputs, api_visibility="private",
                                                concurrency_id="render", concurrency_limit=2))
    page.new_image_events.append(
        dice.click(random_seed, None, page["seed"], api_visibility="private", queue=False)
        .then(ui_generate, inputs, ui_outputs, api_visibility="private", concurrency_id="render"))
    page.new_image_events.append(page.demo.load(bind(on_load, ctx), inputs, outputs, api_visibility="private",
                                                concurrency_id="render"))
    page.api("generate", handler, inputs, outputs, concurrency_id="render")
    page["model"].change(bind(licence_text, ctx), page["model"], licence, queue=False, api_visibility="private",
                         show_progress="hidden")
    ctx.on_load = bind(on_load, ctx)  # for tests: the first-load path without a browser
