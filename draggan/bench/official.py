"""The official DragGAN code's own drag step, run from a checkout the user has (`bench --official DIR`).

Nothing of the official code is in this repository: `time_official` imports it from DIR, in a
fresh process, and drives it as its Gradio app (`visualizer_drag_gradio.py`) drives a drag:
`Renderer.init_network` once, then per step `Renderer._render_drag_impl(..., is_drag=True,
to_pil=True)` and the frame the app shows after every step (its `draw_interval` is 1): the points
drawn on the image (`gradio_utils.draw_points_on_image`) and the watermark (`add_watermark_np`).
Gradio's own encoding of that frame is left out, as our app's encoding is left out of ours.

The generator is handed to the renderer as its pickle would be: a record of NVIDIA's constructor
arguments for ours and our state dict, under a file name that makes `get_network` pick the class the
official app picks (StyleGAN2, StyleGAN3 or StyleGAN-Human); it builds that class and loads our
state dict strictly (same names and shapes).
The latent (W+, loaded as the app's `w_load`), points, radii, step size and feature block are
ours. The renderer runs on the bench's device (on a CPU its generator runs in float32, as it does
there; on CUDA its fp16 blocks in fp16).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from stylegan2.errors import UserError

from .measure import PeakMemory, drag_points, make_generator, ms_per_step, sync

HOW_TO_GET = ("to time the official code as well: git clone https://github.com/XingangPan/DragGAN ~/DragGAN, "
              "then python -m draggan bench --official ~/DragGAN (run from there, nothing copied)")
OFFICIAL_ENTRY_POINTS = ("viz/renderer.py", "training/networks_stylegan2.py", "dnnlib/__init__.py")
APP_LAMBDA_MASK = 20  # the official app's motion_lambda (unused here: its mask is all zeros until painted)


class OfficialCheckoutError(UserError):
    """--official names no DragGAN checkout."""


def check_checkout(path: str | os.PathLike[str]) -> str:
    """The checkout's absolute path, or OfficialCheckoutError naming what is missing."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise OfficialCheckoutError(f"--official {path}: no such folder ({HOW_TO_GET})")
    missing = [n for n in OFFICIAL_ENTRY_POINTS if not (root / n).is_file()]
    if missing:
        raise OfficialCheckoutError(f"--official {path}: not a DragGAN checkout (no {', '.join(missing)}); {HOW_TO_GET}")
    return str(root)


def official_kwargs(config) -> dict:
    """NVIDIA's Generator constructor arguments for our config, as the pickles the official app loads record them:
    StyleGAN2 flat; StyleGAN3 with its synthesis arguments flat and `mapping_kwargs` nested; StyleGAN-Human with
    `synthesis_kwargs` nested and neither `square` nor `padding` (the renderer adds both)."""
    if is_stylegan3(config):
        flat = config.to_dict()
        mapping = {"num_layers": flat.pop("mapping_layers"), "lr_multiplier": flat.pop("mapping_lr_multiplier")}
        return {**flat, "mapping_kwargs": mapping}
    top = {"z_dim": config.z_dim, "c_dim": config.c_dim, "w_dim": config.w_dim,
           "img_resolution": config.img_resolution, "img_channels": config.img_channels,
           "mapping_kwargs": {"num_layers": config.mapping_layers, "lr_multiplier": config.mapping_lr_multiplier}}
    synthesis = {"channel_base": config.channel_base, "channel_max": config.channel_max,
                 "num_fp16_res": config.num_fp16_res, "conv_clamp": config.conv_clamp}
    return {**top, "synthesis_kwargs": synthesis} if not config.square else {**top, **synthesis}


def is_stylegan3(config) -> bool:
    from stylegan2.stylegan3_config import StyleGAN3Config
    return isinstance(config, StyleGAN3Config)


def pickle_name(config) -> str:
    """The file name the renderer sees: it picks the official Generator class by a substring of it."""
    if is_stylegan3(config):
        return "stylegan3-bench.pkl"      # training/networks_stylegan3.py
    return "stylegan2-bench.pkl" if config.square else "stylegan_human-bench.pkl"


class PickleRecord:
    """What the renderer reads from a pickle's `G_ema` to rebuild it (`get_network`): the constructor arguments
    and the state dict; it builds the official class itself, as it does for a file."""

    def __init__(self, kwargs: dict, state: dict):
        self.init_args, self.init_kwargs, self._state = (), kwargs, state

    def state_dict(self) -> dict:
        return self._state


@contextlib.contextmanager
def from_checkout(checkout: str):
    """Import from the checkout and run in its folder (its watermark font is a relative path); quiet: the
    renderer prints the constructor arguments, and recent torch warns about its meshgrid call."""
    cwd = os.getcwd()
    sys.path.insert(0, checkout)
    os.chdir(checkout)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.chdir(cwd)
        sys.path.remove(checkout)


def pillow_compat() -> None:
    """`add_watermark_np` measures its text with FreeTypeFont.getsize, which Pillow 10 removed: the same size from
    getbbox (right and bottom edges, as getsize gave) where it is missing."""
    from PIL import ImageFont

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        def getsize(font, text, *args, **kwargs):
            _left, _top, right, bottom = font.getbbox(text, *args, **kwargs)
            return right, bottom
        ImageFont.FreeTypeFont.getsize = getsize


def app_frame():
    """The official app's frame after a step: points drawn and the watermark. -> (frame(image, points, targets),
    whether the points are drawn: gradio_utils needs Gradio; without it, the watermark alone)."""
    import numpy as np
    from PIL import Image

    from viz.renderer import add_watermark_np
    try:
        from gradio_utils.utils import draw_points_on_image
    except ImportError:
        draw_points_on_image = None

    def frame(image, points_rc, targets_rc):
        if draw_points_on_image is not None:  # the app keeps its points as (x, y) "start_temp" and "target"
            state = {i: {"start": [p[1], p[0]], "start_temp": [p[1], p[0]], "target": [t[1], t[0]]}
                     for i, (p, t) in enumerate(zip(points_rc, targets_rc))}
            image = draw_points_on_image(image, state)
        return Image.fromarray(add_watermark_np(np.array(image)))

    return frame, draw_points_on_image is not None


def official_renderer(G, w0: torch.Tensor, device: torch.device, lr: float):
    """(the checkout's Renderer holding our generator and latent, its result dict); call inside `from_checkout`.
    The renderer rebuilds the generator from its record as it rebuilds one read from a pickle, and loads our state
    dict into its class strictly: every name and shape as in NVIDIA's G_ema."""
    import dnnlib
    from viz.renderer import Renderer

    pkl = pickle_name(G.config)
    renderer = Renderer(disable_timing=True)
    renderer._device = device
    renderer._pkl_data[pkl] = {"G_ema": PickleRecord(official_kwargs(G.config), G.state_dict())}
    res = dnnlib.EasyDict()
    renderer.init_network(res, pkl=pkl, w0_seed=0, w_load=w0.to(device), w_plus=True, noise_mode="const",
                          trunc_psi=0.7, lr=lr)
    if "error" in res:  # the renderer reports a failure in its result instead of raising it
        raise RuntimeError(f"the official renderer could not build the generator: {res.error}")
    renderer._render_drag_impl(res, is_drag=False, to_pil=True)  # the first image, as the app opens
    return renderer, res


@dataclasses.dataclass
class OfficialDrag:
    """The official app's drag, set up: `drag()` one renderer step, `show()` the app's frame of its image."""
    drag: Callable[[], None]
    show: Callable[[], None]
    renderer: object
    points: list[list[int]]   # (row, col), updated by the renderer as it tracks
    points_drawn: bool


def official_drag(G, dev: torch.device) -> OfficialDrag:
    """Our generator, latent, points and settings in the official renderer; call inside `from_checkout`."""
    from draggan.config import DragConfig
    from draggan.editor import seed_latent

    cfg, res_px = DragConfig(), G.img_resolution
    feature_idx = min(cfg.feature_block, len(G.synthesis.blocks)) - 1  # as ours: small models have fewer blocks
    handles, targets = drag_points(res_px)
    points = [[round(y), round(x)] for x, y in handles]  # the app hands (row, col) whole pixels to the renderer
    goals = [[y, x] for x, y in targets]
    pillow_compat()
    renderer, res = official_renderer(G, seed_latent(G, 0), dev, cfg.lr)
    frame, drawn = app_frame()
    drag_mask = 1 - torch.ones(res_px, res_px)  # the app's mask with nothing painted: no mask term

    def drag() -> None:
        renderer._render_drag_impl(res, points, goals, drag_mask, APP_LAMBDA_MASK, reg=0, feature_idx=feature_idx,
                                   r1=cfg.r1, r2=cfg.r2, trunc_psi=0.7, is_drag=True, to_pil=True)

    return OfficialDrag(drag, lambda: frame(res.image, points, goals), renderer, points, drawn)


def time_official(checkout: str, source: str | int, device: str, steps: int, threads: int) -> dict:
    """ms per step and peak memory of the official drag step as its app runs it, in this (fresh) process.

    Times steps 2..steps+1 (the first one sets up the handles' features), each with the app's frame.
    """
    torch.set_num_threads(threads)
    dev = torch.device(device)
    G = make_generator(source, torch.device("cpu"))
    res_px = G.img_resolution
    with from_checkout(checkout):
        run = official_drag(G, dev)
        del G
        marks = []
        with PeakMemory(dev) as mem:
            for step in range(steps + 1):
                run.drag()
                run.show()
                sync(dev)
                marks.append((step + 1, time.perf_counter()))
    return {"resolution": res_px, "ms_per_step": ms_per_step(marks), "peak_mb": round(mem.peak_mb, 1),
            "points_drawn": run.points_drawn, "tracked_rc": [list(map(int, p)) for p in run.points]}
