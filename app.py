"""The DragGAN web app (Gradio 6): lays out the UI and forwards its events to `draggan.sessions`.

    python app.py [--model SPEC] [--device auto|cpu|cuda|mps] [--host H] [--port P] [--share]
                  [--public | --trusted] [--max-sessions N] [--session-ttl S] [--concurrency N] [--max-photos N]

Each browser tab (and each `gradio_client.Client`) is one session, keyed by Gradio's session
hash: its own latent, points and mask over a generator shared by everyone. Drags, inversions
and experiments wait for one of `--concurrency` device slots in our own code (so a Stop reaches
a drag that still waits); Generate does not wait behind them.

Public mode (the default whenever the app listens beyond loopback or makes a share link, or
with --public / DRAGGAN_PUBLIC=1): only catalog models, no local paths, no arbitrary Hub files,
embeddings only for catalog models, bounded experiments. --trusted (DRAGGAN_TRUSTED=1) allows
custom models. See the README's "Running it in public".

The UI is built from section builders (model, view and drag, settings, mask, photo, save,
experiment); each creates its components and wires its events. One ordered mapping,
`DRAG_CONTROLS`, drives the drag sliders, the /drag endpoint's parameters and the DragConfig.

The API (see the app's "Use via API" page); parameters with their defaults:
  /generate(model, seed=0, psi=0.7, latent_space="w+") -> view, status, hint
  /drag(handles="", targets="", lr, r1, r2, r3, nearest, max_steps, lambda_mask, feature_block, rows,
        frame_every, tracking, method="draggan", frame_rate=15) -> streams (view, progress line, frame JSON);
        the views before the last come inline, {"url": "data:image/jpeg;base64,..."}; the last is a file
  /stop, /undo, /reset, /save_image -> PNG, /export_video(video_format="mp4", overlay=True) -> file
  /drag_defaults -> lr, r1, r2, r3, feature_block, max_steps suited to the session's model
  /invert(photo, crop="", preset="fast", model=<default>, latent_space="w+") -> view, status, hint, report
  /cancel_invert; /save_embedding -> .safetensors; /load_embedding(file, latent_space="w+") -> as /invert
  /experiment(protocol="landmarks", pairs=4, max_steps=200, points=1, feature_block=0, methods="draggan")
      -> streams (progress line, results table, JSON file)
Points are (x, y) image pixels everywhere; the view is the image enlarged by a whole number, and
`view_to_image_xy` is the one place clicks are converted. In the UI, bad input leaves the image
and points as they were and says why beside them; API calls get the same message as an error.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import hashlib
import inspect
import ipaddress
import math
import os
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import gradio as gr
import numpy as np
import torch
from PIL import Image

from draggan.compute import ComputeThread
from draggan.config import (APP_FRAME_RATE, APP_FRAME_SHARE, DragConfig, DragFrame, DragInputError, parse_points,
                            validate_points)
from draggan.draw import draw_mask, draw_points, enlarge
from draggan.gpu import gpu_task
from draggan.methods import LABELS, METHOD_NAMES, NO_PREDICTOR, available_methods, run_drag
from draggan.sessions import SEED_MAX, EditSession, PerceptualLoader, SessionManager, read_photo, stream_newest
from pti import PRESETS, InversionCancelled, PTIPreset, parse_crop
from stylegan2 import catalog
from stylegan2.checkpoints import resolve_device
from stylegan2.errors import UserError

VIEW_MIN_PX = 256                # small images are shown enlarged to at least this size (the browser scales further)
MAX_UPLOAD = "200mb"             # photos are refused above 40 MP anyway; a 1024-px model's embedding is ~120 MB
MAX_MASK_PX = 4096               # a mask layer larger than this per side is refused before it is read
# Pillow refuses to decode any image over twice this many pixels (every upload, mask layers included), so memory
# stays bounded; photos get pti's own, clearer message at 40 MP first.
Image.MAX_IMAGE_PIXELS = 40_000_000
STAGES = {"project": "Projecting", "tune": "Tuning"}
MASK_RGBA = (34, 197, 94, 128)   # how the editable area looks in the mask editor
FRAME_RATE, FRAME_SHARE = APP_FRAME_RATE, APP_FRAME_SHARE  # how a drag's frames are paced (draggan/config.py)
FRAME_JPEG_QUALITY = 95          # a drag's frames before the last (the last, and every other view, is a lossless PNG)
DONE_TEXT = {"reached": "Reached the targets", "stopped": "Stopped", "max_steps": "Stopped at max steps",
             "predicted": "Predicted"}
HELP_TEXT = ("Click a **handle** (red disc) and then its **target** (blue square); add as many pairs as you like, "
             "then press **Drag**.")
MIN_GRADIO = "6.28"              # the oldest Gradio that passes our app and browser tests (requirements.txt)
QUEUE_POLL_S = 0.01              # how often Gradio's queue looks for new events (its own default: every 1 ms)
EXPERIMENT_COLUMNS = ["method", "MD before", "MD after", "success", "steps", "s/edit"]  # the results table
PUBLIC_EXPERIMENT_PAIRS = 8      # pairs an experiment may use on a public server
CSS = """
#status p { margin: 0; }
#view img { image-rendering: pixelated; width: 100%; height: auto; object-fit: contain; }
.reset-btn { max-width: 2.6em !important; min-width: 2.6em !important; }
#photo_report .meta-text-center { transform: none; }
"""


# ----------------------------------------------------------------------------
# Settings of the deployment and of one drag.

@dataclasses.dataclass
class ServerSettings:
    """How this server runs; `main` fills it from flags and environment variables."""
    model: str | None = None          # default model (None: the catalog's default)
    device: str = "auto"
    public: bool = False              # catalog models only, bounded experiments
    max_sessions: int = 32            # live sessions; the least recently used idle one goes first
    session_ttl_s: float = 1800.0     # idle seconds before a session ends
    concurrency: int = 1              # drags/inversions/experiments on the device at once
    max_photos: int = 4               # sessions that may hold a tuned generator copy at once
    max_per_client: int | None = None  # sessions one IP may hold (None: a quarter of max_sessions)


@dataclasses.dataclass(frozen=True)
class Control:
    """One drag setting as the UI shows it and the API takes it."""
    label: str
    kind: str                        # 'slider', 'checkbox', 'radio'
    section: str                     # 'main', 'advanced', 'mask', 'method'
    minimum: float = 0
    maximum: float = 1
    step: float = 1
    choices: tuple = ()
    info: str | None = None
    reset: bool = False              # a ↺ button that returns to the current model's default

    @property
    def field(self) -> str:
        """The name messages use: the label up to its first ':' or '(' ("R1", "Step size", "λ")."""
        return self.label.split(":")[0].split("(")[0].strip()


DRAG_CONTROLS: dict[str, Control] = {  # order = the /drag endpoint's parameters after handles, targets
    "lr": Control("Step size", "slider", "main", 0.0005, 0.1, 0.0005, reset=True),
    "r1": Control("R1: motion radius", "slider", "main", 1, 128, 1, info="Radii in 512-px units", reset=True),
    "r2": Control("R2: tracking radius", "slider", "main", 1, 256, 1, reset=True),
    "r3": Control("R3: Nearest search radius", "slider", "main", 1, 256, 1, reset=True),
    "nearest": Control("Nearest: start each handle on the nearest edge", "checkbox", "main"),
    "max_steps": Control("Max steps", "slider", "main", 1, 2000, 1, reset=True),
    "lambda_mask": Control("λ: how strongly the unpainted area is kept fixed", "slider", "mask", 0, 100, 0.5,
                           reset=True),
    "feature_block": Control("Feature block", "slider", "advanced", 1, 9, 1,
                             info="Synthesis block whose features drive the drag", reset=True),
    "rows": Control("W+ rows optimized", "slider", "advanced", 1, 18, 1, reset=True),
    "frame_every": Control("Show at most every n-th step", "slider", "advanced", 1, 50, 1),
    "tracking": Control("Point tracking distance", "radio", "advanced",
                        choices=(("L1 (paper)", "l1"), ("L2 (official code)", "l2"))),
    "method": Control("Method", "radio", "method", choices=tuple((LABELS[m], m) for m in METHOD_NAMES)),
    "frame_rate": Control("Frames per second shown (0: every step)", "slider", "advanced", 0, 60, 1),
}
UI_METHODS = ("draggan", "auto", "auto-refine")  # the app's Method choice; the others are for benchmarks


def control_defaults(model: str | None) -> dict[str, Any]:
    """Every control's value for `model`: DragConfig.for_model's, plus the method and frame rate."""
    cfg = DragConfig.for_model(model)
    return {**{k: getattr(cfg, k) for k in DRAG_CONTROLS if hasattr(cfg, k)}, "method": "draggan",
            "frame_rate": FRAME_RATE}


def drag_config(model: str, values: dict[str, Any]) -> tuple[DragConfig, str]:
    """The control values of a /drag call -> (DragConfig for the model, method). Checked once, here."""
    values = dict(values)
    method = values.pop("method", None) or "draggan"
    rate = values.pop("frame_rate", None)
    rate = FRAME_RATE if rate is None else control_value("frame_rate", rate)
    given = {k: (bool(v) if k == "nearest" else v if k == "tracking" else control_value(k, v))
             for k, v in values.items() if v is not None}
    return DragConfig.for_model(model, frame_interval_s=1 / rate if rate else 0.0,
                                frame_share=FRAME_SHARE if rate else 0.0, **given), method


WHOLE_CONTROLS = {"feature_block", "rows", "max_steps", "frame_every"}


def control_value(name: str, v: Any) -> float | int:
    """A slider's value from the UI or the API, within the slider's bounds, or a DragInputError naming the
    field ("Step size must be between 0.0005 and 0.1, got 5"). Gradio's own check, which names no field,
    is skipped for these sliders (BoundedSlider), so this is the one that speaks."""
    c = DRAG_CONTROLS[name]
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not c.minimum <= x <= c.maximum:
        got = f"{x:g}" if math.isfinite(x) else repr(str(v)[:40])
        raise DragInputError(f"{c.field} must be between {c.minimum:g} and {c.maximum:g}, got {got}")
    if name in WHOLE_CONTROLS:
        if not x.is_integer():
            raise DragInputError(f"{c.field} must be a whole number, got {x:g}")
        return int(x)
    return x


def encode_image(image: np.ndarray, ext: str, params: list[int]) -> bytes:
    """An RGB or RGBA uint8 image encoded by OpenCV (ext ".png" or ".jpg"), or a ValueError."""
    code = cv2.COLOR_RGBA2BGRA if image.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(image, np.uint8), code), params)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {ext}")
    return buf.tobytes()


def cached_png(image: np.ndarray, cache_dir: str | Path) -> str:
    """An RGB or RGBA uint8 image as a PNG file in Gradio's cache, named by its content: written once, under a
    temporary name and renamed into place, so whoever reads it reads it whole. Gradio's own writer rewrites a
    content-named file in place each time the same picture is produced again; the view and the mask editor's
    background are the same picture after Generate, so the browser sometimes fetched the view's file while it
    was being rewritten (ERR_CONTENT_LENGTH_MISMATCH) and the first image never showed."""
    data = encode_image(image, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast; our images are small
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()
    path = folder / "image.png"
    try:
        os.utime(path)  # already there: Gradio's delete_cache ages files by ctime, so one shown again is kept
        return str(path)
    except FileNotFoundError:
        pass  # not written yet (or just deleted by that cleaner)
    folder.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".image.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


class InlineFrame:
    """A drag's intermediate view, sent inside the event stream (see ViewImage)."""

    def __init__(self, view: np.ndarray):
        self.view = view


class ViewImage(gr.Image):
    """The app's pictures: the image view, the single-pair test's and the photo preview. A drag's intermediate
    frames (InlineFrame) travel inside the event stream as JPEG data URLs (a tenth of a PNG's encoding time);
    every other picture (the last frame, Generate, Undo...) is a PNG file written by cached_png, which the
    browser fetches. Fetching each frame as a file cost the server a request per frame (its middleware, file
    checks and threaded file reads) and slowed a small model's drag by a quarter (`python -m draggan bench --app`)."""

    def get_block_name(self) -> str:
        return "image"  # the browser shows it as Gradio's image

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, InlineFrame):
            try:
                jpeg = encode_image(value.view, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
                return {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"),
                        "orig_name": "frame.jpg", "mime_type": "image/jpeg"}
            except ValueError:
                value = value.view  # sent as a file instead
        if isinstance(value, np.ndarray):
            value = cached_png(value, self.GRADIO_CACHE)
        return super().postprocess(value)


class BoundedSlider(gr.Slider):
    """A gr.Slider whose value reaches the handler unchecked, for sliders whose handler checks the bounds
    itself and names the field (Gradio's own check says only "Value 5.0 is greater than maximum value 0.1",
    before our code runs, and in the UI it would bypass keep_on_error)."""

    def get_block_name(self) -> str:
        return "slider"  # the browser shows it as Gradio's slider

    def preprocess(self, payload: Any) -> Any:
        return payload


def _number(v: Any, name: str, lo: float, hi: float) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not lo <= x <= hi:
        raise DragInputError(f"{name} must be a number from {lo:g} to {hi:g}, got {str(v)[:40]!r}")
    return x


def _whole(v: Any, name: str) -> int:
    x = _number(v, name, 0, 1e6)
    if not x.is_integer():
        raise DragInputError(f"{name} must be a whole number, got {v!r}")
    return int(x)


# ----------------------------------------------------------------------------
# The view: the image as shown, enlarged for small models. All conversions live here.

def view_scale(resolution: int) -> int:
    """How many view pixels one image pixel covers (nearest-neighbour enlargement)."""
    return max(1, math.ceil(VIEW_MIN_PX / resolution))


def view_to_image_xy(view_xy: tuple[float, float] | list[float], resolution: int) -> list[float]:
    """A click on the view, in view pixels, -> the (x, y) image pixel it fell in."""
    s = view_scale(resolution)
    return [float(min(max(int(c) // s, 0), resolution - 1)) for c in view_xy[:2]]


def render_view(image: np.ndarray, handles_xy, targets_xy, editable: np.ndarray | None, show_mask: bool) -> np.ndarray:
    """The image with its points (and the fixed area dimmed, if asked), enlarged to the view size."""
    if show_mask and editable is not None:
        image = draw_mask(image, editable)
    return draw_points(image, handles_xy, targets_xy, scale=view_scale(image.shape[0]))


def mask_from_layers(layers: list[np.ndarray] | None, resolution: int) -> np.ndarray | None:
    """Painted mask-editor layers (view size, RGBA) -> editable area [H, W] bool, or None if nothing painted."""
    painted = None
    for layer in (layers or [])[:8]:
        layer = np.asarray(layer)
        if layer.ndim not in (2, 3) or max(layer.shape[:2]) > MAX_MASK_PX or layer.size > MAX_MASK_PX ** 2 * 4:
            raise DragInputError(f"A mask layer must be an image of at most {MAX_MASK_PX}x{MAX_MASK_PX} pixels")
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(*layer.shape[:2], -1).max(-1)
        painted = alpha > 0 if painted is None or painted.shape != alpha.shape else painted | (alpha > 0)
    if painted is None or not painted.any():
        return None
    # A pixel is editable when at least half of its view pixels were painted.
    small = cv2.resize(painted.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def mask_layer(editable: np.ndarray, resolution: int) -> np.ndarray:
    """Editable area [H, W] -> a view-size RGBA layer for the mask editor."""
    big = enlarge(editable.astype(np.uint8), view_scale(resolution)).astype(bool)
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = MASK_RGBA
    return layer


# ----------------------------------------------------------------------------
# The device entry points: what ZeroGPU runs with a GPU attached (elsewhere, plain calls).

def _drag_seconds(method: str, job) -> int:
    return int(min(120, 10 + job.config.max_steps * 0.25))


@gpu_task(duration=_drag_seconds)
def device_drag(method: str, job) -> Iterator[DragFrame]:
    """A drag where the GPU is. On ZeroGPU the job is pickled into a worker: its stop event stays
    behind, so the session closes this generator instead (see EditSession.run_drag)."""
    yield from run_drag(method, job)


# ----------------------------------------------------------------------------
# Errors: the UI keeps what it shows; the API reports the message as an error.

def _skips(n: int) -> tuple:
    return tuple(gr.skip() for _ in range(n))


def keep_on_error(n_outputs: int, message_at: int | None) -> Callable:
    """Turn a UserError into a warning beside the image: every output skipped (unchanged) except the
    message output, which says what happened. Wraps functions and generator functions."""
    def wrap(fn: Callable) -> Callable:
        def failed(e: Exception) -> tuple:
            message = e.message if isinstance(e, gr.Error) else str(e)
            gr.Warning(message)
            out = list(_skips(n_outputs))
            if message_at is not None:
                out[message_at] = f"⚠️ {message}"
            return tuple(out) if n_outputs > 1 else out[0]

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except (UserError, gr.Error) as e:
                    yield failed(e)
            gen.__name__ = f"ui_{fn.__name__}"  # the API endpoint keeps the plain name
            return gen

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (UserError, gr.Error) as e:
                return failed(e)
        plain.__name__ = f"ui_{fn.__name__}"  # the API endpoint keeps the plain name
        return plain
    return wrap


def user_errors(fn: Callable) -> Callable:
    """UserErrors -> gr.Error (one line, no traceback), which reaches the browser and API clients."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None
        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return plain


# ----------------------------------------------------------------------------
# What every section shares: the sessions and how a session is shown.

class AppContext:
    """The sessions, the server settings, and how a session's state is shown. Knows no drag algorithm."""

    def __init__(self, sessions: SessionManager, settings: ServerSettings, default_model: str, device_label: str,
                 presets: dict[str, PTIPreset] | None = None):
        self.sessions = sessions
        self.settings = settings
        self.default_model = default_model
        self.device_label = device_label
        self.presets = dict(presets or PRESETS)

    def session(self, request: gr.Request) -> EditSession:
        return self.sessions.get(request.session_hash)

    def has_session(self, request: gr.Request) -> bool:
        return request.session_hash in self.sessions

    @staticmethod
    def client(request: gr.Request) -> str | None:
        """Who asks, for the per-client session bound: the IP address. Behind a proxy we trust (a Space, or
        DRAGGAN_TRUST_PROXY=1), the address the proxy saw: the last X-Forwarded-For entry (a visitor can
        forge the earlier ones, not the one the proxy appends)."""
        headers = getattr(request, "headers", None) or {}
        forwarded = headers.get("x-forwarded-for") if hasattr(headers, "get") else None
        if forwarded and (os.environ.get("SPACE_ID") or os.environ.get("DRAGGAN_TRUST_PROXY") == "1"):
            return forwarded.split(",")[-1].strip()[:64]
        return getattr(getattr(request, "client", None), "host", None)

    @staticmethod
    def view(sess: EditSession, frame: DragFrame | None = None) -> np.ndarray:
        if frame is None:
            return render_view(sess.image(), sess.handles_xy, sess.targets_xy, sess.editable, sess.show_mask)
        image = frame.image if frame.image is not None else sess.image()
        return render_view(image, frame.handles_xy, frame.targets_xy, sess.editable, sess.show_mask)

    def model_label(self, model: str) -> str:
        try:
            return catalog.get_entry(model).label
        except KeyError:
            return Path(model).name if Path(model).suffix else model

    def status(self, sess: EditSession) -> str:
        res = sess.resolution
        space = "W+" if sess.latent_space == "w+" else "W"
        if sess.photo is not None:
            return (f"**Your photo** (PTI on **{self.model_label(sess.model)}**, {res}×{res}) on "
                    f"**{self.device_label}** · PSNR {sess.photo.tuning.psnr_after:.1f} dB · {space}")
        return (f"Model **{self.model_label(sess.model)}** ({res}×{res}) on **{self.device_label}** · "
                f"seed {sess.seed} · ψ {sess.psi:g} · {space}")

    @staticmethod
    def points_text(sess: EditSession) -> str:
        n_h, n_t = len(sess.handles_xy), len(sess.targets_xy)
        if n_h == 0:
            return HELP_TEXT
        if n_h > n_t:
            x, y = sess.handles_xy[-1]
            return f"Handle {n_h} at ({x:g}, {y:g}): now click its target."
        x, y = sess.targets_xy[-1]
        return f"Target {n_t} at ({x:g}, {y:g}). Click another handle, or press **Drag**."

    def unchanged(self, request: gr.Request) -> tuple:
        """View, status and hint of the session as it is (None and a hint if it has no image)."""
        if not self.has_session(request):
            return None, "No image yet: press Generate, or invert a photo.", HELP_TEXT
        sess = self.session(request)
        return self.view(sess), self.status(sess), self.points_text(sess)

    @staticmethod
    def file_stem(sess: EditSession) -> str:
        return "draggan-photo" if sess.photo is not None else f"draggan-seed{sess.seed}"

    def method_choices(self, sess: EditSession | None) -> tuple[list, str]:
        """The Method radio's choices for the session's model, and a line about Auto."""
        has = sess is not None and sess.editor.auto is not None
        methods = [m for m in UI_METHODS if m in available_methods(has)]
        note = "" if has else f"Auto is off: {NO_PREDICTOR}."
        return [(LABELS[m], m) for m in methods], note


# ----------------------------------------------------------------------------
# Sections. Each builds its components and wires its events; they share `ui` (a dict of components).

def model_section(ctx: AppContext, ui: dict) -> None:
    public = ctx.settings.public
    choices = [(e.label, e.name) for e in catalog.list_models()]
    if ctx.default_model not in [c[1] for c in choices]:
        choices.insert(0, (ctx.model_label(ctx.default_model), ctx.default_model))
    with gr.Group():
        ui["model"] = gr.Dropdown(choices, value=ctx.default_model, label="Model", allow_custom_value=True,  # refused by our policy, one message
                                  info="A model from the list" if public else
                                  "A catalog model, or type a Hub repo_id:filename or a local .pkl/.safetensors path")
        with gr.Row(equal_height=True):
            ui["seed"] = gr.Number(0, label="Seed", info=f"0 to {SEED_MAX}", scale=3)
            dice = gr.Button("Random", scale=1, min_width=90)  # no emoji: a browser without an emoji font shows a box
        ui["psi"] = BoundedSlider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")  # checked by check_psi
        ui["latent_space"] = gr.Radio([("W", "w"), ("W+", "w+")], value="w+", label="Latent space")
        generate = gr.Button("Generate", variant="primary", elem_id="generate")

    inputs = [ui["model"], ui["seed"], ui["psi"], ui["latent_space"]]

    def generate_image(model: str, seed: float, psi: float, latent_space: str, request: gr.Request,
                       progress=gr.Progress()):
        """Generate the image for a seed: model (catalog name; Hub `repo_id:filename` or a local path where the
        server allows custom models), seed (0 to 2^32-1), truncation psi (0 to 1), latent space ('w' or 'w+').
        Returns the view, the status line and a hint."""
        model = (model or ctx.default_model).strip()
        progress(0, desc=f"Loading {ctx.model_label(model)}")
        sess = ctx.sessions.new_session(request.session_hash, model, seed, psi, latent_space,
                                        client=ctx.client(request))
        return ctx.view(sess), ctx.status(sess), HELP_TEXT

    def on_load(model: str, seed: float, psi: float, latent_space: str, request: gr.Request):
        """The first image of a new tab; if the model cannot be loaded, say so in the status line."""
        try:
            return generate_image(model, seed, psi, latent_space, request, lambda *a, **k: None)
        except UserError as e:
            return None, f"⚠️ {e}  \nDevice **{ctx.device_label}**: pick another model and press Generate.", ""

    outputs = [ui["view"], ui["status"], ui["info"]]
    ui["new_image_events"].append(generate.click(keep_on_error(3, 2)(generate_image), inputs, outputs,
                                         api_visibility="private", concurrency_id="render", concurrency_limit=2))
    ui["new_image_events"].append(dice.click(lambda: random.randint(0, SEED_MAX), None, ui["seed"], api_visibility="private",
                                     queue=False)
                          .then(keep_on_error(3, 2)(generate_image), inputs, outputs, api_visibility="private",
                                concurrency_id="render"))
    ui["new_image_events"].append(ui["demo"].load(on_load, inputs, outputs, api_visibility="private",
                                          concurrency_id="render"))
    ui["api"]("generate", user_errors(generate_image), inputs, outputs, concurrency_id="render")
    ctx.on_load = on_load  # for tests: the first-load path without a browser


def drag_section(ctx: AppContext, ui: dict) -> None:
    """Drag, Stop, Undo and the point buttons, under the image; the Method choice."""
    with gr.Row():
        drag_btn = gr.Button("Drag", variant="primary", elem_id="drag", scale=2)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
    with gr.Row():
        undo_btn = gr.Button("Undo drag", size="sm")
        reset_btn = gr.Button("Reset image", size="sm")
        undo_point_btn = gr.Button("Undo point", size="sm")
        clear_points_btn = gr.Button("Clear points", size="sm", elem_id="clear_points")
    ui["method"] = gr.Radio([(LABELS[m], m) for m in UI_METHODS[:1]], value="draggan", label="Method",
                            elem_id="method")
    ui["method_note"] = gr.Markdown("", elem_id="method_note")
    view, info = ui["view"], ui["info"]

    def drag_frames(handles: str, targets: str, values: dict[str, Any], request: gr.Request):
        sess = ctx.session(request)
        h, t = parse_points(handles, "handles"), parse_points(targets, "targets")
        if not h and not t:
            h, t = sess.handles_xy, sess.targets_xy
        h, t = validate_points(h, t, sess.resolution)  # before any arithmetic on them
        cfg, method = drag_config(sess.model, values)
        asked = [[float(round(x)), float(round(y))] for x, y in h]
        # The drag runs in its own thread and the stream shows its newest frame: encoding and sending a
        # frame never holds up the next step.
        for frame in stream_newest(sess.run_drag(h, t, cfg, method), sess.stop):
            moved = [(i, a, b) for i, (a, b) in enumerate(zip(asked, frame.start_xy or asked)) if a != b]
            view = ctx.view(sess, frame)
            yield view if frame.done else InlineFrame(view), frame_text(frame, moved), frame_json(frame, moved)

    P = inspect.Parameter
    signature = inspect.Signature([P("handles", P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
                                   P("targets", P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
                                   *[P(n, P.POSITIONAL_OR_KEYWORD, default=None) for n in DRAG_CONTROLS],
                                   P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])

    def drag(*args, **kwargs):
        """Drag handles to targets, streaming frames at the frame rate: handles and targets are JSON lists of
        [x, y] image pixels (both empty: the points clicked in the UI); method: draggan, straightforward, auto,
        auto-refine. Yields the view, a progress line and the frame as JSON (step, handles, targets, distances,
        mean_distance, ms_per_step, done, reason, nearest_moved). Views before the last come inline as JPEG data
        URLs ({"url": "data:image/jpeg;base64,..."}); the last view is a file (PNG)."""
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = {n: bound.arguments[n] for n in DRAG_CONTROLS}
        yield from drag_frames(bound.arguments["handles"], bound.arguments["targets"], values,
                               bound.arguments["request"])

    drag.__signature__ = signature  # Gradio reads the parameters (and finds the request) from these
    drag.__annotations__ = {"handles": str, "targets": str, "request": gr.Request}

    def wire_drag() -> None:  # once every control exists (the settings are built after this section)
        inputs = [ui["handles"], ui["targets"], *[ui[n] for n in DRAG_CONTROLS]]
        outputs = [view, info, ui["frame"]]
        drag_kw = dict(concurrency_id="drag", concurrency_limit=None, show_progress="minimal")
        drag_btn.click(keep_on_error(3, 1)(drag), inputs, outputs, api_visibility="private", **drag_kw) \
            .then(**ui["refresh_mask"])
        ui["api"]("drag", user_errors(drag), inputs, outputs, **drag_kw)

    ui["wire_later"].append(wire_drag)

    history_events(ctx, ui, stop_btn, undo_btn, reset_btn)
    points_section(ctx, ui, undo_point_btn, clear_points_btn)


def history_events(ctx: AppContext, ui: dict, stop_btn: gr.Button, undo_btn: gr.Button, reset_btn: gr.Button) -> None:
    """Stop (never waits behind anything), Undo drag and Reset image."""
    view, info = ui["view"], ui["info"]

    def stop(request: gr.Request) -> None:
        """Stop this session's drag before its next step (also one still waiting to start)."""
        if ctx.has_session(request):
            ctx.session(request).stop()

    def undo(request: gr.Request):
        """Undo the last drag (or reset)."""
        sess = ctx.session(request)
        text = "Undone." if sess.undo() else "Nothing to undo."
        return ctx.view(sess), text

    def reset(request: gr.Request):
        """Back to the generated image (undoable), keeping the points."""
        sess = ctx.session(request)
        sess.reset()
        return ctx.view(sess), "Back to the generated image (Undo drag brings the edit back)."

    light = dict(concurrency_limit=None)
    stop_btn.click(stop, None, None, api_name="stop", show_progress="hidden", queue=False)
    for btn, fn, name in ((undo_btn, undo, "undo"), (reset_btn, reset, "reset")):
        btn.click(keep_on_error(2, 1)(fn), None, [view, info], api_visibility="private", **light) \
            .then(**ui["refresh_mask"])
        ui["api"](name, user_errors(fn), None, [view, info], **light)


def points_section(ctx: AppContext, ui: dict, undo_point_btn: gr.Button, clear_points_btn: gr.Button) -> None:
    """Clicks on the view become points; Undo point, Clear points. In order, one at a time per session."""
    view, info = ui["view"], ui["info"]

    def point_handler(change: Callable[[EditSession], Any]) -> Callable:
        def handler(request: gr.Request):
            sess = ctx.session(request)
            change(sess)
            return ctx.view(sess), ctx.points_text(sess)
        return keep_on_error(2, 1)(handler)

    ordered = dict(concurrency_limit=1, concurrency_id="points", show_progress="hidden", api_visibility="private")

    def click(evt: gr.SelectData, request: gr.Request):
        sess = ctx.session(request)
        sess.add_point(view_to_image_xy(evt.index, sess.resolution))
        return ctx.view(sess), ctx.points_text(sess)

    view.select(keep_on_error(2, 1)(click), None, [view, info], trigger_mode="multiple", **ordered)
    undo_point_btn.click(point_handler(lambda s: s.undo_point()), None, [view, info], **ordered)
    clear_points_btn.click(point_handler(lambda s: s.clear_points()), None, [view, info], **ordered)


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


def control_row(ctx: AppContext, ui: dict, name: str, value: Any) -> None:
    """The component of DRAG_CONTROLS[name] (into ui[name]), with a ↺ that returns to the model's default."""
    c = DRAG_CONTROLS[name]
    with gr.Row(equal_height=True):
        if c.kind == "slider":
            ui[name] = BoundedSlider(c.minimum, c.maximum, value=value, step=c.step, label=c.label, info=c.info,
                                 buttons=[], scale=8, elem_id=f"ctl_{name}")
        elif c.kind == "checkbox":
            ui[name] = gr.Checkbox(value, label=c.label, elem_id=f"ctl_{name}")
        else:
            ui[name] = gr.Radio(list(c.choices), value=value, label=c.label, elem_id=f"ctl_{name}")
        if not c.reset:
            return
        btn = gr.Button("↺", size="sm", scale=1, min_width=40, elem_classes=["reset-btn"], elem_id=f"reset_{name}")

    def model_default(request: gr.Request):
        model = ctx.session(request).model if ctx.has_session(request) else ctx.default_model
        return control_defaults(model)[name]

    btn.click(model_default, None, ui[name], api_visibility="private", queue=False, show_progress="hidden")


def settings_section(ctx: AppContext, ui: dict, start: dict[str, Any]) -> None:
    """The drag settings from DRAG_CONTROLS, each with a ↺ reset to the current model's default."""
    for name, c in DRAG_CONTROLS.items():
        if c.section == "main":
            control_row(ctx, ui, name, start[name])
    defaults_btn = gr.Button("All settings: this model's defaults", size="sm")
    with gr.Accordion("Advanced", open=False):
        for name, c in DRAG_CONTROLS.items():
            if c.section == "advanced":
                control_row(ctx, ui, name, start[name])
    settings = [ui[n] for n in DragConfig.MODEL_KEYS]

    def drag_defaults(request: gr.Request):
        """Drag settings suited to this session's model (its catalog drag_defaults, else the paper's):
        lr, r1, r2, r3, feature_block, max_steps."""
        model = ctx.session(request).model if ctx.has_session(request) else ctx.default_model
        d = control_defaults(model)
        return tuple(d[n] for n in DragConfig.MODEL_KEYS)

    defaults_btn.click(drag_defaults, None, settings, api_name="drag_defaults", concurrency_limit=None)


def mask_section(ctx: AppContext, ui: dict) -> None:
    ui["mask_editor"] = gr.ImageEditor(
        type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, format="png",
        brush=gr.Brush(colors=[("rgb(34, 197, 94)", 0.5)], color_mode="fixed"),
        label="Paint the area the drag may change", canvas_size=(VIEW_MIN_PX * 2, VIEW_MIN_PX * 2), height=520)
    with gr.Row():
        show_mask = gr.Checkbox(True, label="Show the mask on the image")
        clear_mask_btn = gr.Button("Clear mask", size="sm")
    control_row(ctx, ui, "lambda_mask", control_defaults(ctx.default_model)["lambda_mask"])  # the model's λ
    private = dict(api_visibility="private", show_progress="hidden")

    def editor_value(request: gr.Request):
        """The mask editor's content: the plain image (enlarged) with the current mask as its layer."""
        if not ctx.has_session(request):
            return gr.skip()
        sess = ctx.session(request)
        res = sess.resolution
        cache = ui["mask_editor"].GRADIO_CACHE  # the same picture as the view: see cached_png
        layers = [cached_png(mask_layer(sess.editable, res), cache)] if sess.editable is not None else []
        return {"background": cached_png(enlarge(sess.image(), view_scale(res)), cache), "layers": layers,
                "composite": None}

    def apply_mask(editor: dict | None, request: gr.Request):
        sess = ctx.session(request)
        layers = (editor or {}).get("layers") if isinstance(editor, dict) else None
        sess.set_mask(mask_from_layers(layers, sess.resolution))
        return ctx.view(sess), ctx.points_text(sess)

    def clear_mask(request: gr.Request):
        sess = ctx.session(request)
        sess.set_mask(None)
        return ctx.view(sess), editor_value(request)

    def set_show_mask(show: bool, request: gr.Request):
        sess = ctx.session(request)
        sess.show_mask = bool(show)
        return ctx.view(sess)

    ui["refresh_mask"] = dict(fn=editor_value, inputs=None, outputs=ui["mask_editor"], concurrency_limit=None,
                              **private)
    ui["mask_tab"].select(**ui["refresh_mask"])
    ui["mask_editor"].input(keep_on_error(2, 1)(apply_mask), ui["mask_editor"], [ui["view"], ui["info"]],
                            trigger_mode="always_last", concurrency_limit=1, concurrency_id="points", **private)
    clear_mask_btn.click(keep_on_error(2, None)(clear_mask), None, [ui["view"], ui["mask_editor"]],
                         concurrency_limit=1, concurrency_id="points", **private)
    show_mask.change(keep_on_error(1, None)(set_show_mask), show_mask, ui["view"], concurrency_limit=None, **private)


def photo_section(ctx: AppContext, ui: dict) -> None:
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

    def show_preview(path: str | None, crop_text: str, model: str):
        image, notes = preview_photo(ctx, path, crop_text, model)
        return image, notes, gr.Button(interactive=image is not None)

    def invert(photo: str | None, crop: str, preset: str, model: str, latent_space: str,
               request: gr.Request, progress=gr.Progress()):
        """Invert a photo into a model (PTI) and edit it. photo: an image file; crop: '' for the centre
        square, or 'x0,y0,x1,y1' in pixels of the upright photo; preset: 'fast' or 'paper'; model and
        latent_space as for /generate. Returns the view, the status line, a hint and a report."""
        if not photo:
            raise DragInputError("Upload a photo (JPEG, PNG or WebP) before pressing Invert")
        if preset not in ctx.presets:
            raise DragInputError(f"preset must be one of {', '.join(ctx.presets)}, got {str(preset)[:40]!r}")
        box = parse_crop(crop) if crop and crop.strip() else None
        model = (model or ctx.default_model).strip()
        last: dict[str, Any] = {}

        def on_step(stage: str, step: int, total: int, loss: float) -> None:
            last.update(stage=stage, step=step, total=total)
            progress((step, total), desc=STAGES[stage], unit="steps")

        progress(0, desc=f"Loading {ctx.model_label(model)}")
        try:
            sess, notes = ctx.sessions.invert_photo(request.session_hash, model, photo, ctx.presets[preset],
                                                    box, latent_space, on_step, client=ctx.client(request))
        except InversionCancelled:
            where = (f" while {STAGES[last['stage']].lower()} (step {last['step']} of {last['total']})"
                     if last else " before it started")
            return (*ctx.unchanged(request), f"Cancelled{where}: the image is as it was.")
        return ctx.view(sess), ctx.status(sess), HELP_TEXT, photo_report(sess, notes)

    def cancel_invert(request: gr.Request) -> None:
        """Cancel this session's inversion before its next step; the image stays as it was."""
        ctx.sessions.cancel_invert(request.session_hash)

    preview_event = dict(fn=show_preview, inputs=[photo_in, crop_in, ui["model"]], outputs=[preview, report, invert_btn],
                         trigger_mode="always_last", show_progress="hidden", api_visibility="private",
                         concurrency_limit=2, concurrency_id="render")
    photo_in.change(**preview_event)
    crop_in.change(**preview_event)
    outputs = [ui["view"], ui["status"], ui["info"], report]
    inputs = [photo_in, crop_in, preset_in, ui["model"], ui["latent_space"]]
    heavy = dict(concurrency_id="drag", concurrency_limit=None)
    def arm_invert(request: gr.Request) -> None:
        ctx.sessions.arm_invert(request.session_hash)  # so a Cancel while it waits for the device stops it

    ui["new_image_events"].append(
        invert_btn.click(arm_invert, None, None, queue=False, api_visibility="private")
        .then(keep_on_error(4, 3)(invert), inputs, outputs, api_visibility="private", **heavy))
    ui["api"]("invert", user_errors(invert), inputs, outputs, **heavy)
    cancel_btn.click(cancel_invert, None, None, api_name="cancel_invert", show_progress="hidden", queue=False)
    embedding_events(ctx, ui, save_btn, load_btn, embedding_file, outputs)


def embedding_events(ctx: AppContext, ui: dict, save_btn: gr.Button, load_btn: gr.UploadButton,
                     embedding_file: gr.File, outputs: list) -> None:
    """Save embedding / Load embedding: a photo session to a file and back."""
    def save_embedding(request: gr.Request) -> str:
        """This session's photo as an embedding file (.safetensors), for /load_embedding or `draggan drag`."""
        return str(ctx.sessions.save_photo(request.session_hash))

    def load_embedding(embedding: str | None, latent_space: str, request: gr.Request, progress=gr.Progress()):
        """Edit the photo of an embedding file (from Save embedding or `python -m draggan invert`).
        Returns the view, the status line, a hint and a report."""
        if not embedding:
            raise DragInputError("Choose an embedding file (.safetensors) to load")
        progress(0, desc="Loading the embedding")
        sess = ctx.sessions.load_photo(request.session_hash, embedding, latent_space, client=ctx.client(request))
        return ctx.view(sess), ctx.status(sess), HELP_TEXT, photo_report(sess, [])

    save_btn.click(keep_on_error(1, None)(save_embedding), None, embedding_file, api_visibility="private",
                   concurrency_limit=None).success(lambda: gr.File(visible=True), None, embedding_file,
                                                   api_visibility="private", queue=False)
    ui["api"]("save_embedding", user_errors(save_embedding), None, embedding_file, concurrency_limit=None)
    heavy = dict(concurrency_id="drag", concurrency_limit=None)
    ui["new_image_events"].append(load_btn.upload(keep_on_error(4, 3)(load_embedding), [load_btn, ui["latent_space"]],
                                                  outputs, api_visibility="private", **heavy))
    ui["api"]("load_embedding", user_errors(load_embedding), [ui["embedding_in"], ui["latent_space"]], outputs, **heavy)


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


def photo_report(sess: EditSession, notes: list[str]) -> str:
    p, t = sess.photo.projection, sess.photo.tuning
    text = (f"Projected in {p.steps} steps (PSNR {p.psnr_before:.1f} → {p.psnr_after:.1f} dB), tuned in "
            f"{t.steps} (→ **{t.psnr_after:.1f} dB**), {p.seconds + t.seconds:.0f} s. Drag it as any image.")
    return "  \n".join([text, *notes])


def save_section(ctx: AppContext, ui: dict) -> None:
    with gr.Accordion("Save", open=False):
        with gr.Row():
            save_btn = gr.Button("Save image (PNG)", size="sm")
            export_btn = gr.Button("Export drag as video", size="sm", elem_id="export_video")
        with gr.Row():
            video_format = gr.Radio(["mp4", "webm", "gif"], value="mp4", label="Video format")
            overlay = gr.Checkbox(True, label="Draw points in the video")
        download = gr.File(label="Download", interactive=False, elem_id="download")
        # The exported MP4/WebM, played in the page (a GIF shows in Download only).
        played = gr.Video(label="The drag", interactive=False, visible=False, elem_id="drag_video", buttons=[])

    def save_image(request: gr.Request) -> str:
        """The current image as a PNG at the model's resolution."""
        sess = ctx.session(request)
        path = sess.workdir() / f"{ctx.file_stem(sess)}.png"
        Image.fromarray(sess.image()).save(path)
        return str(path)

    def export_video(video_format: str, overlay: bool, request: gr.Request) -> str:
        """The last drag as a video: video_format 'mp4' (H.264), 'webm' (VP9) or 'gif'; overlay draws the points."""
        if video_format not in ("mp4", "webm", "gif"):
            raise DragInputError(f"video_format must be mp4, webm or gif, got {str(video_format)[:20]!r}")
        sess = ctx.session(request)
        path = sess.workdir() / f"{ctx.file_stem(sess)}.{video_format}"
        return str(sess.editor.export_video(path, overlay=bool(overlay)))

    def export_and_play(video_format: str, overlay: bool, request: gr.Request):
        path = export_video(video_format, overlay, request)
        playable = video_format in ("mp4", "webm")
        return path, gr.Video(value=path if playable else None, visible=playable)

    light = dict(concurrency_limit=None)
    save_btn.click(keep_on_error(1, None)(save_image), None, download, api_visibility="private", **light)
    ui["api"]("save_image", user_errors(save_image), None, download, **light)
    export_btn.click(keep_on_error(2, None)(export_and_play), [video_format, overlay], [download, played],
                     api_visibility="private", concurrency_limit=2, concurrency_id="render")
    ui["api"]("export_video", user_errors(export_video), [video_format, overlay], download,
              concurrency_limit=2, concurrency_id="render")


class ExperimentStopped(Exception):
    """Raised inside a running experiment when its session pressed Stop."""


def experiment_section(ctx: AppContext, ui: dict) -> None:
    """The Qt reproduction's Experiment panel: a single-pair test on the current image and multi-pair runs."""
    from draggan.experiments.detectors import get_detector

    max_pairs = PUBLIC_EXPERIMENT_PAIRS if ctx.settings.public else 200
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Single pair**: the current image's landmarks go to another seed's landmarks.")
            target_seed = gr.Number(1, label="Target seed")
            with gr.Row():
                points = gr.Radio([1, 5, 68], value=5, label="Landmarks", info="68 needs the dlib detector")
                detector = gr.Radio([("Toy faces (exact)", "toy"), ("dlib (real faces)", "dlib")], value="toy",
                                    label="Detector")
            test_btn = gr.Button("Test", variant="primary", elem_id="exp_test")
            single_view = ViewImage(type="numpy", interactive=False, label="Landed (red) · goal (blue)",
                                   buttons=["download"])
            single_text = gr.Markdown("")
        with gr.Column():
            gr.Markdown(f"**Multi-pair test** on this model (at most {max_pairs} pairs here).")
            pairs = gr.Slider(1, max_pairs, value=min(4, max_pairs), step=1, label="Pairs")
            max_steps = gr.Slider(10, 1000, value=200, step=10, label="Max steps per pair")
            block = gr.Radio([("Model's", 0), 4, 5, 6, 7], value=0, label="Latent block (features)")
            methods = gr.CheckboxGroup([(LABELS[m], m) for m in METHOD_NAMES], value=["draggan"], label="Methods")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", elem_id="exp_run")
                stop_btn = gr.Button("Stop", variant="stop")
            progress_md = gr.Markdown("", elem_id="exp_progress")
            table = gr.Dataframe(headers=EXPERIMENT_COLUMNS, label="Results", interactive=False, elem_id="exp_table")
            plot = gr.Image(type="filepath", label="Mean distance decay", show_label=False, interactive=False)
            result_file = gr.File(label="Results (JSON, CSV)", interactive=False, file_count="multiple")
    stops: dict[str, Any] = {}

    def single(seed: float, n_points: int, detector_name: str, request: gr.Request):
        yield from single_pair_test(ctx, ctx.session(request), get_detector(detector_name), int(seed), int(n_points))

    def run(protocol: str, pairs: float, max_steps: float, points: int, feature_block: int, methods,
            request: gr.Request):
        """Run an experiment on the session's model: protocol 'landmarks' (toy-faces detector); pairs, max steps
        per pair, points (1 or 5), feature_block (0: the model's), methods (a list or 'a,b'). Streams a
        progress line, the results table, the JSON/CSV files and the decay plot."""
        sess = ctx.session(request)
        if protocol != "landmarks":
            raise DragInputError("the app runs the 'landmarks' protocol; the others: `python -m draggan experiment`")
        n_pairs = _whole(pairs, "pairs")
        if not 1 <= n_pairs <= max_pairs:
            raise DragInputError(f"pairs must be from 1 to {max_pairs} on this server")
        names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods or [])]
        if not names or any(m not in METHOD_NAMES for m in names):
            raise DragInputError(f"methods: one or more of {', '.join(METHOD_NAMES)}")
        stop = stops[request.session_hash] = threading.Event()
        yield from _experiment_stream(ctx, sess, names, n_pairs, _whole(max_steps, "max_steps"), int(points),
                                      int(feature_block) or None, stop)

    def stop(request: gr.Request) -> None:
        if request.session_hash in stops:
            stops[request.session_hash].set()

    test_btn.click(keep_on_error(2, 1)(single), [target_seed, points, detector], [single_view, single_text],
                   api_visibility="private", concurrency_id="drag", concurrency_limit=None)
    inputs = [ui["protocol"], pairs, max_steps, points, block, methods]
    outputs = [progress_md, table, result_file, plot]
    run_btn.click(keep_on_error(4, 0)(run), inputs, outputs, api_visibility="private", concurrency_id="drag",
                  concurrency_limit=None)
    ui["api"]("experiment", user_errors(run), inputs, outputs, concurrency_id="drag", concurrency_limit=None)
    stop_btn.click(stop, None, None, api_name="stop_experiment", queue=False)


def single_pair_test(ctx: AppContext, sess: EditSession, det, seed: int, n_points: int) -> Iterator[tuple]:
    """The Qt panel's single-pair test: the current image's landmarks dragged to those of another seed's image;
    streams the drag, then shows where the landmarks landed (red) and where they should be (blue)."""
    from draggan.editor import seed_latent
    from draggan.engine import render

    G = sess.editor.G
    goal = det.detect(sess.compute.call(lambda: render(G, seed_latent(G, int(seed), sess.psi or 0.7), "const")),
                      int(n_points))
    start = det.detect(sess.image(), int(n_points))
    if not (np.isfinite(goal).all() and np.isfinite(start).all()):
        raise DragInputError("The detector did not find every landmark on both images: try another target seed")
    cfg, _ = drag_config(sess.model, {"frame_rate": FRAME_RATE})
    for frame in sess.run_drag(start.tolist(), goal.tolist(), cfg):
        yield ctx.view(sess, frame), frame_text(frame, [])
    found = det.detect(sess.image(), int(n_points))
    md = float(np.linalg.norm(found - goal, axis=1).mean()) if np.isfinite(found).all() else float("nan")
    before = float(np.linalg.norm(start - goal, axis=1).mean())
    yield (draw_points(sess.image(), found[np.isfinite(found).all(1)].tolist(), goal.tolist(),
                       scale=view_scale(sess.resolution)),
           f"Mean distance **{before:.2f} → {md:.2f} px** after {frame.step} steps ({frame.reason}).")


def rounded(value: Any, digits: int) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) and math.isfinite(value) else value


def _experiment_stream(ctx: AppContext, sess: EditSession, methods: list[str], n_pairs: int, steps: int,
                       n_points: int, feature_block: int | None, stop) -> Iterator[tuple]:
    """Run the landmark protocol in a thread (on a device slot), yielding a progress line twice a second."""
    import queue

    from draggan.experiments.decay import DecaySettings, plot_decay, run_decay
    from draggan.experiments.detectors import get_detector
    from draggan.experiments.landmarks import LandmarkSettings, run_landmarks
    from draggan.experiments.pairs import landmark_pairs
    from draggan.experiments.workbench import Bench, BenchSpec

    bench = Bench(sess.editor.G, get_detector("toy"), sess.editor.auto, BenchSpec(sess.model))
    settings = LandmarkSettings(max_steps=steps, feature_block=feature_block, points=n_points)
    total = n_pairs * len(methods)
    events: queue.Queue = queue.Queue()

    def progress(label: str) -> None:
        events.put(label)
        if stop.is_set():
            raise ExperimentStopped

    def work() -> None:
        if not ctx.sessions.slots.acquire(stop):
            events.put(ExperimentStopped())
            return
        try:
            pairs = landmark_pairs(bench.G, bench.detector, n_pairs, n_points, settings.seed, settings.psi)
            result = run_landmarks(bench, methods, settings, pairs, progress=progress)
            decay = run_decay(bench, methods, DecaySettings(max_steps=steps, feature_block=feature_block,
                                                            points=n_points), pairs[:1])
            events.put((result, decay))
        except Exception as e:  # reported to the user below
            events.put(e)
        finally:
            ctx.sessions.slots.release()

    threading.Thread(target=work, daemon=True).start()
    done, t0 = 0, time.monotonic()
    while True:
        try:
            item = events.get(timeout=0.5)
        except queue.Empty:
            yield f"Running: {done} of {total} edits · {time.monotonic() - t0:.0f} s", gr.skip(), gr.skip(), gr.skip()
            continue
        if isinstance(item, str):
            done += 1
            continue
        if isinstance(item, ExperimentStopped):
            yield f"Stopped after {done} of {total} edits.", gr.skip(), gr.skip(), gr.skip()
            return
        if isinstance(item, UserError):
            raise item
        if isinstance(item, Exception):
            raise item
        result, decay = item
        folder = sess.workdir()
        result.write_json(folder / "experiment.json")
        result.write_csv(folder / "experiment.csv")
        note = plot_decay(decay, folder / "decay.png")
        rows = [[name, *(rounded(s.get(k), digits) for k, digits in
                         (("md_before", 2), ("md_after", 2), ("success_rate", 2), ("steps", 1),
                          ("seconds_per_edit", 3)))]
                for name, s in result.methods.items()]  # as a person reads them; the files keep every digit
        import pandas as pd
        frame = pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)
        yield (f"Done: {total} edits in {time.monotonic() - t0:.0f} s." + (f" {note}" if note else ""), frame,
               [str(folder / "experiment.json"), str(folder / "experiment.csv")],
               str(folder / "decay.png") if (folder / "decay.png").exists() else None)
        return


# ----------------------------------------------------------------------------
# The whole app.

@dataclasses.dataclass
class BuiltApp:
    """What build_demo makes: the Blocks to launch and the context its handlers share (for tests and scripts)."""
    demo: gr.Blocks
    ctx: AppContext
    components: dict[str, Any]


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def follow_model(ctx: AppContext, applied: str | None, request: gr.Request):
    """After a new image: if its model is not the one the controls were set for, set them to its defaults;
    always offer the methods its model can run. Returns the model, the resettable controls, method, note."""
    names = [n for n, c in DRAG_CONTROLS.items() if c.reset]
    if not ctx.has_session(request):
        return _skips(len(names) + 3)
    sess = ctx.session(request)
    choices, note = ctx.method_choices(sess)
    method = gr.Radio(choices=choices, value="draggan")
    if sess.model == applied:
        return (*_skips(len(names) + 1), method, note)
    d = control_defaults(sess.model)
    return (sess.model, *[d[n] for n in names], method, note)


def build_demo(model: str | None = None, device: str = "auto", *, perceptual_loader: PerceptualLoader | None = None,
               pti_presets: dict[str, PTIPreset] | None = None, **settings_kwargs: Any) -> BuiltApp:
    """The app. model: default model spec (None: the catalog's default); device: auto, cpu, cuda or mps;
    settings_kwargs: the other ServerSettings fields (public=, max_sessions=, concurrency=, max_photos=, ...);
    perceptual_loader: device -> PerceptualDistance (default: pti.load_perceptual; tests pass a tiny one);
    pti_presets: the inversion presets offered, by name (default: pti.PRESETS)."""
    settings = ServerSettings(model=model, device=device, **settings_kwargs)
    dev = resolve_device(settings.device)
    default_model = settings.model or catalog.default_model()
    from stylegan2.checkpoints import load_generator

    def load(spec: str, device: str):
        return load_generator(spec, device, allow_custom=not settings.public)

    sessions = SessionManager(device=str(dev), load=load, max_sessions=settings.max_sessions,
                              ttl_s=settings.session_ttl_s, perceptual_loader=perceptual_loader,
                              max_photos=settings.max_photos, max_per_client=settings.max_per_client,
                              device_slots=settings.concurrency, runner=device_drag, compute=ComputeThread())
    ctx = AppContext(sessions, settings, default_model, device_label(dev), pti_presets)
    start = control_defaults(default_model)
    ui: dict[str, Any] = {"new_image_events": [], "wire_later": []}

    def api(name: str, fn: Callable, inputs, outputs, **kwargs) -> None:
        """An API endpoint that reports bad input as an error (the UI's own events keep the image instead)."""
        trigger = gr.Button(visible=False)
        trigger.click(fn, inputs, outputs, api_name=name, **kwargs)

    ui["api"] = api
    with gr.Blocks(title="DragGAN", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        ui["demo"] = demo
        gr.Markdown("# DragGAN\nDrag points on a generated image (or your photo); the hints under the image say "
                    "what to click next. Paint a mask (Mask tab) to keep the rest of the image fixed.")
        ui["status"] = gr.Markdown(f"Device **{ctx.device_label}** · model **{ctx.model_label(default_model)}**: "
                                   "loading…", elem_id="status")
        ui["handles"] = gr.Textbox("", visible=False, label="handles")  # the API's points; the UI drags the clicks
        ui["targets"] = gr.Textbox("", visible=False, label="targets")
        ui["frame"] = gr.JSON(visible=False, label="frame")
        ui["protocol"] = gr.Textbox("landmarks", visible=False, label="protocol")
        ui["embedding_in"] = gr.File(visible=False, label="file")
        applied = gr.State(default_model)  # the model the controls were last set for
        with gr.Tabs():
            with gr.Tab("Edit"):
                with gr.Row():
                    with gr.Column(scale=3, min_width=300):  # first: at the top on a phone
                        ui["info"] = gr.Markdown(HELP_TEXT, elem_id="info", render=False)  # placed under the image
                        with gr.Tabs():
                            with gr.Tab("Points"):
                                ui["view"] = ViewImage(type="numpy", interactive=False, show_label=False,
                                                       buttons=["fullscreen"], elem_id="view", format="png")
                            with gr.Tab("Mask") as ui["mask_tab"]:
                                mask_section(ctx, ui)
                        ui["info"].render()
                        drag_section(ctx, ui)
                    with gr.Column(scale=2, min_width=300):
                        model_section(ctx, ui)
                        settings_section(ctx, ui, start)
                        photo_section(ctx, ui)
                        save_section(ctx, ui)
            with gr.Tab("Experiment"):
                experiment_section(ctx, ui)
        for wire in ui["wire_later"]:
            wire()
        resettable = [ui[n] for n, c in DRAG_CONTROLS.items() if c.reset]
        def follow(applied_model: str | None, request: gr.Request):
            return follow_model(ctx, applied_model, request)

        def unload(request: gr.Request) -> None:
            sessions.close(request.session_hash)

        follow = dict(fn=follow, inputs=applied,
                      outputs=[applied, *resettable, ui["method"], ui["method_note"]], show_progress="hidden",
                      api_visibility="private", concurrency_limit=None)
        for event in ui["new_image_events"]:
            event.then(**ui["refresh_mask"])
            event.success(**follow)
        demo.unload(unload)
    demo.queue(max_size=64)
    return BuiltApp(demo, ctx, ui)


def theme() -> gr.themes.Base:
    """Gradio's Soft theme, with checkboxes you can see: its checkbox border is neutral-100 on a near-white
    field (contrast 1.05), so "Nearest" read as plain text; neutral-500 gives 4.6, above the 3 that WCAG asks
    of a control's outline."""
    return gr.themes.Soft().set(checkbox_border_color="*neutral_500")


def quiet_queue(demo: gr.Blocks) -> None:
    """Have Gradio's queue look for new events every QUEUE_POLL_S instead of every millisecond. Its loop
    wakes that often even when idle (9% of a core on our 2-core test machine, all of it taken from a running
    drag's steps); 10 ms more before an event starts is not felt."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and isinstance(getattr(queue, "sleep_when_free", None), (int, float)):
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)


def gradio_warning(version: str = gr.__version__) -> str | None:
    """A line for a Gradio older than MIN_GRADIO, else None. Older Gradio 6 releases break the page in ways our
    tests catch (6.0: it never shows the first image; 6.16: six app and browser tests fail; 6.25-6.27: one)."""
    have = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if have >= tuple(int(n) for n in MIN_GRADIO.split(".")):
        return None
    return (f"Gradio {version} is older than {MIN_GRADIO}, the oldest this app is tested with; parts of the page "
            f"may not work: pip install -U 'gradio>={MIN_GRADIO},<7'")


def launch(built: BuiltApp, host: str | None = None, port: int | None = None, share: bool = False,
           **kwargs) -> Any:
    """Launch with the app's look (Gradio 6 takes theme and css at launch). host/port None: Gradio's
    defaults or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    if (warning := gradio_warning()) is not None:
        print(f"Warning: {warning}", file=sys.stderr)
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    quiet_queue(built.demo)
    return built.demo.launch(server_name=host, server_port=port, share=share, css=CSS, theme=theme(),
                             ssr_mode=False, **kwargs)


def is_public(host: str | None, share: bool, flag_public: bool, flag_trusted: bool) -> bool:
    """Public unless trusted: forced by --public, else whenever the app listens beyond loopback or shares a link."""
    if flag_public:
        return True
    if flag_trusted:
        return False
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return share or not loopback or bool(os.environ.get("SPACE_ID"))


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    flag = lambda name: env(name, "").strip().lower() in ("1", "true", "yes")  # noqa: E731
    parser = argparse.ArgumentParser(description="The DragGAN web app")
    parser.add_argument("--model", default=env("DRAGGAN_MODEL"),
                        help="default model: catalog name (or, on a trusted server, a Hub repo_id:filename or a local "
                             ".pkl/.safetensors path) (env DRAGGAN_MODEL; default: the catalog's first model here)")
    parser.add_argument("--device", default=env("DRAGGAN_DEVICE", "auto"),
                        help="auto, cpu, cuda or mps (env DRAGGAN_DEVICE; default auto)")
    parser.add_argument("--host", default=None, help="address to listen on (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (env GRADIO_SERVER_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (public mode)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--public", action="store_true", default=flag("DRAGGAN_PUBLIC"),
                      help="catalog models only, bounded work (env DRAGGAN_PUBLIC=1; the default beyond loopback)")
    mode.add_argument("--trusted", action="store_true", default=flag("DRAGGAN_TRUSTED"),
                      help="allow local paths and any Hub file as models, even when listening beyond loopback "
                           "(env DRAGGAN_TRUSTED=1): only for people you trust")
    parser.add_argument("--max-sessions", type=int, default=int(env("DRAGGAN_MAX_SESSIONS", "32")),
                        help="live sessions kept; the least recently used idle one goes first (env DRAGGAN_MAX_SESSIONS)")
    parser.add_argument("--session-ttl", type=float, default=float(env("DRAGGAN_SESSION_TTL", "1800")),
                        help="seconds an idle session is kept (env DRAGGAN_SESSION_TTL)")
    parser.add_argument("--concurrency", type=int, default=int(env("DRAGGAN_CONCURRENCY", "1")),
                        help="drags/inversions/experiments run at once on the device (env DRAGGAN_CONCURRENCY)")
    parser.add_argument("--max-photos", type=int, default=int(env("DRAGGAN_MAX_PHOTOS", "4")),
                        help="sessions that may edit a photo (each holds its own tuned generator copy) at once "
                             "(env DRAGGAN_MAX_PHOTOS; default 4)")
    args = parser.parse_args(argv)
    public = is_public(args.host, args.share, args.public, args.trusted)
    try:
        built = build_demo(args.model, args.device, public=public, max_sessions=args.max_sessions,
                           session_ttl_s=args.session_ttl, concurrency=args.concurrency, max_photos=args.max_photos)
    except (ValueError, UserError) as e:  # a device that is not here, a model not allowed
        parser.error(str(e))
    launch(built, args.host, args.port, args.share, quiet=True, prevent_thread_lock=True)
    print(f"DragGAN ({'public' if public else 'trusted'} mode, {built.ctx.device_label}, model "
          f"{built.ctx.default_model}) at {built.demo.local_url}"
          + (f" and {built.demo.share_url}" if args.share else "  (add --share for a public link)"), flush=True)
    built.demo.block_thread()


if __name__ == "__main__":
    main()
