"""The DragGAN web app (Gradio 6): lays out the UI and forwards its events to `draggan.sessions`.

    python app.py [--model SPEC] [--device auto|cpu|cuda|mps] [--host H] [--port P] [--share]
                  [--max-sessions N] [--session-ttl S] [--concurrency N] [--max-photos N]

Each browser tab (and each `gradio_client.Client`) is one session, keyed by Gradio's
session hash: its own latent, points and mask over a generator shared by everyone.
Generate, Drag, Invert and Load embedding run in one queue group ("accelerator") so the
device is not oversubscribed.

Real photos ("Real photo" section): a photo is inverted into the chosen model with PTI; the
session then drags its own tuned copy of the generator (Reset returns to the inverted photo,
Generate goes back to the shared generator and frees the copy). At most `--max-photos`
sessions hold a copy at once; beyond that Invert says to try again later (see
`draggan.sessions` for the policy). The perceptual network loads on the first Invert.

The API (see the app's "Use via API" page); parameters with their defaults:
  /generate(model, seed=0, psi=0.7, latent_space="w+") -> view, status, hint
  /drag(handles="", targets="", lr, r1, r2, r3, nearest, max_steps, lambda_mask, feature_block,
        rows, frame_every, tracking) -> streams (view, progress line, frame JSON)
  /stop, /undo, /reset, /save_image -> PNG, /export_video(video_format="mp4", overlay=True) -> file
  /drag_defaults -> lr, r1, r2, r3, feature_block, max_steps suited to the session's model
  /invert(photo, crop="", preset="fast", model=<default>, latent_space="w+") -> view, status, hint, report;
      photo: an image file; crop: "" for the centre square or "x0,y0,x1,y1" in pixels of the
      upright photo; preset: "fast" or "paper". A cancelled inversion returns the unchanged
      image with a report that says so. /drag and the rest then work on the photo.
  /cancel_invert: stop this session's inversion before its next step
  /save_embedding -> .safetensors; /load_embedding(file, latent_space="w+") -> as /invert
Points are (x, y) image pixels everywhere; the view enlarges small images, and
`view_to_image_xy` is the one place clicks are converted.

Drag settings: the sliders start at the default model's `drag_defaults` (stylegan2/catalog.json)
and take a model's own whenever an image of another model appears. "Model's drag defaults"
sets them again; the sliders have no per-slider reset button because Gradio's returns to the
value the page opened with, whatever model is shown since.
"""
import argparse
import dataclasses
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
import torch
from PIL import Image

from draggan.draw import draw_mask, draw_points
from draggan.engine import DragConfig, DragFrame, DragInputError
from draggan.sessions import EditSession, PerceptualLoader, SessionManager, read_photo
from pti import PRESETS, ImageInputError, InversionCancelled, PTIPreset, parse_crop
from stylegan2 import catalog
from stylegan2.checkpoints import CheckpointError, resolve_device

DEFAULTS = DragConfig()
DRAG_SETTINGS = ("lr", "r1", "r2", "r3", "feature_block", "max_steps")  # the ones a model's drag_defaults set
VIEW_MIN_PX = 512                # small images are shown enlarged to at least this size
MAX_UPLOAD = "200mb"             # photos are refused above 40 MP anyway; a 1024-px model's embedding is ~120 MB
STAGES = {"project": "Projecting", "tune": "Tuning"}
GPU_GROUP = "accelerator"        # queue concurrency group of the events that run the generator
MASK_RGBA = (34, 197, 94, 128)   # how the editable area looks in the mask editor
SEED_MAX = 2**32 - 1             # numpy RandomState seeds, as the official app
DONE_TEXT = {"reached": "Reached the targets", "stopped": "Stopped", "max_steps": "Stopped at max steps"}
HELP_TEXT = ("Click a **handle** (red) and then its **target** (blue); add as many pairs as you like, "
             "then press **Drag**.")

CSS = """
#status p { margin: 0; }
#view img { image-rendering: pixelated; }
"""


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
    for layer in layers or []:
        layer = np.asarray(layer)
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(*layer.shape[:2], -1).max(-1)
        painted = alpha > 0 if painted is None else painted | (alpha > 0)
    if painted is None or not painted.any():
        return None
    # A pixel is editable when at least half of its view pixels were painted.
    small = cv2.resize(painted.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def mask_layer(editable: np.ndarray, resolution: int) -> np.ndarray:
    """Editable area [H, W] -> a view-size RGBA layer for the mask editor."""
    s = view_scale(resolution)
    big = np.kron(editable.astype(np.uint8), np.ones((s, s), np.uint8)).astype(bool)
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = MASK_RGBA
    return layer


def parse_points(text: str, name: str) -> list[list[float]]:
    """A JSON list of [x, y] pairs (the API's points); an empty string is no points."""
    if not text or not text.strip():
        return []
    try:
        points = json.loads(text)
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
            raise ValueError
        return [[float(p[0]), float(p[1])] for p in points]
    except (ValueError, TypeError):
        raise DragInputError(f"{name} must be a JSON list of [x, y] pairs, e.g. [[12, 30], [40, 8]]; got {text!r}") from None


def drag_settings(model: str) -> list[float]:
    """The DRAG_SETTINGS values for `model`: its catalog drag_defaults over DragConfig's."""
    cfg = dataclasses.replace(DEFAULTS, **catalog.drag_defaults(model))
    return [getattr(cfg, name) for name in DRAG_SETTINGS]


class _UserErrors:
    """Turns errors meant for the user into gr.Error, whose message reaches the browser and API clients."""

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, (DragInputError, CheckpointError, ImageInputError)):
            raise gr.Error(str(err), print_exception=False) from None
        return False


# ----------------------------------------------------------------------------
# Event handlers: each takes the request for its session key and returns component values.

class DragApp:
    """The app's event handlers over a SessionManager. Knows Gradio; knows no drag algorithm."""

    def __init__(self, sessions: SessionManager, default_model: str, device_label: str,
                 presets: dict[str, PTIPreset] | None = None):
        """presets: the inversion presets offered, by name (default: pti.PRESETS)."""
        self.sessions = sessions
        self.default_model = default_model
        self.device_label = device_label
        self.presets = dict(presets or PRESETS)

    def _session(self, request: gr.Request) -> EditSession:
        return self.sessions.get(request.session_hash)

    @staticmethod
    def _view(sess: EditSession, handles_xy=None, targets_xy=None, image=None) -> np.ndarray:
        return render_view(sess.image() if image is None else image,
                           sess.handles_xy if handles_xy is None else handles_xy,
                           sess.targets_xy if targets_xy is None else targets_xy,
                           sess.editable, sess.show_mask)

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
    def file_stem(sess: EditSession) -> str:
        return "draggan-photo" if sess.photo is not None else f"draggan-seed{sess.seed}"

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

    # -- model and image ---------------------------------------------------

    def generate(self, model: str, seed: float, psi: float, latent_space: str, request: gr.Request,
                 progress=gr.Progress(track_tqdm=True)):
        """Generate the image for a seed: model (catalog name, Hub `repo_id:filename`, or a local path),
        seed, truncation psi, latent space ('w' or 'w+'). Returns the view, the status line and a hint."""
        model = (model or self.default_model).strip()
        progress(0, desc=f"Loading {model}")
        with _UserErrors():
            sess = self.sessions.new_session(request.session_hash, model, int(seed or 0), float(psi), latent_space)
        return self._view(sess), self.status(sess), HELP_TEXT

    def on_load(self, model: str, seed: float, psi: float, latent_space: str, request: gr.Request,
                progress=gr.Progress(track_tqdm=True)):
        """The first image of a new tab; if the model cannot be loaded, say so in the status line."""
        try:
            return self.generate(model, seed, psi, latent_space, request, progress)
        except gr.Error as e:
            return None, f"⚠️ {e.message}  \nDevice **{self.device_label}**: pick another model and press Generate.", ""

    @staticmethod
    def random_seed() -> int:
        return random.randint(0, SEED_MAX)

    # -- drag settings per model --------------------------------------------

    def follow_model(self, applied: str | None, request: gr.Request):
        """After a new image: if its model is not the one the sliders were set for, set them to its defaults.

        applied: the model the sliders were last set for (a gr.State). Returns it and the DRAG_SETTINGS."""
        if request.session_hash not in self.sessions:
            return (gr.skip(),) * (1 + len(DRAG_SETTINGS))
        model = self._session(request).model
        if model == applied:
            return (gr.skip(),) * (1 + len(DRAG_SETTINGS))
        return (model, *drag_settings(model))

    def drag_defaults(self, request: gr.Request):
        """Drag settings suited to this session's model (its catalog drag_defaults, else the paper's):
        lr, r1, r2, r3, feature_block, max_steps."""
        model = self._session(request).model if request.session_hash in self.sessions else self.default_model
        return tuple(drag_settings(model))

    # -- real photos -------------------------------------------------------

    def preview_photo(self, photo: str | None, crop: str, model: str):
        """The square the inversion will use, at the model's resolution, with notes (or why it cannot be used)."""
        if not photo:
            return None, ""
        model = (model or self.default_model).strip()
        try:
            try:
                resolution = catalog.get_entry(model).resolution
            except KeyError:
                resolution = self.sessions.generator(model).img_resolution
            box = parse_crop(crop) if crop and crop.strip() else None
            image, notes = read_photo(photo, resolution, box)
        except (ImageInputError, DragInputError, CheckpointError) as e:
            return None, f"⚠️ {e}"
        return draw_points(image, [], [], scale=view_scale(resolution)), "  \n".join(notes)

    def arm_invert(self, request: gr.Request) -> None:
        self.sessions.arm_invert(request.session_hash)

    def invert(self, photo: str | None, crop: str, preset: str, model: str, latent_space: str,
               request: gr.Request, progress=gr.Progress()):
        """Invert a photo into a model (PTI) and edit it. photo: an image file; crop: '' for the centre
        square, or 'x0,y0,x1,y1' in pixels of the upright photo; preset: 'fast' or 'paper'; model and
        latent_space as for /generate. Returns the view, the status line, a hint and a report."""
        with _UserErrors():
            if not photo:
                raise DragInputError("Upload a photo (JPEG, PNG or WebP) before pressing Invert")
            if preset not in self.presets:
                raise DragInputError(f"preset must be one of {', '.join(self.presets)}, got {preset!r}")
            box = parse_crop(crop) if crop and crop.strip() else None
            model = (model or self.default_model).strip()
            last: dict[str, Any] = {}

            def report(stage: str, step: int, total: int, loss: float) -> None:
                last.update(stage=stage, step=step, total=total)
                progress((step, total), desc=STAGES[stage], unit="steps")

            progress(0, desc=f"Loading {model}")
            try:
                sess, notes = self.sessions.invert_photo(request.session_hash, model, photo, self.presets[preset],
                                                         box, latent_space, report)
            except InversionCancelled:
                where = (f" while {STAGES[last['stage']].lower()} (step {last['step']} of {last['total']})"
                         if last else " before it started")
                return (*self._unchanged(request), f"Cancelled{where}: the image is as it was.")
        return self._view(sess), self.status(sess), HELP_TEXT, self.photo_report(sess, notes)

    def _unchanged(self, request: gr.Request) -> tuple:
        """View, status and hint of the session as it is (None and a hint if it has no image)."""
        if request.session_hash not in self.sessions:
            return None, "No image yet: press Generate, or invert a photo.", HELP_TEXT
        sess = self._session(request)
        return self._view(sess), self.status(sess), self.points_text(sess)

    @staticmethod
    def photo_report(sess: EditSession, notes: list[str]) -> str:
        p, t = sess.photo.projection, sess.photo.tuning
        text = (f"Projected in {p.steps} steps (PSNR {p.psnr_before:.1f} → {p.psnr_after:.1f} dB), tuned in "
                f"{t.steps} (→ **{t.psnr_after:.1f} dB**), {p.seconds + t.seconds:.0f} s. Drag it as any image.")
        return "  \n".join([text, *notes])

    def cancel_invert(self, request: gr.Request) -> None:
        """Cancel this session's inversion before its next step; the image stays as it was."""
        self.sessions.cancel_invert(request.session_hash)

    def save_embedding(self, request: gr.Request) -> str:
        """This session's photo as an embedding file (.safetensors), for /load_embedding or `draggan drag`."""
        with _UserErrors():
            return str(self.sessions.save_photo(request.session_hash))

    def load_embedding(self, embedding: str | None, latent_space: str, request: gr.Request,
                       progress=gr.Progress()):
        """Edit the photo of an embedding file (from Save embedding or `python -m draggan invert`).
        Returns the view, the status line, a hint and a report."""
        with _UserErrors():
            if not embedding:
                raise DragInputError("Choose an embedding file (.safetensors) to load")
            progress(0, desc="Loading the embedding")
            sess = self.sessions.load_photo(request.session_hash, embedding, latent_space)
        return self._view(sess), self.status(sess), HELP_TEXT, self.photo_report(sess, [])

    # -- points ------------------------------------------------------------

    def click(self, evt: gr.SelectData, request: gr.Request):
        with _UserErrors():
            sess = self._session(request)
            sess.add_point(view_to_image_xy(evt.index, sess.resolution))
        return self._view(sess), self.points_text(sess)

    def undo_point(self, request: gr.Request):
        with _UserErrors():
            sess = self._session(request)
            sess.undo_point()
        return self._view(sess), self.points_text(sess)

    def clear_points(self, request: gr.Request):
        with _UserErrors():
            sess = self._session(request)
            sess.clear_points()
        return self._view(sess), self.points_text(sess)

    # -- drag --------------------------------------------------------------

    def arm(self, request: gr.Request) -> None:
        if request.session_hash in self.sessions:
            self.sessions.get(request.session_hash).arm()

    def drag(self, handles: str, targets: str, lr: float, r1: float, r2: float, r3: float, nearest: bool,
             max_steps: float, lambda_mask: float, feature_block: float, rows: float, frame_every: float,
             tracking: str, request: gr.Request):
        """Drag handles to targets, streaming a frame per step: handles and targets are JSON lists of
        [x, y] image pixels (both empty: the points clicked in the UI). Yields the view, a progress
        line and the frame as JSON (step, handles, targets, distances, mean_distance, ms_per_step,
        done, reason, nearest_moved)."""
        with _UserErrors():
            sess = self._session(request)
            h, t = parse_points(handles, "handles"), parse_points(targets, "targets")
            if not h and not t:
                h, t = sess.handles_xy, sess.targets_xy
            cfg = DragConfig(lr=float(lr), r1=float(r1), r2=float(r2), r3=float(r3), nearest=bool(nearest),
                             feature_block=int(feature_block), rows=int(rows), tracking=tracking,
                             lambda_mask=float(lambda_mask), max_steps=int(max_steps), frame_every=int(frame_every))
            asked = [[float(round(x)), float(round(y))] for x, y in h]
            moved = None
            for frame in sess.run_drag(h, t, cfg):
                if moved is None:  # the first frame shows where Nearest put the handles
                    moved = [(i, a, b) for i, (a, b) in enumerate(zip(asked, frame.handles_xy)) if a != b] \
                        if cfg.nearest else []
                yield (self._view(sess, frame.handles_xy, frame.targets_xy, frame.image),
                       self.frame_text(frame, moved), self.frame_json(frame, moved))

    @staticmethod
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

    @staticmethod
    def frame_json(frame: DragFrame, moved) -> dict[str, Any]:
        return {"step": frame.step, "handles": frame.handles_xy, "targets": frame.targets_xy,
                "distances": frame.distances, "mean_distance": frame.mean_distance,
                "ms_per_step": frame.ms, "done": frame.done, "reason": frame.reason,
                "nearest_moved": [{"handle": i + 1, "from": a, "to": b} for i, a, b in moved or []]}

    def stop(self, request: gr.Request) -> None:
        """Stop this session's drag before its next step."""
        if request.session_hash in self.sessions:
            self.sessions.get(request.session_hash).stop()

    def undo(self, request: gr.Request):
        """Undo the last drag (or reset)."""
        with _UserErrors():
            sess = self._session(request)
            text = "Undone." if sess.undo() else "Nothing to undo."
        return self._view(sess), text

    def reset(self, request: gr.Request):
        """Back to the generated image (undoable), keeping the points."""
        with _UserErrors():
            sess = self._session(request)
            sess.reset()
        return self._view(sess), "Back to the generated image (Undo drag brings the edit back)."

    # -- mask --------------------------------------------------------------

    def mask_editor_value(self, request: gr.Request):
        """The mask editor's content: the plain image (enlarged) with the current mask as its layer."""
        if request.session_hash not in self.sessions:
            return None
        sess = self._session(request)
        res = sess.resolution
        background = draw_points(sess.image(), [], [], scale=view_scale(res))
        layers = [mask_layer(sess.editable, res)] if sess.editable is not None else []
        return {"background": background, "layers": layers, "composite": None}

    def apply_mask(self, editor: dict | None, request: gr.Request):
        if request.session_hash not in self.sessions:
            return gr.skip()
        sess = self._session(request)
        with _UserErrors():
            sess.set_mask(mask_from_layers((editor or {}).get("layers"), sess.resolution))
        return self._view(sess)

    def clear_mask(self, request: gr.Request):
        with _UserErrors():
            sess = self._session(request)
            sess.set_mask(None)
        return self._view(sess), self.mask_editor_value(request)

    def set_show_mask(self, show: bool, request: gr.Request):
        if request.session_hash not in self.sessions:
            return gr.skip()
        sess = self._session(request)
        sess.show_mask = bool(show)
        return self._view(sess)

    # -- files -------------------------------------------------------------

    def save_image(self, request: gr.Request) -> str:
        """The current image as a PNG at the model's resolution."""
        with _UserErrors():
            sess = self._session(request)
            path = sess.workdir() / f"{self.file_stem(sess)}.png"
            Image.fromarray(sess.image()).save(path)
        return str(path)

    def export_video(self, video_format: str, overlay: bool, request: gr.Request) -> str:
        """The last drag as a video: video_format 'mp4' or 'gif'; overlay draws the points."""
        with _UserErrors():
            sess = self._session(request)
            if not sess.drag.last_frames:
                raise DragInputError("No drag to export yet: press Drag first")
            path = sess.workdir() / f"{self.file_stem(sess)}.{video_format}"
            sess.drag.export_video(path, overlay=bool(overlay))
        return str(path)

    def unload(self, request: gr.Request) -> None:
        self.sessions.close(request.session_hash)


# ----------------------------------------------------------------------------
# Layout.

def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def build_demo(model: str | None = None, device: str = "auto", *, max_sessions: int = 32,
               session_ttl_s: float = 1800.0, concurrency: int = 1, max_photos: int = 4,
               perceptual_loader: PerceptualLoader | None = None,
               pti_presets: dict[str, PTIPreset] | None = None) -> gr.Blocks:
    """The app. model: default model spec (None: the catalog's default); device: auto, cpu, cuda or mps;
    max_sessions / session_ttl_s: how many idle sessions are kept and for how long;
    concurrency: how many Generate/Drag/Invert events may run on the device at once;
    max_photos: how many sessions may hold a tuned generator copy (a photo) at once;
    perceptual_loader: device -> PerceptualDistance (default: pti.load_perceptual; tests pass a tiny one);
    pti_presets: the inversion presets offered, by name (default: pti.PRESETS)."""
    dev = resolve_device(device)
    default_model = model or catalog.default_model()
    sessions = SessionManager(device=str(dev), max_sessions=max_sessions, ttl_s=session_ttl_s,
                              perceptual_loader=perceptual_loader, max_photos=max_photos)
    app = DragApp(sessions, default_model, device_label(dev), pti_presets)
    start = dict(zip(DRAG_SETTINGS, drag_settings(default_model)))
    choices = [(e.label, e.name) for e in catalog.list_models()]
    if default_model not in [c[1] for c in choices]:
        choices.insert(0, (app.model_label(default_model), default_model))

    gpu = dict(concurrency_id=GPU_GROUP, concurrency_limit=concurrency)
    light = dict(concurrency_limit=None)        # cheap, and safe to run beside a drag
    ordered = dict(concurrency_limit=1)         # cheap, but clicks must keep their order
    private = dict(api_visibility="private")

    with gr.Blocks(title="DragGAN", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# DragGAN\n" + HELP_TEXT + " Paint a mask (Mask tab) to keep the rest of the image fixed.")
        status = gr.Markdown(f"Device **{app.device_label}** · model **{app.model_label(default_model)}**: loading…",
                             label="status_line", elem_id="status")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                with gr.Group():
                    model_box = gr.Dropdown(choices, value=default_model, label="Model", allow_custom_value=True,
                                            info="A catalog model, or type a Hub repo_id:filename or a local "
                                                 ".pkl/.safetensors path")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=SEED_MAX, scale=3)
                        dice = gr.Button("Random seed", scale=1, min_width=80, size="sm")
                    psi = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="Truncation ψ")
                    latent_space = gr.Radio([("W", "w"), ("W+", "w+")], value="w+", label="Latent space")
                    generate_btn = gr.Button("Generate", variant="primary")
                with gr.Accordion("Real photo", open=False):
                    photo = gr.File(label="Photo (JPEG, PNG or WebP)", file_types=["image"], type="filepath",
                                    height=90)
                    photo_preview = gr.Image(type="numpy", interactive=False, label="What will be inverted",
                                             height=160, buttons=[])
                    crop = gr.Textbox("", label="Crop", max_lines=1, placeholder="x0,y0,x1,y1",
                                      info="Empty: the centre square. Else a box in pixels of the upright photo")
                    preset = gr.Radio(list(app.presets), value="fast" if "fast" in app.presets else None,
                                      label="Preset", info=" · ".join(
                                          f"{k}: {p.w_steps} + {p.tune_steps} steps" for k, p in app.presets.items()))
                    with gr.Row():
                        invert_btn = gr.Button("Invert", variant="primary", elem_id="invert")
                        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel_invert")
                    photo_report = gr.Markdown("Inverts into the model chosen above; then drag it as any image.",
                                               label="report", elem_id="photo_report")
                    with gr.Row():
                        save_embedding_btn = gr.Button("Save embedding", size="sm")
                        load_embedding_btn = gr.UploadButton("Load embedding", file_types=[".safetensors"],
                                                             size="sm")
                    embedding_file = gr.File(label="Embedding", interactive=False, visible=False)
                with gr.Group():
                    with gr.Row():
                        drag_btn = gr.Button("Drag", variant="primary", elem_id="drag")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                    with gr.Row():
                        undo_btn = gr.Button("Undo drag", size="sm")
                        reset_btn = gr.Button("Reset image", size="sm")
                    with gr.Row():
                        undo_point_btn = gr.Button("Undo point", size="sm")
                        clear_points_btn = gr.Button("Clear points", size="sm")
                # No reset buttons (buttons=[]): Gradio's go back to the page's first value, whatever the model.
                lr = gr.Slider(0.0005, 0.1, value=start["lr"], step=0.0005, label="Step size", buttons=[])
                r1 = gr.Slider(1, 128, value=start["r1"], step=1, label="R1: motion radius", buttons=[],
                               info="Radii in 512-px units")
                r2 = gr.Slider(1, 256, value=start["r2"], step=1, label="R2: tracking radius", buttons=[])
                r3 = gr.Slider(1, 256, value=start["r3"], step=1, label="R3: Nearest search radius", buttons=[])
                nearest = gr.Checkbox(DEFAULTS.nearest, label="Nearest: start each handle on the nearest edge")
                max_steps = gr.Slider(1, 2000, value=start["max_steps"], step=1, label="Max steps", buttons=[])
                defaults_btn = gr.Button("Model's drag defaults", size="sm")
                with gr.Accordion("Advanced", open=False):
                    feature_block = gr.Slider(1, 9, value=start["feature_block"], step=1, label="Feature block",
                                              info="Synthesis block whose features drive the drag", buttons=[])
                    rows = gr.Slider(1, 18, value=DEFAULTS.rows, step=1, label="W+ rows optimized", buttons=["reset"])
                    frame_every = gr.Slider(1, 50, value=DEFAULTS.frame_every, step=1, label="Show every n-th step",
                                            buttons=["reset"])
                    tracking = gr.Radio([("L1 (paper)", "l1"), ("L2 (official code)", "l2")], value=DEFAULTS.tracking,
                                        label="Point tracking distance")
                with gr.Accordion("Save", open=False):
                    save_btn = gr.Button("Save image (PNG)", size="sm")
                    with gr.Row():
                        video_format = gr.Radio(["mp4", "gif"], value="mp4", label="Video format")
                        overlay = gr.Checkbox(True, label="Draw points in the video")
                    export_btn = gr.Button("Export drag as video", size="sm")
                    download = gr.File(label="Download", interactive=False)
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Points"):
                        view = gr.Image(type="numpy", interactive=False, label="view", show_label=False,
                                        buttons=["fullscreen"], elem_id="view")
                        info = gr.Markdown(HELP_TEXT, label="progress", elem_id="info")
                    with gr.Tab("Mask") as mask_tab:
                        mask_editor = gr.ImageEditor(
                            type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, format="png",
                            brush=gr.Brush(colors=[("rgb(34, 197, 94)", 0.5)], color_mode="fixed"),
                            label="Paint the area the drag may change", canvas_size=(VIEW_MIN_PX, VIEW_MIN_PX),
                            height=560)
                        with gr.Row():
                            show_mask = gr.Checkbox(True, label="Show the mask on the image")
                            clear_mask_btn = gr.Button("Clear mask", size="sm")
                        lambda_mask = gr.Slider(0, 100, value=DEFAULTS.lambda_mask, step=1, buttons=["reset"],
                                                label="λ: how strongly the unpainted area is kept fixed")
        # The API's points; the UI leaves them empty and drags the clicked points.
        handles = gr.Textbox("", visible=False, label="handles")
        targets = gr.Textbox("", visible=False, label="targets")
        frame = gr.JSON(visible=False, label="frame")
        settings_model = gr.State(default_model)  # the model the drag sliders were last set for

        gen_inputs, gen_outputs = [model_box, seed, psi, latent_space], [view, status, info]
        settings = [lr, r1, r2, r3, feature_block, max_steps]
        refresh_mask = dict(fn=app.mask_editor_value, inputs=None, outputs=mask_editor, show_progress="hidden",
                            **private, **light)
        follow_model = dict(fn=app.follow_model, inputs=settings_model, outputs=[settings_model, *settings],
                            show_progress="hidden", **private, **light)

        def after_new_image(event) -> None:
            event.then(**refresh_mask)
            event.success(**follow_model)

        after_new_image(generate_btn.click(app.generate, gen_inputs, gen_outputs, api_name="generate", **gpu))
        after_new_image(dice.click(app.random_seed, None, seed, **private, **light)
                        .then(app.generate, gen_inputs, gen_outputs, **private, **gpu))
        after_new_image(demo.load(app.on_load, gen_inputs, gen_outputs, **private, **gpu))
        defaults_btn.click(app.drag_defaults, None, settings, api_name="drag_defaults", **light)

        preview = dict(fn=app.preview_photo, inputs=[photo, crop, model_box], outputs=[photo_preview, photo_report],
                       trigger_mode="always_last", show_progress="hidden", **private, **light)
        photo.change(**preview)
        crop.change(**preview)
        photo_outputs = [view, status, info, photo_report]
        # `arm_invert` runs at once, so a Cancel pressed while the inversion still waits in the queue stops it.
        after_new_image(invert_btn.click(app.arm_invert, None, None, queue=False, **private)
                        .then(app.invert, [photo, crop, preset, model_box, latent_space], photo_outputs,
                              api_name="invert", **gpu))
        cancel_btn.click(app.cancel_invert, None, None, api_name="cancel_invert", show_progress="hidden", **light)
        save_embedding_btn.click(app.save_embedding, None, embedding_file, api_name="save_embedding", **light) \
            .success(lambda: gr.File(visible=True), None, embedding_file, **private, **light)
        after_new_image(load_embedding_btn.upload(app.load_embedding, [load_embedding_btn, latent_space],
                                                  photo_outputs, api_name="load_embedding", **gpu))

        view.select(app.click, None, [view, info], trigger_mode="multiple", show_progress="hidden", **private, **ordered)
        undo_point_btn.click(app.undo_point, None, [view, info], show_progress="hidden", **private, **ordered)
        clear_points_btn.click(app.clear_points, None, [view, info], show_progress="hidden", **private, **ordered)

        drag_inputs = [handles, targets, lr, r1, r2, r3, nearest, max_steps, lambda_mask, feature_block, rows,
                       frame_every, tracking]
        # `arm` runs at once, so a Stop pressed while the drag still waits in the queue cancels it.
        drag_btn.click(app.arm, None, None, queue=False, **private) \
            .then(app.drag, drag_inputs, [view, info, frame], api_name="drag", show_progress="minimal", **gpu) \
            .then(**refresh_mask)
        stop_btn.click(app.stop, None, None, api_name="stop", show_progress="hidden", **light)
        undo_btn.click(app.undo, None, [view, info], api_name="undo", **light).then(**refresh_mask)
        reset_btn.click(app.reset, None, [view, info], api_name="reset", **light).then(**refresh_mask)

        mask_tab.select(**refresh_mask)
        mask_editor.input(app.apply_mask, mask_editor, view, trigger_mode="always_last", show_progress="hidden",
                          **private, **ordered)
        clear_mask_btn.click(app.clear_mask, None, [view, mask_editor], show_progress="hidden", **private, **ordered)
        show_mask.change(app.set_show_mask, show_mask, view, show_progress="hidden", **private, **light)

        save_btn.click(app.save_image, None, download, api_name="save_image", **light)
        export_btn.click(app.export_video, [video_format, overlay], download, api_name="export_video", **light)
        demo.unload(app.unload)

    demo.queue(max_size=64)
    demo.draggan = app  # for tests and scripts: the handlers and their SessionManager
    return demo


def launch(demo: gr.Blocks, host: str | None = None, port: int | None = None, share: bool = False,
           **kwargs) -> Any:
    """Launch with the app's look (Gradio 6 takes theme and css at launch). host/port None: Gradio's
    defaults or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    return demo.launch(server_name=host, server_port=port, share=share, css=CSS, theme=gr.themes.Soft(),
                       ssr_mode=False, **kwargs)


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="The DragGAN web app")
    parser.add_argument("--model", default=env("DRAGGAN_MODEL"),
                        help="default model: catalog name, Hub repo_id:filename, or a local .pkl/.safetensors path "
                             "(env DRAGGAN_MODEL; default: the catalog's first model on this machine)")
    parser.add_argument("--device", default=env("DRAGGAN_DEVICE", "auto"),
                        help="auto, cpu, cuda or mps (env DRAGGAN_DEVICE; default auto)")
    parser.add_argument("--host", default=None, help="address to listen on (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (env GRADIO_SERVER_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--max-sessions", type=int, default=int(env("DRAGGAN_MAX_SESSIONS", "32")),
                        help="live sessions kept; the least recently used is dropped first (env DRAGGAN_MAX_SESSIONS)")
    parser.add_argument("--session-ttl", type=float, default=float(env("DRAGGAN_SESSION_TTL", "1800")),
                        help="seconds an idle session is kept (env DRAGGAN_SESSION_TTL)")
    parser.add_argument("--concurrency", type=int, default=int(env("DRAGGAN_CONCURRENCY", "1")),
                        help="Generate/Drag/Invert events run at once on the device (env DRAGGAN_CONCURRENCY)")
    parser.add_argument("--max-photos", type=int, default=int(env("DRAGGAN_MAX_PHOTOS", "4")),
                        help="sessions that may edit a photo (each holds its own tuned generator copy) at once; "
                             "beyond that Invert asks to try later (env DRAGGAN_MAX_PHOTOS; default 4)")
    args = parser.parse_args(argv)
    try:
        demo = build_demo(args.model, args.device, max_sessions=args.max_sessions, session_ttl_s=args.session_ttl,
                          concurrency=args.concurrency, max_photos=args.max_photos)
    except ValueError as e:  # a device that is not here
        parser.error(str(e))
    launch(demo, args.host, args.port, args.share)


if __name__ == "__main__":
    main()
