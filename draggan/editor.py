"""`Editor`: one user's editing state (latent, points, mask, undo history) over a shared generator.

    session = Editor.from_seed(G, seed=3, psi=0.7)
    for frame in session.drag([[x, y]], [[tx, ty]], DragConfig.for_model("toyfaces-64"), method="draggan"):
        ...                                   # frame.image, frame.handles_xy, frame.distances
    session.undo()

The generator is never modified, so many sessions share one. Any drag method (`methods.py`)
runs through `drag`; this class keeps what the user expects between drags: the points move
with the tracked handles, every drag and reset can be undone, Stop ends a drag before its
next step, and the last drag's frames are recorded for a video.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from stylegan2.networks import Generator, content_width, image_to_uint8, seed_to_z

from .config import DragConfig, DragFrame, DragInputError, DragJob
from .methods import check_method, run_drag

Runner = Callable[[str, DragJob], Iterator[DragFrame]]
from .engine import check_drag_memory, default_memory_budget, rowcol
from .hold import Hold, job_hold
from .rendered import KEPT
from .video import FrameRecorder, StepRecorder, export_records, steady_fps, video_format

if TYPE_CHECKING:
    from .auto import AutoDragModel


MAX_HISTORY = 50  # undo steps kept per editor (each holds a W+ latent and the points)
MAX_HOLD_BYTES = 32 << 20  # the held pictures (`Hold`) the undo steps keep, together: older steps go first


@dataclasses.dataclass
class _Snapshot:
    latent: torch.Tensor                   # [1, num_ws, w_dim]
    handles_xy: list[list[float]]
    targets_xy: list[list[float]]
    hold: Hold | None = None               # the picture kept outside the mask, when the state had one


class Editor:
    """One user's drag state over a shared, frozen generator."""

    def __init__(self, G: Generator, w0: torch.Tensor, latent_space: str = "w+", noise_mode: str = "const",
                 auto: "AutoDragModel | None" = None):
        """w0: W+ latent [1, num_ws, w_dim] (or W [1, w_dim]) to start from; auto: G's learned predictor, if any."""
        if latent_space not in ("w", "w+"):
            raise DragInputError(f"latent space must be 'w' or 'w+', got {latent_space!r}")
        self.G = G
        self.device = next(G.parameters()).device
        if w0.ndim == 2:
            w0 = w0.unsqueeze(1).repeat(1, G.num_ws, 1)
        assert w0.shape == (1, G.num_ws, G.w_dim), w0.shape
        self.w0 = w0.detach().to(self.device, torch.float32).clone()
        self.latent = self.w0.clone()          # [1, num_ws, w_dim], current W+
        self.latent_space = latent_space
        self.noise_mode = noise_mode
        self.auto = auto
        self.handles_xy: list[list[float]] = []
        self.targets_xy: list[list[float]] = []
        self.editable: np.ndarray | None = None  # [H, W] bool, True where the drag may change things
        self.history: list[_Snapshot] = []
        self.recorder = FrameRecorder()         # the last drag's frames as shown (a runner in another process)
        self.steps = StepRecorder()             # the last drag's every step, as latents: its video
        self.memory_budget = default_memory_budget(self.device)  # bytes a drag's tracking may take (a server: less)
        self.hold: Hold | None = None           # DragConfig.hold: the picture shown outside the mask (hold.py)
        self._video_hold: Hold | None = None    # the last drag's: its video shows the same pictures
        self._stop = threading.Event()
        self._image: np.ndarray | None = None

    @classmethod
    def from_seed(cls, G: Generator, seed: int, psi: float = 0.7, latent_space: str = "w+",
                  cutoff: int | None = None, **kwargs) -> "Editor":
        """Start from a seed, mapped exactly as in the official app."""
        return cls(G, seed_latent(G, seed, psi, cutoff), latent_space=latent_space, **kwargs)

    @property
    def resolution(self) -> int:
        return self.G.img_resolution

    @torch.no_grad()
    def image(self) -> np.ndarray:
        """The current picture, [H, W, 3] uint8: the latent's image, shown through the hold if there is one."""
        if self._image is None:
            image = KEPT.picture(self.G, self.latent, self.noise_mode, self.auto)  # with a predictor, its maps kept
            self._image = image if self.hold is None else self.hold.apply(image)
        return self._image

    def _set_latent(self, latent: torch.Tensor, image: np.ndarray | None = None, hold: Hold | None = None) -> None:
        self.latent = latent.detach().clone()
        self.hold = hold
        self._image = image

    def _snapshot(self) -> None:
        self.history.append(_Snapshot(self.latent.clone(), copy.deepcopy(self.handles_xy),
                                      copy.deepcopy(self.targets_xy), self.hold))
        del self.history[:-MAX_HISTORY]  # the oldest go: memory stays bounded however often one resets
        while sum(s.hold.nbytes for s in self.history if s.hold is not None) > MAX_HOLD_BYTES:
            del self.history[0]          # and however many masked drags kept a picture

    # -- editing state -----------------------------------------------------

    def set_mask(self, editable: np.ndarray | None) -> None:
        """The editable area ([H, W] or [H, W, C], nonzero = may change); None, all-empty or all-set: no mask."""
        if editable is not None:
            editable = np.asarray(editable)
            if editable.shape[:2] != (self.resolution, self.resolution):
                raise DragInputError(f"the mask is {editable.shape[1]}x{editable.shape[0]}, the image is "
                                     f"{self.resolution}x{self.resolution}")
            editable = editable.reshape(*editable.shape[:2], -1).max(axis=2) > 0
            if not editable.any():
                editable = None
        self.editable = editable

    def stop(self) -> None:
        """Ask a running drag to stop; it takes effect before its next step."""
        self._stop.set()

    def undo(self) -> bool:
        """Restore the latent and points from before the last drag (or reset). False if nothing to undo."""
        if not self.history:
            return False
        snap = self.history.pop()
        self._set_latent(snap.latent, hold=snap.hold)
        self.handles_xy, self.targets_xy = snap.handles_xy, snap.targets_xy
        return True

    def reset(self) -> None:
        """Back to w0 and its own picture (undoable), keeping the points."""
        self._snapshot()
        self._set_latent(self.w0)

    # -- the drag ----------------------------------------------------------

    def drag(self, handles_xy: Sequence[Sequence[float]], targets_xy: Sequence[Sequence[float]],
             config: DragConfig | None = None, method: str = "draggan",
             stop: threading.Event | None = None, runner: Runner | None = None) -> Iterator[DragFrame]:
        """Run a drag with `method`, yielding its frames and a last frame with done=True.

        The handles follow the tracked positions; `stop()` from another thread (or setting `stop`)
        ends the drag before its next step. Raises DragInputError for bad points, settings or
        method, before changing anything. runner(method, job) -> frames runs the job (default: run_drag
        here; the app passes one that runs it where the GPU is). If the caller stops iterating early,
        the latent of the last frame seen is kept, so the session always matches what was shown.
        Checks run when called (not when the first frame is asked for), so a refused drag leaves
        no undo entry and keeps the last drag's video.
        """
        check_method(method, self.auto is not None)  # before anything changes: an unknown method, or no predictor
        config = config or DragConfig()
        check_drag_memory(self.G, config, len(handles_xy), self.memory_budget)
        editable = None if self.editable is None else torch.from_numpy(self.editable).to(self.device)
        stop = stop or threading.Event()
        job = DragJob(self.G, self.latent, list(handles_xy), list(targets_xy), config,
                      editable=editable, latent_space=self.latent_space, noise_mode=self.noise_mode,
                      stop=stop, auto=self.auto, image=self.image(), on_step=self.steps.add)
        job.hold = job_hold(job)  # the picture outside the mask, kept (DragConfig.hold); else None
        self._stop = stop
        return self._run(method, job, runner or run_drag)

    def _run(self, method: str, job: DragJob, runner: Runner) -> Iterator[DragFrame]:
        """`drag`'s frames: the snapshot for undo and the recorder's reset happen at the first frame asked for."""
        frames = runner(method, job)
        self._snapshot()
        self.recorder.clear()
        self.steps.clear(job.targets_xy, job.handles_xy)
        self._video_hold = job.hold
        self.targets_xy = job.targets_xy
        last = None
        try:
            for last in frames:
                self.handles_xy = last.handles_xy
                if last.image is not None:
                    self.recorder.add(last.image, last.handles_xy, last.targets_xy)
                yield last
        finally:
            if last is not None and last.latent is not None:
                self._set_latent(last.latent.to(self.device), last.image if last.done else None, job.hold)
                if last.done:
                    self.steps.add(last.step, last.latent, rowcol(last.handles_xy, last.latent.device))

    def export_video(self, path, overlay: bool = True, fps: float | None = None,
                     progress: Callable[[int, int], None] | None = None):
        """Write the last drag as .mp4, .webm or .gif, every step of it (up to StepRecorder's bound, evenly
        spaced), rendered now from the recorded latents; returns the path. fps: None for a steady rate that
        shows the drag in about three seconds (steady_fps). progress(done, total) after each frame rendered.
        A drag run in another process (no step latents came back) is written from the frames it showed."""
        for kind, value in self.render_video(path, overlay=overlay, fps=fps):
            if kind == "rendering" and progress is not None:
                progress(*value)
        return value

    def render_video(self, path, overlay: bool = True, fps: float | None = None) -> Iterator[tuple[str, Any]]:
        """`export_video` in steps: ("rendering", (frames done, total)) after each frame, then ("done", path)."""
        video_format(path)  # a bad name is refused before any rendering
        steps = self.steps.steps()
        if len(steps) < 2:
            if not len(self.recorder):
                raise DragInputError("No drag to export yet: press Drag first")
            yield "done", self.recorder.export(path, overlay=overlay, fps=fps or 15.0)
            return
        records, handles = [], self.steps.start_xy
        width = content_width(self.G)     # a non-square model's video shows its own picture, not the white pad
        side = (self.resolution - width) // 2
        shift = lambda points: [[x - side, y] for x, y in points]
        hold = self._video_hold.layers() if self._video_hold is not None else None  # decoded once per video
        for i, (latent, tracked) in enumerate(steps):
            handles = tracked if tracked is not None else handles
            with torch.no_grad():
                image = image_to_uint8(self.G.synthesis(latent.to(self.device), noise_mode=self.noise_mode))
            if hold is not None:
                image = hold.blend(image)
            records.append((image[:, side:side + width], shift(handles), shift(self.steps.targets_xy)))
            yield "rendering", (i + 1, len(steps))
        fps = fps or steady_fps(len(records))
        yield "done", export_records(records, path, overlay=overlay, fps=fps, hold_last_s=1.0)


DragSession = Editor  # the name scripts written for versions 1 and 2 use


def seed_latent(G: Generator, seed: int, psi: float = 0.7, cutoff: int | None = None) -> torch.Tensor:
    """W+ [1, num_ws, w_dim] of a seed, mapped exactly as in the official app."""
    device = next(G.parameters()).device
    with torch.no_grad():
        return G.mapping(seed_to_z(int(seed), G.z_dim).to(device), truncation_psi=psi, truncation_cutoff=cutoff)
