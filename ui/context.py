"""What every section shares: the server's settings, the sessions, and how a session is shown."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from draggan.config import DragFrame
from draggan.gpu import gpu_task
from draggan.methods import METHODS, NO_PREDICTOR, available_methods, run_drag
from draggan.public import (PUBLIC_CLIENT_UPLOAD_BYTES, PUBLIC_DRAG_TIME_LIMIT_S, PUBLIC_MAX_DRAG_BYTES,
                            PUBLIC_MAX_UPLOAD_BYTES, PUBLIC_MIN_FREE_BYTES, PUBLIC_PHOTOS_PER_CLIENT,
                            PUBLIC_PROTECT_RECENT_S, check_free_disk, client_address)
from draggan.sessions import EditSession, SessionManager
from pti import PRESETS, PTIPreset
from stylegan2 import catalog

from .ordering import InOrder
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
    # Bounds on one visitor's work; None: the public default (draggan.public) in public mode, none elsewhere.
    drag_time_limit_s: float | None = None   # every drag stops after this long (0: no limit)
    max_drag_bytes: int | None = None        # a drag's tracking + motion memory (0: half the device's)
    protect_recent_s: float | None = None    # a session used this recently is never evicted (0: any idle one may be)
    photos_per_client: int | None = None     # tuned copies one client may hold (0: only max_photos bounds them)
    max_upload_bytes: int | None = None      # one uploaded file (0: MAX_UPLOAD, 200 MB)
    client_upload_bytes: int | None = None   # one client's uploads an hour (0: no bound)
    min_free_bytes: int | None = None        # uploads and exports need this much free cache disk (0: no guard)

    def bound(self, name: str) -> Any:
        """A bound's value: as set, else the public default in public mode; None when 0 or unset elsewhere."""
        value = getattr(self, name)
        if value is None and self.public:
            value = PUBLIC_DEFAULTS[name]
        return value or None

    def bounds(self) -> dict[str, Any]:
        """The bounds SessionManager takes, as its keywords."""
        out = {name: self.bound(name) for name in ("drag_time_limit_s", "max_drag_bytes", "photos_per_client")}
        return dict(out, protect_recent_s=self.bound("protect_recent_s") or 0.0)


PUBLIC_DEFAULTS = dict(drag_time_limit_s=PUBLIC_DRAG_TIME_LIMIT_S, max_drag_bytes=PUBLIC_MAX_DRAG_BYTES,
                       protect_recent_s=PUBLIC_PROTECT_RECENT_S, photos_per_client=PUBLIC_PHOTOS_PER_CLIENT,
                       max_upload_bytes=PUBLIC_MAX_UPLOAD_BYTES, client_upload_bytes=PUBLIC_CLIENT_UPLOAD_BYTES,
                       min_free_bytes=PUBLIC_MIN_FREE_BYTES)


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
        self.points_order = InOrder()         # each page's points events, in the order it made them

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

    def check_disk(self, folder: Any) -> None:
        """Refuse to write a file (an export, a saved image) when the disk is nearly full (min_free_bytes)."""
        check_free_disk(folder, self.settings.bound("min_free_bytes"))

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
