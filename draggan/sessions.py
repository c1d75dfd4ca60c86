"""Per-user editing sessions over shared generators: what the app keeps for each browser tab.

A `SessionManager` maps a session key (the app uses Gradio's session hash) to a `Session`: one browser
tab's state, around an `Editor` (`editor.py`, the scripting object), its points, mask and drag. Generators come from the loader (`stylegan2.checkpoints.load_generator`, which keeps one copy
per model and device, shared read-only by every session); a session holds only its latent,
points, mask, undo history and last drag's frames.

Sessions end when the app closes them (the browser left), when unused for `ttl_s`, or when
the table is full: then the least recently used *idle* session goes. A session that is dragging,
inverting or showing a photo is never evicted; if none can go, the new one is refused with a message.
One client (the app passes its IP address) holds at most `max_per_client` sessions: beyond that
its own least recently used idle session goes, never someone else's.
Every method is thread-safe: Gradio runs events of different users, and a Stop during a drag
of the same user, on different threads.

Real photos (`invert_photo`, `load_photo`, `save_photo`) are the manager's other half, in `photos.py`;
how drags wait for their turn and stream their frames is in `scheduling.py`; a session's video export, in
`exports.py`.

Imports nothing from Gradio; errors meant for the user are `UserError`s.
"""
from __future__ import annotations

import collections
import dataclasses
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from pti import InversionResult
from stylegan2.networks import Generator

from .compute import ComputeThread, Inline
from .config import (MAX_POINTS, SEED_MAX, DragConfig, DragFrame, DragInputError, check_point,  # noqa: F401
                     check_psi, check_seed, validate_points)
from .editor import Editor, Runner, seed_latent
from .engine import check_drag_memory
from .exports import SessionExports
from .methods import check_method
from .photos import PerceptualLoader, PhotoLimitError, PhotoSessions, PhotoSlots, read_photo  # noqa: F401
from .scheduling import (DRAG_BUSY, EXPORT_BUSY, DeviceSlots, DragLine, LineFullError,  # noqa: F401 (the app's imports)
                         astream_newest, stream_newest)

Loader = Callable[[str, str], Generator]  # (model spec, device) -> generator, one shared copy per model
PredictorLoader = Callable[[str, Generator], object]  # (model spec, its generator) -> AutoDragModel or None
STOP_GRACE_S = 3.0    # a drag that has not ended this long after its Stop is cut off at its last frame


class NoSessionError(DragInputError):
    """The key has no session (never generated, or closed/expired)."""


def _default_loader(spec: str, device: str) -> Generator:
    from stylegan2.checkpoints import load_generator
    return load_generator(spec, device=device, progress=True)


def _default_predictor(spec: str, G: Generator):
    from .predictors import predictor_for
    return predictor_for(spec, G)


class Session(SessionExports):
    """One user's editing state: a Editor over a shared generator (or, for a photo, over the
    session's own tuned copy), its clicked points and mask.

    Points are (x, y) image pixels and live on the Editor (`handles_xy`, `targets_xy`),
    so its undo and tracking keep them in step with the latent.
    """

    def __init__(self, key: str, model: str, device: str, editor: Editor, seed: int | None = None,
                 psi: float | None = None, photo: InversionResult | None = None):
        """seed and psi: the generated image's; photo: the inversion whose tuned copy `editor` edits."""
        assert (photo is None) == (seed is not None)
        self.key = key
        self.model = model
        self.device = device
        self.seed = seed
        self.psi = psi
        self.photo = photo
        self.editor = editor
        self.show_mask = True
        self.last_used = 0.0                     # manager clock; set by the manager
        self.client: str | None = None           # who opened it (the app: the IP address), for the per-client bound
        self._lock = threading.RLock()
        self.line = DragLine(self._lock)         # this session's drags, one at a time
        self.slots = DeviceSlots(1)              # the device's slots; the manager shares its own
        self.exports = DragLine(full=EXPORT_BUSY)  # its export (a lock of its own: a second is refused at once)
        self.export_slots = DeviceSlots(1)       # exports rendering at once; the manager shares its own
        self.runner: Runner | None = None        # where drags run (the manager's)
        self.time_limit_s: float | None = None   # every drag stops after this long (the manager's)
        self.compute: ComputeThread | Inline = Inline()  # the thread tensor work runs on (the manager's)
        self._workdir: Path | None = None
        self._files_lock = threading.Lock()      # guards _workdir (taken after _lock, never before it)
        self._closed = False

    @property
    def resolution(self) -> int:
        return self.editor.resolution

    @property
    def latent_space(self) -> str:
        return self.editor.latent_space

    @property
    def handles_xy(self) -> list[list[float]]:
        return self.editor.handles_xy

    @property
    def targets_xy(self) -> list[list[float]]:
        return self.editor.targets_xy

    @property
    def editable(self) -> np.ndarray | None:
        """[H, W] bool, True where the drag may change the image; None: no mask."""
        return self.editor.editable

    @property
    def running(self) -> bool:
        return self.line.running

    @property
    def closed(self) -> bool:
        """The session has ended (its tab left, it expired or was evicted): its jobs stop."""
        return self._closed

    @property
    def busy(self) -> bool:
        """A drag runs or waits for its turn."""
        return self.line.busy

    @property
    def queued(self) -> int:
        """This session's drags in line, the running one included."""
        return self.line.queued

    def image(self) -> np.ndarray:
        """The current image, [H, W, 3] uint8."""
        with self._lock:
            return self.compute.call(self.editor.image)

    # -- points and mask ---------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise NoSessionError("This session has ended: press Generate to start again")

    def _check_idle(self, what: str) -> None:
        if self.line.running:
            raise DragInputError(f"Wait for the drag to finish (or press Stop) before {what}")

    def add_point(self, xy: Sequence[float]) -> str:
        """Add a click: handles and targets alternate. Returns 'handle' or 'target'."""
        x, y = check_point(xy, self.resolution, "the point")
        with self._lock:
            self._check_idle("adding points")
            d = self.editor
            if len(d.handles_xy) > len(d.targets_xy):
                d.targets_xy = d.targets_xy + [[x, y]]
                return "target"
            if len(d.handles_xy) >= MAX_POINTS:
                raise DragInputError(f"At most {MAX_POINTS} handle/target pairs: drag these first, or clear some")
            d.handles_xy = d.handles_xy + [[x, y]]
            return "handle"

    def undo_point(self) -> bool:
        """Remove the last clicked point. False if there was none."""
        with self._lock:
            self._check_idle("changing points")
            d = self.editor
            if len(d.handles_xy) > len(d.targets_xy):
                d.handles_xy = d.handles_xy[:-1]
            elif d.targets_xy:
                d.targets_xy = d.targets_xy[:-1]
            else:
                return False
            return True

    def clear_points(self) -> None:
        with self._lock:
            self._check_idle("clearing points")
            self.editor.handles_xy, self.editor.targets_xy = [], []

    def set_mask(self, editable: np.ndarray | None) -> None:
        """The editable area ([H, W], nonzero = may change); None or all-empty clears it."""
        with self._lock:
            self.editor.set_mask(editable)

    # -- drag, stop, undo --------------------------------------------------

    def arm_drag(self) -> None:
        """Note that a drag was asked for (the app calls this when Drag is pressed, before the drag waits in
        the web framework's queue), so a Stop pressed before the drag reaches `run_drag` still stops it."""
        self.line.arm()

    def stop(self) -> bool:
        """Stop this session's running drag before its next step, the drags waiting to start, and the one
        asked for (`arm_drag`) that has not started waiting yet. Returns False if there was nothing to stop."""
        return self.line.stop()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no drag runs; False on timeout."""
        return self.line.wait_idle(timeout)

    def run_drag(self, handles_xy, targets_xy, config: DragConfig, method: str = "draggan",
                 report_wait: bool = False) -> Iterator[DragFrame]:
        """A drag over this session: it waits its turn (one drag at a time per session, one device slot), and a
        Stop meanwhile cancels it before it starts. Points, settings and method are checked when called, before it
        waits in line or changes anything. report_wait: while it waits for the device, yield frames with reason
        'waiting', no image, and `queue` = (place in line, rough seconds to wait or None), when the place changes
        and about every second. If the caller abandons the iterator (a client disconnects or cancels), the drag is
        stopped and run to its end, so the latent and points stay consistent."""
        handles_xy, targets_xy = validate_points(handles_xy, targets_xy, self.resolution)
        config.validate()
        if self.time_limit_s and not 0 < config.time_limit_s <= self.time_limit_s:
            config = dataclasses.replace(config, time_limit_s=self.time_limit_s)
        check_method(method, self.editor.auto is not None)
        check_drag_memory(self.editor.G, config, len(handles_xy), self.editor.memory_budget)
        self._check_open()
        if self.line.busy:
            raise DragInputError(DRAG_BUSY)
        return self.line.track(self._drag_in_line(handles_xy, targets_xy, config, method, report_wait))

    def _drag_in_line(self, handles_xy: list[list[float]], targets_xy: list[list[float]],
                      config: DragConfig, method: str, report_wait: bool) -> Iterator[DragFrame]:
        ticket = self.line.join()  # this drag's Stop (if it was armed, maybe set already)
        started = False
        try:
            waits = self.line.waiting(ticket, self.slots, lambda: self.closed)
            while True:
                try:
                    place = next(waits)
                except StopIteration as turn:
                    started = bool(turn.value)
                    break
                if report_wait:
                    yield DragFrame(0, handles_xy, targets_xy, [], float("nan"), 0.0, None, reason="waiting",
                                    queue=place)
            if not started:
                yield self._unchanged_frame(handles_xy, targets_xy)
                return
            frames = self.compute.iterate(self.editor.drag(handles_xy, targets_xy, config, method, stop=ticket,
                                                           runner=self.runner))
            finished, stop_seen = False, None
            try:
                for frame in frames:
                    finished = frame.done
                    yield frame
                    if ticket.is_set() and not finished:  # a runner in another process never sees the ticket
                        stop_seen = stop_seen or time.monotonic()
                        if time.monotonic() - stop_seen > STOP_GRACE_S:
                            break
            finally:
                if not finished:
                    ticket.set()
                    deadline = time.monotonic() + STOP_GRACE_S
                    for _ in frames:
                        if time.monotonic() > deadline:
                            break
                    frames.close()
        finally:
            self.line.leave(ticket, started, self.slots)

    def _unchanged_frame(self, handles_xy: list[list[float]], targets_xy: list[list[float]]) -> DragFrame:
        """The last frame of a drag stopped before it started."""
        d = self.editor
        dist = [float(np.hypot(t[0] - h[0], t[1] - h[1])) for h, t in zip(handles_xy, targets_xy)]
        return DragFrame(0, handles_xy, targets_xy, dist, float("nan"), 0.0, d.image(), done=True,
                         reason="stopped", latent=d.latent, start_xy=handles_xy)

    def undo(self) -> bool:
        """Undo the last drag (or reset). False if there is nothing to undo."""
        with self._lock:
            self._check_idle("undoing")
            return self.editor.undo()

    def reset(self) -> None:
        """Back to the generated image (undoable), keeping the points."""
        with self._lock:
            self._check_idle("resetting")
            self.editor.reset()

    # -- files and lifetime ------------------------------------------------

    def workdir(self) -> Path:
        """A private folder for this session's downloads, removed when the session closes (never waits for an
        export rendering under the session's lock)."""
        with self._files_lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="draggan-"))
            return self._workdir

    def close(self) -> None:
        """Stop any drag and delete this session's files."""
        with self._lock:
            self._closed = True
            if self.line.running:
                self.editor.stop()
            with self._files_lock:
                if self._workdir is not None:
                    shutil.rmtree(self._workdir, ignore_errors=True)
                    self._workdir = None


EditSession = Session  # version 2's name


class SessionManager(PhotoSessions):
    """Sessions by key, with a time to live, a bound on how many are live and on how many one client holds."""

    def __init__(self, device: str = "cpu", load: Loader | None = None, max_sessions: int = 32,
                 ttl_s: float = 1800.0, clock: Callable[[], float] = time.monotonic,
                 perceptual_loader: PerceptualLoader | None = None, max_photos: int = 4,
                 max_per_client: int | None = None, predictor_loader: PredictorLoader | None = None,
                 device_slots: int = 1, runner: Runner | None = None,
                 compute: ComputeThread | Inline | None = None, max_drag_bytes: int | None = None,
                 drag_time_limit_s: float | None = None, photos_per_client: int | None = None,
                 protect_recent_s: float = 0.0):
        """device: where generators run; load: (spec, device) -> Generator, sharing one copy per model
        (default: stylegan2.checkpoints.load_generator with custom models allowed);
        max_sessions: live sessions kept; ttl_s: idle seconds before a session ends;
        perceptual_loader: device -> PerceptualDistance for inversions (default: pti.load_perceptual);
        max_photos: sessions that may hold a tuned generator copy at once (photos and inversions in progress);
        max_per_client: sessions one client may hold (default: a quarter of max_sessions, at least 2);
        predictor_loader: (spec, G) -> the model's Auto DragGAN predictor or None (default: the catalog's);
        device_slots: long jobs (drags, inversions, experiments) that run on the device at once;
        runner: (method, DragJob) -> frames, where drags run (default: here, `methods.run_drag`);
        compute: the thread that loads models, renders and runs drag steps (the app passes one
        `ComputeThread` for all sessions; default: the caller's thread). Inversions run on their caller's.
        max_drag_bytes: the memory a drag's tracking and motion terms may take (engine.drag_memory_bytes; default:
        half the device's); drag_time_limit_s: every drag stops after this long (None: as the drag asks);
        photos_per_client: tuned copies one client may hold (None: only max_photos bounds them);
        protect_recent_s: a session used this recently is never evicted to make room (a newcomer is refused
        instead), nor is a photo session ever: visitors behind one address cannot push each other out."""
        assert max_sessions >= 1 and ttl_s > 0
        self.device = device
        self._load = load or _default_loader
        self._load_predictor = predictor_loader or _default_predictor
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client or max(2, max_sessions // 4)
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()  # LRU first
        self._lock = threading.Lock()
        self.slots = DeviceSlots(device_slots)
        self.export_slots = DeviceSlots(1)  # one export renders at a time; the others wait in our code
        self.runner = runner
        self.compute = compute or Inline()
        self.max_drag_bytes = max_drag_bytes
        self.drag_time_limit_s = drag_time_limit_s
        self.protect_recent_s = protect_recent_s
        self._init_photos(max_photos, perceptual_loader, photos_per_client)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._sessions

    def generator(self, model: str) -> Generator:
        """The shared generator for `model` on this manager's device (the loader keeps one copy).

        Raises whatever the loader raises (CheckpointError with a user-facing message).
        """
        return self.compute.call(lambda: self._load(model, self.device).eval().requires_grad_(False))

    def new_session(self, key: str, model: str, seed: int, psi: float = 0.7, latent_space: str = "w+",
                    client: str | None = None) -> Session:
        """Start (or restart) the session `key` on a generated image; its old state (a photo too) is dropped.

        client: who asks (the app passes the IP address), for the per-client bound.
        """
        seed, psi = check_seed(seed), check_psi(psi)
        def make() -> Editor:
            G = self.generator(model)
            editor = Editor(G, seed_latent(G, seed, psi), latent_space=latent_space,
                                 auto=self._load_predictor(model, G))
            editor.image()  # render now, outside any lock that readers wait on
            return editor

        editor = self.compute.call(make)
        session = Session(key, model, self.device, editor, seed, psi)
        session.client = client
        self._install(session, "generating a new image")
        return session

    def _busy(self, session: Session) -> bool:
        return session.busy or session.exports.busy or self.photos.inverting(session.key)

    def _evictable(self, session: Session) -> bool:
        """Idle, showing no photo, and not used within protect_recent_s."""
        recent = self.protect_recent_s > 0 and self._clock() - session.last_used < self.protect_recent_s
        return not (self._busy(session) or session.photo is not None or recent)

    def _install(self, session: Session, what: str) -> None:
        """Make `session` the live one for its key, closing the old one (refused while it drags).

        Makes room by evicting idle sessions only: first this client's own beyond its bound, then the
        least recently used; if every other session is busy, the new one is refused.
        """
        key = session.key
        with self._lock:
            old = self._sessions.get(key)
            if old is not None and old.running:
                raise DragInputError(f"Wait for the drag to finish (or press Stop) before {what}")
            if old is not None:
                session.client = session.client or old.client
            evicted = self._expired_locked()
            evicted += self._make_room_locked(key, session.client)
            self._sessions.pop(key, None)
            session.last_used = self._clock()
            session.slots, session.export_slots = self.slots, self.export_slots
            session.runner, session.compute = self.runner, self.compute
            session.time_limit_s = self.drag_time_limit_s
            if self.max_drag_bytes is not None:
                session.editor.memory_budget = min(session.editor.memory_budget, self.max_drag_bytes)
            self._sessions[key] = session
        for s in ([old] if old is not None else []) + evicted:
            s.close()

    def _make_room_locked(self, key: str, client: str | None) -> list[Session]:
        others = [s for k, s in self._sessions.items() if k != key]  # LRU first
        evicted = []
        if client is not None:
            own = [s for s in others if s.client == client]
            for s in [s for s in own if self._evictable(s)][:max(0, len(own) + 1 - self.max_per_client)]:
                evicted.append(self._sessions.pop(s.key))
            if len(own) - len(evicted) + 1 > self.max_per_client:
                for s in evicted:  # nothing of this client's could go: keep them all
                    self._sessions[s.key] = s
                raise DragInputError(f"You already have {self.max_per_client} sessions open here, all in use: close a "
                                     "tab, or wait a few minutes")
        idle = [s for k, s in self._sessions.items() if k != key and self._evictable(s)]
        while len(self._sessions) + (key not in self._sessions) > self.max_sessions:
            if not idle:
                for s in evicted:
                    self._sessions[s.key] = s
                raise DragInputError("The server is busy: every session is in use right now. Try again in a few minutes")
            victim = idle.pop(0)
            evicted.append(self._sessions.pop(victim.key))
        return evicted

    # -- real photos -------------------------------------------------------

    def _photo_session(self, key: str, model: str, result: InversionResult, latent_space: str,
                       client: str | None) -> Session:
        editor = Editor(result.G, result.pivot_ws, latent_space=latent_space)
        self.compute.call(editor.image)  # render now, outside any lock that readers wait on
        session = Session(key, model, self.device, editor, photo=result)
        session.client = client
        return session

    def get(self, key: str) -> Session:
        """The live session `key` (marked as just used); NoSessionError if there is none."""
        with self._lock:
            evicted = self._expired_locked()
            session = self._sessions.get(key)
            if session is not None:
                session.last_used = self._clock()
                self._sessions.move_to_end(key)
        for s in evicted:
            s.close()
        if session is None:
            raise NoSessionError("No image yet (or your session expired): press Generate first")
        return session

    def close(self, key: str) -> bool:
        """End the session `key` (the browser left), cancelling its inversion. False if there was none."""
        self.photos.forget(key)
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is None:
            return False
        session.close()
        return True

    def sweep(self) -> int:
        """End sessions idle for longer than the time to live; returns how many."""
        with self._lock:
            evicted = self._expired_locked()
        for s in evicted:
            s.close()
        return len(evicted)

    def _expired_locked(self) -> list[Session]:
        now = self._clock()
        expired = [k for k, s in self._sessions.items() if now - s.last_used > self.ttl_s and not self._busy(s)]
        return [self._sessions.pop(k) for k in expired]
