"""What every protocol works with: a generator, its detector and predictor, and one drag call.

A `Bench` is built in the driver from live objects, or from a `BenchSpec` (plain strings)
so that a Ray worker can rebuild the same bench once and keep it. `edit` runs one drag
through the drag-method interface (`draggan.methods.run_drag`) and times it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from draggan.editor import seed_latent  # noqa: F401 (the protocols' seed -> W+)
from draggan.engine import render as engine_render
from stylegan2.networks import Generator

from .detectors import ExperimentSetupError, LandmarkDetector, get_detector

if TYPE_CHECKING:
    from draggan.config import DragConfig

NEAREST_SUFFIX = "+nearest"  # 'draggan+nearest': the method with Nearest (R3) handles, as the Qt reproduction


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """How to rebuild a bench anywhere: every field a string, so it pickles and travels to Ray workers."""
    model: str                       # catalog name, Hub 'repo_id:filename' or a local file
    device: str = "cpu"              # where the generator runs on the worker
    detector: str | None = None      # 'toy', 'dlib' or None (protocols without landmarks)
    predictor: str | None = None     # learned-drag predictor file for the 'auto' methods, or None
    cold_start: bool = False         # True: learned edits compute the start picture's maps themselves (`start_picture`)


@dataclasses.dataclass
class Bench:
    """A generator with what the protocols need around it."""
    G: Generator
    detector: LandmarkDetector | None = None
    auto: Any = None                 # draggan.auto's predictor for G (methods 'auto', ...), or None
    spec: BenchSpec | None = None    # set when built by load_bench; Ray needs it
    stop: Any = None                 # a threading.Event: set, the edit in progress stops before its next step

    @property
    def model(self) -> str | None:
        """The model spec for catalog drag defaults, or None for a generator built in code."""
        return self.spec.model if self.spec else None


def load_predictor(path: str, G: Generator) -> Any:
    """The Auto DragGAN model stored at `path`, trained for G, on G's device."""
    from draggan.auto import load_auto_model

    return load_auto_model(path, G, next(G.parameters()).device)


def load_bench(spec: BenchSpec) -> Bench:
    """Load the generator, detector and predictor a spec names."""
    from stylegan2.checkpoints import load_generator, resolve_device

    G = load_generator(spec.model, resolve_device(spec.device))
    detector = get_detector(spec.detector) if spec.detector else None
    if spec.predictor:
        auto = load_predictor(spec.predictor, G)
    else:  # the catalog's predictor for the model, if it has one
        from draggan.predictors import predictor_for
        auto = predictor_for(spec.model, G)
    return Bench(G, detector, auto, spec)


def split_method(name: str) -> tuple[str, dict[str, Any]]:
    """'draggan+nearest' -> ('draggan', {'nearest': True}); other names map to themselves."""
    if name.endswith(NEAREST_SUFFIX):
        return name[: -len(NEAREST_SUFFIX)], {"nearest": True}
    return name, {}


def check_methods(methods: list[str], bench: Bench) -> None:
    """Refuse, up front and in one line, methods this bench cannot run."""
    from draggan.methods import LEARNED, METHOD_NAMES

    for name in methods:
        base, _ = split_method(name)
        if base not in METHOD_NAMES:
            raise ExperimentSetupError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)} "
                                       f"(any of them with {NEAREST_SUFFIX})")
        if base in LEARNED and bench.auto is None:
            raise ExperimentSetupError(f"method {name!r} needs an Auto DragGAN predictor for this model: train one "
                                       f"with `python -m draggan train-auto` and pass its file with --predictor PATH")


def render(G: Generator, ws: torch.Tensor) -> np.ndarray:
    """The image [H, W, 3] uint8 of W+ latent ws [1, num_ws, w_dim] (noise 'const', as the drag renders)."""
    return engine_render(G, ws, "const")


def start_picture(bench: Bench, ws: torch.Tensor) -> np.ndarray:
    """The picture an edit starts from, rendered as the app renders the picture on screen: with a predictor, the
    maps a learned drag reads are kept on the way (`draggan.rendered`), so that drag does not run the generator
    to its block again; the same image as `render`'s. cold_start (BenchSpec): not kept, every learned edit
    computes them (the start picture's render is outside an edit's time either way)."""
    from draggan.rendered import KEPT

    cold = bench.spec is not None and bench.spec.cold_start
    return KEPT.picture(bench.G, ws, "const", None if cold else bench.auto)


@dataclasses.dataclass
class EditResult:
    """The end of one drag."""
    image: np.ndarray            # [H, W, 3] uint8
    latent: torch.Tensor         # [1, num_ws, w_dim]
    steps: int
    seconds: float               # wall time of the whole drag, rendering of its frames included
    reason: str                  # 'reached', 'max_steps' or 'stopped'


def edit(bench: Bench, method: str, w_start: torch.Tensor, handles_xy: list[list[float]],
         targets_xy: list[list[float]], config: "DragConfig", image: np.ndarray | None = None,
         on_frame: Callable[[Any, float], None] | None = None, editable: torch.Tensor | None = None) -> EditResult:
    """Run one drag with `method` (a METHOD_NAMES entry, optionally '+nearest') and return its last frame.

    w_start: [1, num_ws, w_dim]; image: its rendering when the caller has it (saves Nearest a render).
    on_frame(frame, seconds) sees every frame the method yields (decay curves); `seconds` is the drag's
    wall time so far, and the time spent inside on_frame is counted in neither it nor the result.
    editable: [H, W] bool, where the drag may change the image (None: no mask).
    """
    from draggan.methods import DragJob, run_drag

    base, overrides = split_method(method)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    job = DragJob(G=bench.G, w_start=w_start, handles_xy=handles_xy, targets_xy=targets_xy, config=config,
                  auto=bench.auto, image=image, editable=editable)
    if bench.stop is not None:
        job.stop = bench.stop
    t0 = time.perf_counter()
    outside = 0.0  # seconds spent in on_frame
    last = None
    for frame in run_drag(base, job):
        if on_frame is not None:
            t = time.perf_counter()
            on_frame(frame, t - t0 - outside)
            outside += time.perf_counter() - t
        last = frame
    seconds = time.perf_counter() - t0 - outside
    assert last is not None and last.done and last.image is not None, "a drag method must end with a done frame"
    return EditResult(last.image, last.latent, int(last.step), seconds, last.reason)


@dataclasses.dataclass
class DragSettings:
    """What every protocol sets of the drag; the rest comes from the model's catalog drag_defaults."""
    max_steps: int = 300               # per edit (the Qt reproduction: 300; its panel's default 200)
    feature_block: int | None = None   # 1-based synthesis block driving the drag (4..7); None: the model's default
    psi: float = 0.7                   # truncation of the seeds' latents
    seed: int = 0                      # seed of the pair sampler
    drag: dict[str, Any] = dataclasses.field(default_factory=dict)  # other DragConfig overrides (lr, r1, r2, r3)

    def drag_config(self, model: str | None, **overrides: Any) -> "DragConfig":
        """The DragConfig of every edit: one frame, at the end, so time per edit is not spent rendering."""
        from draggan.config import DragConfig

        given = {**self.drag, **overrides}
        given.setdefault("frame_every", self.max_steps)
        return DragConfig.for_model(model, max_steps=self.max_steps, feature_block=self.feature_block, **given)
