"""What every section shares: the server's settings, the sessions, and how a session is shown."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from draggan.config import DragFrame
from draggan.gpu import gpu_task
from draggan.methods import METHODS, NO_PREDICTOR, available_methods, run_drag
from draggan.public import client_address
from draggan.sessions import EditSession, SessionManager
from pti import PRESETS, PTIPreset
from stylegan2 import catalog

from .views import render_view

HELP_TEXT = ("Click a **handle** (red disc) and then its **target** (blue square); add as many pairs as you like, "
             "then press **Drag**.")
NO_IMAGE = "No image yet: press Generate, or invert a photo."


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


def _drag_seconds(method: str, job) -> int:
    return int(min(120, 10 + job.config.max_steps * 0.25))


@gpu_task(duration=_drag_seconds)
def device_drag(method: str, job) -> Iterator[DragFrame]:
    """A drag where the GPU is. On ZeroGPU the job is pickled into a worker: its stop event stays
    behind, so the session closes this generator instead (see EditSession.run_drag)."""
    yield from run_drag(method, job)


class AppContext:
    """The sessions, the server settings, and how a session's state is shown. Knows no drag algorithm."""

    def __init__(self, sessions: SessionManager, settings: ServerSettings, default_model: str, device_label: str,
                 presets: dict[str, PTIPreset] | None = None):
        self.sessions = sessions
        self.settings = settings
        self.default_model = default_model
        self.device_label = device_label
        self.presets = dict(presets or PRESETS)
        self.on_load: Callable | None = None  # the first-load handler, for tests without a browser

    def session(self, request: Any) -> EditSession:
        return self.sessions.get(request.session_hash)

    def has_session(self, request: Any) -> bool:
        return request.session_hash in self.sessions

    def model_of(self, request: Any) -> str:
        """The session's model, or the default one before it has an image."""
        return self.session(request).model if self.has_session(request) else self.default_model

    @staticmethod
    def client(request: Any) -> str | None:
        return client_address(request)

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

    def unchanged(self, request: Any) -> tuple:
        """View, status and hint of the session as it is (None and a hint if it has no image)."""
        if not self.has_session(request):
            return None, NO_IMAGE, HELP_TEXT
        sess = self.session(request)
        return self.view(sess), self.status(sess), self.points_text(sess)

    @staticmethod
    def file_stem(sess: EditSession) -> str:
        return "draggan-photo" if sess.photo is not None else f"draggan-seed{sess.seed}"

    @staticmethod
    def app_methods(sess: EditSession | None) -> list[str]:
        """The methods the app offers for the session's model."""
        has = sess is not None and sess.editor.auto is not None
        return available_methods(has, in_app=True)

    def method_choices(self, sess: EditSession | None) -> tuple[list, str]:
        """The Method radio's choices for the session's model, and a line about Auto."""
        has = sess is not None and sess.editor.auto is not None
        note = "" if has else f"Auto is off: {NO_PREDICTOR}."
        return [(METHODS[m].label, m) for m in self.app_methods(sess)], note
