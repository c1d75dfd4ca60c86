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
import time
from typing import Callable, Iterator

import numpy as np
import torch

from stylegan2.networks import image_to_uint8

from . import engine
from .baseline import straightforward
from .composite import drag_latent, draggan
from .config import DragFrame, DragInputError, DragJob  # noqa: F401 (DragJob re-exported)
from .features import sample_resized
from .hold import held, job_hold
from .rendered import KEPT

NO_PREDICTOR = ("this model has no Auto DragGAN predictor: train one with "
                "`python -m draggan train-auto --model MODEL --out DIR` and add it to the catalog entry as \"auto\"")

Method = Callable[[DragJob], Iterator[DragFrame]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A drag method, registered once (`register_method`); the app, the command line and the experiments read
    the registry. learned: needs the model's Auto DragGAN predictor. in_app: offered in the app's Method choice
    (the others are for scripts, benchmarks and experiments)."""
    name: str
    label: str
    run: Method
    learned: bool = False
    in_app: bool = False
    help: str = ""


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a drag method under `spec.name` (a new name: replacing one is refused). Returns `spec`."""
    if not spec.name or spec.name in METHODS or "+" in spec.name:
        raise ValueError(f"cannot register a drag method named {spec.name!r} (empty, taken, or has '+')")
    METHODS[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a registered method (tests that register a dummy one clean up with this)."""
    METHODS.pop(name, None)


def method_names() -> list[str]:
    return list(METHODS)


def method_spec(name: str) -> MethodSpec:
    """The registered method `name`, or a DragInputError listing the choices."""
    if not isinstance(name, str) or name not in METHODS:
        raise DragInputError(f"unknown drag method {str(name)[:40]!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def check_method(name: str, has_predictor: bool) -> MethodSpec:
    """`method_spec(name)`, refused when it needs a predictor the model does not have: check before anything
    changes (a session's undo history, its recorded video)."""
    spec = method_spec(name)
    if spec.learned and not has_predictor:
        raise DragInputError(f"Method {name!r}: {NO_PREDICTOR}")
    return spec


def run_drag(method: str, job: DragJob) -> Iterator[DragFrame]:
    """Run `job` with the registered method called `method`; with `config.hold` and a mask, its pictures show the
    start picture outside the mask (`hold.py`)."""
    spec = check_method(method, job.auto is not None)
    if job.hold is None:
        job.hold = job_hold(job)
    return held(spec.run(job), job.hold)


def available_methods(has_predictor: bool, in_app: bool = False) -> list[str]:
    """The methods a model can run (the learned ones only with a predictor); in_app: only the app's."""
    return [name for name, spec in METHODS.items()
            if (has_predictor or not spec.learned) and (spec.in_app or not in_app)]


def __getattr__(name: str):
    # Views of the registry under their version-2 names, computed when asked (a method registered later shows).
    if name == "METHOD_NAMES":
        return tuple(METHODS)
    if name == "LEARNED":
        return tuple(n for n, s in METHODS.items() if s.learned)
    if name == "LABELS":
        return {n: s.label for n, s in METHODS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------
# Learned methods (Auto DragGAN).

def _predicted(job: DragJob, n_steps: int | None, use_regularizer: bool, render_last: bool = True,
               ) -> Iterator[tuple[DragFrame, torch.Tensor, bool]]:
    """Frames of the predictor's autoregressive steps: those the frame schedule shows, and always the last.

    Each such frame's handles are tracked as the optimizer tracks them (nearest feature to the
    handle's feature on the start image), in a window that reaches the targets. Yields (frame,
    reference features [N, C], shown): the last frame comes with shown=False and no image when the
    schedule does not show it and `render_last` is False (auto-refine hands it to the optimizer,
    whose first frame draws the same latent).

    Generator passes per edit: the start latent's features to the feature block once (the handles'
    reference features and the predictor's F0 both read them; none when the start picture was rendered
    through `rendered.KEPT`, as the app's picture and the last frame of an earlier learned drag are), then per
    shown frame its features to the block (tracking) and the rest of the generator from there
    (`image_from_features`).
    """
    from .auto import rollout

    G, cfg, res = job.G, job.config, job.G.img_resolution
    dev = job.w_start.device
    block = min(cfg.feature_block, len(G.synthesis.blocks))
    handles = [[float(round(x)), float(round(y))] for x, y in job.handles_xy]
    start, targets = engine.rowcol(handles, dev), engine.rowcol(job.targets_xy, dev)
    # The start picture's maps to both blocks (the handles' and the predictor's), kept when it was rendered
    # (`rendered.KEPT`: the picture on screen) or computed here, as engine.reference_features does.
    need = max(block, getattr(getattr(job.auto, "cfg", None), "feature_block", block))  # a stand-in may have none
    feats0 = KEPT.get(G, job.w_start, job.noise_mode, need)
    if feats0 is None:
        with torch.no_grad():
            feats0 = G.synthesis.features(job.w_start, stop=need, noise_mode=job.noise_mode)
    refs = sample_resized(feats0[block - 1].float(), start, res).T                # [N, C]
    t0 = time.perf_counter()
    latents = rollout(job.auto, G, job.w_start, handles, job.targets_xy, n_steps=n_steps or cfg.auto_steps or None,
                      use_regularizer=use_regularizer, noise_mode=job.noise_mode, start_features=feats0)
    ms = (time.perf_counter() - t0) * 1000 / max(len(latents), 1)
    reach = cfg.radius_px(cfg.r2, res) + math.ceil(float((targets - start).norm(dim=1).max()))
    window = engine.square_offsets(reach, dev)
    schedule = engine.FrameSchedule(cfg)
    if job.on_step is not None:
        job.on_step(0, job.w_start, None)
    for i, ws in enumerate(latents, start=1):
        if job.stop.is_set():
            break
        if job.on_step is not None:
            job.on_step(i, ws, None)
        last = i == len(latents) or job.stop.is_set()  # stopped here: this latent is where the drag ends
        # Frame i shows the latent after i predicted steps: shown when i is a step the schedule draws
        # (every frame_every-th), and the last one unless the caller draws it otherwise.
        shown = schedule.render(i) or (last and render_last)
        if not (shown or last):
            continue
        with torch.inference_mode():  # read-only results: maps kept for reading, points and image copied out
            feats = G.synthesis.features(ws, stop=block, noise_mode=job.noise_mode)
            points = engine.track_points(feats[-1].float(), start, refs, window, cfg.tracking, res)
            image = image_to_uint8(G.synthesis.image_from_features(ws, feats, job.noise_mode)) if shown else None
        if last and shown:  # the picture the drag ends on: the next drag from it starts with these maps
            KEPT.put(G, ws, job.noise_mode, feats)
        dist = (targets - points).norm(dim=1).tolist()
        yield DragFrame(i, engine.xy(points), job.targets_xy, dist, float("nan"), ms, image, latent=ws,
                        start_xy=handles), refs, shown


def _auto(n_steps: int | None = None, use_regularizer: bool = True) -> Method:
    def method(job: DragJob) -> Iterator[DragFrame]:
        last = None
        for last, _, _ in _predicted(job, n_steps, use_regularizer):
            yield last
        if last is None:  # stopped before the first prediction
            yield _unchanged(job, "stopped")
            return
        arrived = all(d <= engine.stop_distance(job.G.img_resolution) for d in last.distances)
        # 'short': the prediction ended with a handle still away from its target (the app offers Refine)
        reason = "stopped" if job.stop.is_set() else "predicted" if arrived else "short"
        yield dataclasses.replace(last, done=True, reason=reason, ms=0.0)
    return method


def auto_refine(job: DragJob) -> Iterator[DragFrame]:
    """The prediction, then DragGAN's optimizer from the predicted latent, tracking the same features.

    The last predicted frame is drawn only when the schedule shows it or the drag ends there (stopped):
    otherwise the optimizer's first frame draws that latent."""
    last, refs = None, None
    for last, refs, shown in _predicted(job, None, True, render_last=False):
        if shown:
            yield last
    if last is None or job.stop.is_set():
        if last is None:
            yield _unchanged(job, "stopped")
            return
        image = last.image if last.image is not None else engine.render(job.G, last.latent, job.noise_mode)
        yield dataclasses.replace(last, image=image, done=True, reason="stopped")
        return
    for frame in drag_latent(job, last.latent, last.handles_xy, refs=refs, start_xy=last.start_xy):
        yield dataclasses.replace(frame, step=frame.step + last.step)


def _unchanged(job: DragJob, reason: str) -> DragFrame:
    dist = [float(np.hypot(t[0] - h[0], t[1] - h[1])) for h, t in zip(job.handles_xy, job.targets_xy)]
    image = job.image if job.image is not None else engine.render(job.G, job.w_start, job.noise_mode)
    return DragFrame(0, job.handles_xy, job.targets_xy, dist, float("nan"), 0.0, image, done=True, reason=reason,
                     latent=job.w_start, start_xy=job.handles_xy)


for _spec in (
        MethodSpec("draggan", "DragGAN", draggan, in_app=True, help="the DragGAN optimizer, our fast step"),
        MethodSpec("straightforward", "Straightforward (official step)", straightforward,
                   help="the same drag computed as the official code does (the yardstick)"),
        MethodSpec("auto", "Auto", _auto(), learned=True, in_app=True,
                   help="Auto DragGAN's learned predictor, a few autoregressive steps"),
        MethodSpec("auto-refine", "Auto + refine", auto_refine, learned=True, in_app=True,
                   help="the prediction, then DragGAN steps until the handles arrive"),
        MethodSpec("auto-noreg", "Auto, no regularizer", _auto(use_regularizer=False), learned=True,
                   help="ablation: the predictor without its regularizer"),
        MethodSpec("auto-n1", "Auto, one step", _auto(n_steps=1), learned=True,
                   help="ablation: one predicted step")):
    register_method(_spec)
