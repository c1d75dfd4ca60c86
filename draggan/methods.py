"""Drag methods behind one interface: given a generator, a start latent, points and settings, yield frames.

    frames = run_drag("draggan", DragJob(G, w_start, handles_xy, targets_xy, DragConfig.for_model(spec)))

Every method yields `DragFrame`s (points in (x, y) image pixels) and ends with one whose `done`
is True, carrying the final latent and its image. The app, the command line and the benchmarks
pick a method by name and never by its code, as NVIDIA's ops pick `impl='ref'|'cuda'`:
  - `draggan`: the DragGAN optimizer (`engine.py`), our fast step;
  - `straightforward`: the same drag computed as the official code does (`baseline.py`), the yardstick;
  - `auto`: Auto DragGAN's learned predictor (`draggan.auto`), a few autoregressive steps;
  - `auto-refine`: the prediction, then DragGAN optimizer steps from there until the handles arrive;
  - `auto-noreg`, `auto-n1`: the paper's ablations (no regularizer; one predicted step).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from stylegan2.networks import Generator

from . import engine
from .baseline import straightforward
from .config import DragConfig, DragFrame, DragInputError, validate_points

if TYPE_CHECKING:
    from .auto import AutoDragModel

METHOD_NAMES = ("draggan", "straightforward", "auto", "auto-refine", "auto-noreg", "auto-n1")
LEARNED = ("auto", "auto-refine", "auto-noreg", "auto-n1")
LABELS = {"draggan": "DragGAN", "straightforward": "Straightforward (official step)", "auto": "Auto",
          "auto-refine": "Auto + refine", "auto-noreg": "Auto, no regularizer", "auto-n1": "Auto, one step"}
NO_PREDICTOR = ("this model has no Auto DragGAN predictor: train one with "
                "`python -m draggan train-auto --model MODEL --out DIR` and add it to the catalog entry as \"auto\"")


@dataclasses.dataclass
class DragJob:
    """One drag to run: what every method takes."""
    G: Generator                          # frozen, shared generator
    w_start: torch.Tensor                 # [1, num_ws, w_dim] the W+ latent the drag starts from, on G's device
    handles_xy: list[list[float]]         # (x, y) image pixels
    targets_xy: list[list[float]]         # one per handle
    config: DragConfig = dataclasses.field(default_factory=DragConfig)
    editable: torch.Tensor | None = None  # [H, W] bool: True where the drag may change the image; None: no mask
    latent_space: str = "w+"              # 'w+' optimizes rows separately, 'w' moves them together
    noise_mode: str = "const"
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)  # set: stop before the next step
    auto: "AutoDragModel | None" = None   # the learned predictor for G (methods in LEARNED)
    image: np.ndarray | None = None       # the start latent's image if the caller has it (Nearest looks at it)

    def __getstate__(self) -> dict:
        # A job pickled into another process (ZeroGPU's worker) cannot share a stop event with this one:
        # there the consumer stops by closing the frame generator instead.
        return {**self.__dict__, "stop": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stop=threading.Event())

    def __post_init__(self) -> None:
        self.config.validate()
        res = self.G.img_resolution
        self.handles_xy, self.targets_xy = validate_points(self.handles_xy, self.targets_xy, res)
        if self.latent_space not in ("w", "w+"):
            raise DragInputError(f"latent space must be 'w' or 'w+', got {self.latent_space!r}")
        if self.w_start.ndim == 2:
            self.w_start = self.w_start.unsqueeze(1).repeat(1, self.G.num_ws, 1)
        assert self.w_start.shape == (1, self.G.num_ws, self.G.w_dim), self.w_start.shape
        if self.editable is not None:
            assert self.editable.shape == (res, res) and self.editable.dtype == torch.bool, self.editable.shape


Method = Callable[[DragJob], Iterator[DragFrame]]


def run_drag(method: str, job: DragJob) -> Iterator[DragFrame]:
    """Run `job` with the method called `method` (one of METHOD_NAMES)."""
    if method not in METHODS:
        raise DragInputError(f"unknown drag method {method!r}; choose one of {', '.join(METHOD_NAMES)}")
    if method in LEARNED and job.auto is None:
        raise DragInputError(f"Method {method!r}: {NO_PREDICTOR}")
    return METHODS[method](job)


def available_methods(has_predictor: bool) -> list[str]:
    """The methods a model can run: the learned ones only with a predictor."""
    return [m for m in METHOD_NAMES if has_predictor or m not in LEARNED]


# ----------------------------------------------------------------------------
# Learned methods (Auto DragGAN).

def _predicted(job: DragJob, n_steps: int | None, use_regularizer: bool,
               ) -> Iterator[tuple[DragFrame, torch.Tensor]]:
    """Frames of the predictor's autoregressive steps: those the frame schedule shows, and always the last.

    Each shown frame's handles are tracked as the optimizer tracks them (nearest feature to the
    handle's feature on the start image), in a window that reaches the targets.
    Yields (frame, reference features [N, C]).
    """
    from .auto import rollout

    G, cfg, res = job.G, job.config, job.G.img_resolution
    dev = job.w_start.device
    block = min(cfg.feature_block, len(G.synthesis.blocks))
    handles = [[float(round(x)), float(round(y))] for x, y in job.handles_xy]
    refs = engine.reference_features(G, job.w_start, handles, block, job.noise_mode)
    start, targets = engine.rowcol(handles, dev), engine.rowcol(job.targets_xy, dev)
    t0 = time.perf_counter()
    latents = rollout(job.auto, G, job.w_start, handles, job.targets_xy, n_steps=n_steps or cfg.auto_steps or None,
                      use_regularizer=use_regularizer, noise_mode=job.noise_mode)
    ms = (time.perf_counter() - t0) * 1000 / max(len(latents), 1)
    reach = cfg.radius_px(cfg.r2, res) + math.ceil(float((targets - start).norm(dim=1).max()))
    window = engine.square_offsets(reach, dev)
    schedule = engine.FrameSchedule(cfg)
    for i, ws in enumerate(latents, start=1):
        if job.stop.is_set():
            break
        if i < len(latents) and not schedule.render(i - 1):
            continue
        with torch.no_grad():
            feat = G.synthesis.features(ws, stop=block, noise_mode=job.noise_mode)[-1].float()
            points = engine.track_points(feat, start, refs, window, cfg.tracking, res)
        dist = (targets - points).norm(dim=1).tolist()
        yield DragFrame(i, engine.xy(points), job.targets_xy, dist, float("nan"), ms,
                        engine.render(G, ws, job.noise_mode), latent=ws, start_xy=handles), refs


def _auto(n_steps: int | None = None, use_regularizer: bool = True) -> Method:
    def method(job: DragJob) -> Iterator[DragFrame]:
        last = None
        for last, _ in _predicted(job, n_steps, use_regularizer):
            yield last
        if last is None:  # stopped before the first prediction
            yield _unchanged(job, "stopped")
            return
        reason = "stopped" if job.stop.is_set() else "predicted"
        yield dataclasses.replace(last, done=True, reason=reason, ms=0.0)
    return method


def auto_refine(job: DragJob) -> Iterator[DragFrame]:
    """The prediction, then DragGAN's optimizer from the predicted latent, tracking the same features."""
    last, refs = None, None
    for last, refs in _predicted(job, None, True):
        yield last
    if last is None or job.stop.is_set():
        yield _unchanged(job, "stopped") if last is None else dataclasses.replace(last, done=True, reason="stopped")
        return
    for frame in engine.optimize_latent(job, last.latent, last.handles_xy, refs=refs, start_xy=last.start_xy):
        yield dataclasses.replace(frame, step=frame.step + last.step)


def _unchanged(job: DragJob, reason: str) -> DragFrame:
    dist = [float(np.hypot(t[0] - h[0], t[1] - h[1])) for h, t in zip(job.handles_xy, job.targets_xy)]
    image = job.image if job.image is not None else engine.render(job.G, job.w_start, job.noise_mode)
    return DragFrame(0, job.handles_xy, job.targets_xy, dist, float("nan"), 0.0, image, done=True, reason=reason,
                     latent=job.w_start, start_xy=job.handles_xy)


METHODS: dict[str, Method] = {
    "draggan": engine.draggan,
    "straightforward": straightforward,
    "auto": _auto(),
    "auto-refine": auto_refine,
    "auto-noreg": _auto(use_regularizer=False),
    "auto-n1": _auto(n_steps=1),
}
assert tuple(METHODS) == METHOD_NAMES
