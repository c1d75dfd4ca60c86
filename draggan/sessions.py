"""Per-user editing sessions over shared generators: what the app keeps for each browser tab.

A `SessionManager` maps a session key (the app uses Gradio's session hash) to an
`EditSession`: one user's `DragSession` (`editor.py`) with its points, mask and drag-in-progress.
Generators come from the loader (`stylegan2.checkpoints.load_generator`, which keeps one copy
per model and device, shared read-only by every session); a session holds only its latent,
points, mask, undo history and last drag's frames.

Sessions end when the app closes them (the browser left), when unused for `ttl_s`, or when
the table is full: then the least recently used *idle* session goes. A session that is dragging
or inverting is never evicted; if every session is busy, the new one is refused with a message.
One client (the app passes its IP address) holds at most `max_per_client` sessions: beyond that
its own least recently used idle session goes, never someone else's.
Every method is thread-safe: Gradio runs events of different users, and a Stop during a drag
of the same user, on different threads.

Real photos (`invert_photo`, `load_photo`): a photo session edits its own tuned copy of the
generator (Pivotal Tuning Inversion, `pti`), never shared. The copy lives as long as the session
shows the photo. At most `max_photos` sessions may hold a copy at once, an inversion in progress
included (`PhotoSlots`); at the bound a new inversion is refused (`PhotoLimitError`) rather than
taking another user's photo away. The perceptual network loads once per device, on the first
inversion, and is shared read-only.

Imports nothing from Gradio; errors meant for the user are `UserError`s.
"""
from __future__ import annotations

import collections
import contextvars
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from pti import (EmbeddingError, ImageInputError, InversionResult, PerceptualDistance, PTIPreset, StageMetrics,
                 embedding_info, invert, load_embedding, load_image, load_perceptual, save_embedding)
from pti.inversion import Progress
from stylegan2.checkpoints import CheckpointError, portable_spec
from stylegan2.networks import Generator

from .compute import ComputeThread, Inline
from .config import MAX_POINTS, DragConfig, DragFrame, DragInputError, check_point, validate_points
from .editor import DragSession, Runner, seed_latent
from .methods import check_method

Loader = Callable[[str, str], Generator]  # (model spec, device) -> generator, one shared copy per model
PerceptualLoader = Callable[[str], PerceptualDistance]  # device -> perceptual distance
PredictorLoader = Callable[[str, Generator], object]  # (model spec, its generator) -> AutoDragModel or None
SEED_MAX = 2**32 - 1  # numpy RandomState seeds, as the official app
STOP_GRACE_S = 3.0    # a drag that has not ended this long after its Stop is cut off at its last frame


class NoSessionError(DragInputError):
    """The key has no session (never generated, or closed/expired)."""


class PhotoLimitError(DragInputError):
    """As many sessions as allowed already hold a tuned generator copy."""


def _default_loader(spec: str, device: str) -> Generator:
    from stylegan2.checkpoints import load_generator
    return load_generator(spec, device=device, progress=True)


def _default_predictor(spec: str, G: Generator):
    from .predictors import predictor_for
    return predictor_for(spec, G)


def _short_names(message: str, path: str | os.PathLike) -> str:
    """An upload's temporary path in a message -> its file name."""
    return message.replace(os.fspath(path), Path(path).name)


def read_photo(path: str | os.PathLike, resolution: int, crop: tuple[int, int, int, int] | None = None,
               ) -> tuple[np.ndarray, list[str]]:
    """pti.load_image with its errors as DragInputErrors that name the file, not its temporary path."""
    try:
        return load_image(path, resolution, crop)
    except ImageInputError as e:
        raise DragInputError(_short_names(str(e), path)) from None


T = TypeVar("T")


def stream_newest(items: Iterator[T], stop: Callable[[], Any]) -> Iterator[T]:
    """Run `items` in a thread of its own; each time the caller asks, yield the newest item not yet yielded.

    Older unread items are skipped (never the last one), so a slow reader (an encoder, a browser on a slow
    link) never slows the producer: a drag streams at its own pace. The producer runs in a copy of the
    caller's context (ZeroGPU's decorator reads the request from it). Abandoning this iterator calls
    `stop` and lets the producer run to its end; the producer's exception is raised here.
    """
    cond = threading.Condition()
    state: dict[str, Any] = {"item": None, "fresh": False, "done": False, "error": None}

    def produce() -> None:
        try:
            for item in items:
                with cond:
                    state["item"], state["fresh"] = item, True
                    cond.notify()
        except BaseException as e:  # handed to the reader
            state["error"] = e
        finally:
            with cond:
                state["done"] = True
                cond.notify()

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), daemon=True, name="stream-newest").start()
    finished = False
    try:
        while True:
            with cond:
                cond.wait_for(lambda: state["fresh"] or state["done"])
                if state["fresh"]:
                    item, state["fresh"] = state["item"], False
                elif state["error"] is not None:
                    finished = True
                    raise state["error"]
                else:
                    finished = True
                    return
            yield item
    finally:
        if not finished:
            stop()


class DeviceSlots:
    """At most `n` long jobs on the device at once (drags, inversions, experiments); the rest wait their turn.

    Waiting happens in our code, not in the web framework's queue, so a waiting job can still be
    stopped (its session's Stop) and reports that it waits.
    """

    def __init__(self, n: int = 1):
        assert n >= 1
        self.n = n
        self._sem = threading.BoundedSemaphore(n)

    def try_acquire(self) -> bool:
        return self._sem.acquire(blocking=False)

    def release(self) -> None:
        self._sem.release()

    def acquire(self, cancelled: threading.Event | None = None, poll_s: float = 0.05) -> bool:
        """Wait for a slot; False if `cancelled` was set first."""
        while cancelled is None or not cancelled.is_set():
            if self._sem.acquire(timeout=poll_s):
                return True
        return False


class EditSession:
    """One user's editing state: a DragSession over a shared generator (or, for a photo, over the
    session's own tuned copy), its clicked points and mask.

    Points are (x, y) image pixels and live on the DragSession (`handles_xy`, `targets_xy`),
    so its undo and tracking keep them in step with the latent.
    """

    def __init__(self, key: str, model: str, device: str, editor: DragSession, seed: int | None = None,
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
        self._running = False
        self._tickets: list[threading.Event] = []  # stop events of this session's drags, in line order
        self._armed: threading.Event | None = None  # the stop event of a drag asked for but not yet in line
        self.slots = DeviceSlots(1)              # the device's slots; the manager shares its own
        self.runner: Runner | None = None        # where drags run (the manager's)
        self.compute: ComputeThread | Inline = Inline()  # the thread tensor work runs on (the manager's)
        self._idle = threading.Event()
        self._idle.set()
        self._workdir: Path | None = None
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
        return self._running

    @property
    def busy(self) -> bool:
        """A drag runs or waits for its turn."""
        return self._running or bool(self._tickets)

    @property
    def queued(self) -> int:
        """This session's drags in line, the running one included."""
        with self._lock:
            return len(self._tickets)

    def image(self) -> np.ndarray:
        """The current image, [H, W, 3] uint8."""
        with self._lock:
            return self.compute.call(self.editor.image)

    # -- points and mask ---------------------------------------------------

    def _check_idle(self, what: str) -> None:
        if self._running:
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
        with self._lock:
            if self._armed is None or self._armed.is_set():
                self._armed = threading.Event()

    def stop(self) -> bool:
        """Stop this session's running drag before its next step, the drags waiting to start, and the one
        asked for (`arm_drag`) that has not started waiting yet.

        Returns False if there was nothing to stop.
        """
        with self._lock:
            events = self._tickets + ([self._armed] if self._armed is not None else [])
            for ticket in events:
                ticket.set()
            return bool(events)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no drag runs; False on timeout."""
        return self._idle.wait(timeout)

    def _wait_turn(self, ticket: threading.Event, poll_s: float = 0.02) -> bool:
        """Wait until this drag is first in the session's line and holds a device slot; False if stopped first."""
        while not ticket.is_set():
            with self._lock:
                if self._closed:
                    return False
                if not self._running and self._tickets[0] is ticket and self.slots.try_acquire():
                    self._running = True
                    self._idle.clear()
                    return True
            time.sleep(poll_s)
        return False

    def run_drag(self, handles_xy, targets_xy, config: DragConfig, method: str = "draggan") -> Iterator[DragFrame]:
        """A drag over this session: it waits its turn (one drag at a time per session, one device slot),
        and a Stop meanwhile cancels it before it starts.

        Points, settings and method are checked when called, before it waits in line or changes anything.
        If the caller abandons the iterator (a client disconnects or cancels), the drag is
        stopped and run to its end, so the latent and points stay consistent.
        """
        handles_xy, targets_xy = validate_points(handles_xy, targets_xy, self.resolution)
        config.validate()
        check_method(method, self.editor.auto is not None)
        if self._closed:
            raise NoSessionError("This session has ended: press Generate to start again")
        return self._drag_in_line(handles_xy, targets_xy, config, method)

    def _drag_in_line(self, handles_xy: list[list[float]], targets_xy: list[list[float]],
                      config: DragConfig, method: str) -> Iterator[DragFrame]:
        with self._lock:
            ticket, self._armed = self._armed or threading.Event(), None  # this drag's Stop (armed: maybe set)
            self._tickets.append(ticket)
        started = False
        try:
            started = self._wait_turn(ticket)
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
            with self._lock:
                self._tickets.remove(ticket)
                if started:
                    self._running = False
                    self.slots.release()
                    self._idle.set()

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
        """A private folder for this session's downloads, removed when the session closes."""
        with self._lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="draggan-"))
            return self._workdir

    def close(self) -> None:
        """Stop any drag and delete this session's files."""
        with self._lock:
            self._closed = True
            if self._running:
                self.editor.stop()
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None


class PhotoSlots:
    """Who may hold a tuned generator copy: at most `limit` keys at once, with the cancel event of each inversion.

    An inversion takes its session's slot (`reserve`) for its whole length and gives it back
    (`release`); a photo session keeps holding one through `held` (the manager's photo sessions).
    `arm` records an inversion asked for but still waiting in a queue, so `cancel` reaches it too.
    """

    def __init__(self, limit: int, held: Callable[[], set[str]]):
        """limit: copies at once; held: the keys of sessions that show a photo now (called under no lock of ours)."""
        assert limit >= 0
        self.limit = limit
        self._held = held
        self._lock = threading.Lock()
        self._inverting: dict[str, threading.Event] = {}  # key -> cancel event of its inversion in progress
        self._armed: dict[str, threading.Event] = {}      # key -> cancel event of the inversion it asked for

    def taken(self) -> set[str]:
        held = self._held()  # the manager's lock, never taken while ours is held (it calls `inverting`)
        with self._lock:
            return held | set(self._inverting)

    def arm(self, key: str) -> None:
        with self._lock:
            armed = self._armed.get(key)
            if armed is None or armed.is_set():
                self._armed[key] = threading.Event()

    def cancel(self, key: str) -> bool:
        """Cancel the inversion of `key` in progress and the one it asked for; False if there was none."""
        with self._lock:
            events = [e for e in (self._inverting.get(key), self._armed.get(key)) if e is not None]
        for e in events:
            e.set()
        return bool(events)

    def inverting(self, key: str) -> bool:
        with self._lock:
            return key in self._inverting

    def reserve(self, key: str) -> threading.Event:
        """Take a slot for `key`'s inversion; returns its cancel event. PhotoLimitError at the bound."""
        held = self._held()  # the manager's lock, never taken while ours is held (it calls `inverting`)
        with self._lock:
            if key in self._inverting:
                raise DragInputError("A photo is already being inverted in this session: wait for it, or press Cancel")
            taken = held | set(self._inverting)
            if key not in taken and len(taken) >= self.limit:
                raise PhotoLimitError(f"Too many photo sessions right now (all {self.limit} in use): try again "
                                      "in a few minutes; generated images can be edited meanwhile")
            cancel = self._armed.pop(key, None) or threading.Event()
            self._inverting[key] = cancel
            return cancel

    def release(self, key: str) -> None:
        with self._lock:
            self._inverting.pop(key, None)

    def forget(self, key: str) -> None:
        """The session `key` ended: cancel whatever it asked for."""
        self.cancel(key)
        with self._lock:
            self._armed.pop(key, None)


class SessionManager:
    """Sessions by key, with a time to live, a bound on how many are live and on how many one client holds."""

    def __init__(self, device: str = "cpu", load: Loader | None = None, max_sessions: int = 32,
                 ttl_s: float = 1800.0, clock: Callable[[], float] = time.monotonic,
                 perceptual_loader: PerceptualLoader | None = None, max_photos: int = 4,
                 max_per_client: int | None = None, predictor_loader: PredictorLoader | None = None,
                 device_slots: int = 1, runner: Runner | None = None,
                 compute: ComputeThread | Inline | None = None):
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
        `ComputeThread` for all sessions; default: the caller's thread). Inversions run on their caller's."""
        assert max_sessions >= 1 and ttl_s > 0
        self.device = device
        self._load = load or _default_loader
        self._load_predictor = predictor_loader or _default_predictor
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client or max(2, max_sessions // 4)
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: collections.OrderedDict[str, EditSession] = collections.OrderedDict()  # LRU first
        self._lock = threading.Lock()
        self.photos = PhotoSlots(max_photos, self._photo_keys)
        self.slots = DeviceSlots(device_slots)
        self.runner = runner
        self.compute = compute or Inline()
        self._load_perceptual = perceptual_loader or load_perceptual
        self._perceptual: dict[str, PerceptualDistance] = {}
        self._perceptual_lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._sessions

    @property
    def max_photos(self) -> int:
        return self.photos.limit

    def generator(self, model: str) -> Generator:
        """The shared generator for `model` on this manager's device (the loader keeps one copy).

        Raises whatever the loader raises (CheckpointError with a user-facing message).
        """
        return self.compute.call(lambda: self._load(model, self.device).eval().requires_grad_(False))

    def new_session(self, key: str, model: str, seed: int, psi: float = 0.7, latent_space: str = "w+",
                    client: str | None = None) -> EditSession:
        """Start (or restart) the session `key` on a generated image; its old state (a photo too) is dropped.

        client: who asks (the app passes the IP address), for the per-client bound.
        """
        seed, psi = check_seed(seed), check_psi(psi)
        def make() -> DragSession:
            G = self.generator(model)
            editor = DragSession(G, seed_latent(G, seed, psi), latent_space=latent_space,
                                 auto=self._load_predictor(model, G))
            editor.image()  # render now, outside any lock that readers wait on
            return editor

        editor = self.compute.call(make)
        session = EditSession(key, model, self.device, editor, seed, psi)
        session.client = client
        self._install(session, "generating a new image")
        return session

    def _busy(self, session: EditSession) -> bool:
        return session.busy or self.photos.inverting(session.key)

    def _install(self, session: EditSession, what: str) -> None:
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
            session.slots, session.runner, session.compute = self.slots, self.runner, self.compute
            self._sessions[key] = session
        for s in ([old] if old is not None else []) + evicted:
            s.close()

    def _make_room_locked(self, key: str, client: str | None) -> list[EditSession]:
        others = [s for k, s in self._sessions.items() if k != key]  # LRU first
        evicted = []
        if client is not None:
            own = [s for s in others if s.client == client]
            for s in [s for s in own if not self._busy(s)][:max(0, len(own) + 1 - self.max_per_client)]:
                evicted.append(self._sessions.pop(s.key))
            if len(own) - len(evicted) + 1 > self.max_per_client:
                for s in evicted:  # nothing of this client's could go: keep them all
                    self._sessions[s.key] = s
                raise DragInputError(f"You already have {self.max_per_client} sessions open here, all busy: close a tab "
                                     "or wait for its drag to finish")
        idle = [s for k, s in self._sessions.items() if k != key and not self._busy(s)]
        while len(self._sessions) + (key not in self._sessions) > self.max_sessions:
            if not idle:
                for s in evicted:
                    self._sessions[s.key] = s
                raise DragInputError("The server is busy: every session is working right now. Try again in a minute")
            victim = idle.pop(0)
            evicted.append(self._sessions.pop(victim.key))
        return evicted

    # -- real photos -------------------------------------------------------

    def perceptual(self) -> PerceptualDistance:
        """The perceptual network on this manager's device, loaded on first use and shared read-only.

        A failed load (PerceptualWeightsError, e.g. offline with nothing cached) is not remembered:
        the next inversion tries again.
        """
        with self._perceptual_lock:
            net = self._perceptual.get(self.device)
            if net is None:
                net = self._load_perceptual(self.device).eval().requires_grad_(False)
                self._perceptual[self.device] = net
            return net

    def photo_count(self) -> int:
        """Sessions holding a tuned generator copy now: photo sessions and inversions in progress."""
        return len(self.photos.taken())

    def _photo_keys(self) -> set[str]:
        with self._lock:
            return {k for k, s in self._sessions.items() if s.photo is not None}

    def arm_invert(self, key: str) -> None:
        """Note that an inversion was asked for (before it waits in a queue), so a Cancel meanwhile stops it."""
        self.photos.arm(key)

    def cancel_invert(self, key: str) -> bool:
        """Cancel the inversion of `key` in progress (before its next step) and the one it asked for.

        Returns False if there was nothing to cancel. The session stays as it was.
        """
        return self.photos.cancel(key)

    def inverting(self, key: str) -> bool:
        return self.photos.inverting(key)

    def _reserve_photo(self, key: str) -> threading.Event:
        """Take a photo slot for `key`; returns the cancel event of its inversion."""
        self.sweep()  # expired photo sessions give their slots back
        current = self._sessions.get(key)
        if current is not None and current.running:
            raise DragInputError("Wait for the drag to finish (or press Stop) before inverting a photo")
        return self.photos.reserve(key)

    def invert_photo(self, key: str, model: str, photo: str | os.PathLike, preset: PTIPreset,
                     crop: tuple[int, int, int, int] | None = None, latent_space: str = "w+",
                     progress: Progress | None = None, client: str | None = None) -> tuple[EditSession, list[str]]:
        """Invert the photo file into `model` (PTI) and make it the session `key`, a photo session.

        crop: (x0, y0, x1, y1) in pixels of the upright photo, None for the centre square. progress:
        called after every step with (stage 'project' | 'tune', step, total, loss). Returns the
        session and notes on how the photo was prepared. Raises pti.InversionCancelled when
        `cancel_invert(key)` is called (the session stays as it was), PhotoLimitError at the bound,
        DragInputError for an unusable photo, CheckpointError when a model or the perceptual weights
        cannot be loaded. Whatever goes wrong, the old session is untouched.
        """
        cancel = self._reserve_photo(key)
        slot = False
        try:
            G = self.generator(model)
            target, notes = read_photo(photo, G.img_resolution, crop)
            perceptual = self.perceptual()
            slot = self.slots.acquire(cancel)
            result = invert(G, target, perceptual, preset, progress=progress, cancel=cancel)
            session = self._photo_session(key, model, result, latent_space, client)
            self._install(session, "inverting a photo")
            return session, notes
        finally:
            if slot:
                self.slots.release()
            self.photos.release(key)

    def load_photo(self, key: str, path: str | os.PathLike, latent_space: str = "w+",
                   client: str | None = None) -> EditSession:
        """Make the session `key` a photo session from an embedding file (`save_photo`, `draggan invert`).

        Its base model is loaded by the spec the file names (the loader's policy applies). Raises
        EmbeddingError for a file that is not an embedding, is damaged, or was made with other weights
        than that model has here; the old session is untouched.
        """
        name = Path(path).name
        try:
            info = embedding_info(path)
        except EmbeddingError as e:
            raise EmbeddingError(_short_names(str(e), path)) from None
        self._reserve_photo(key)
        try:
            try:
                base = self.generator(info.model_spec)
            except CheckpointError as e:
                raise EmbeddingError(f"{name} was made with a model that cannot be loaded here: {e}") from None
            try:
                G, pivot = self.compute.call(load_embedding, path, self.device, base_G=base)
            except EmbeddingError as e:
                raise EmbeddingError(_short_names(str(e), path)) from None
            try:
                result = InversionResult(G, pivot, info.target, PTIPreset(**info.preset),
                                         StageMetrics(**info.metrics["projection"]),
                                         StageMetrics(**info.metrics["tuning"]))
            except (TypeError, KeyError):
                raise EmbeddingError(f"{name}: its metadata does not fit this version of the app; make it "
                                     "again with `python -m draggan invert`") from None
            if result.target is None:  # written without the photo: keep its reconstruction instead
                result.target = self.compute.call(result.image)
            session = self._photo_session(key, info.model_spec, result, latent_space, client)
            self._install(session, "loading a photo")
            return session
        finally:
            self.photos.release(key)

    def _photo_session(self, key: str, model: str, result: InversionResult, latent_space: str,
                       client: str | None) -> EditSession:
        editor = DragSession(result.G, result.pivot_ws, latent_space=latent_space)
        self.compute.call(editor.image)  # render now, outside any lock that readers wait on
        session = EditSession(key, model, self.device, editor, photo=result)
        session.client = client
        return session

    def save_photo(self, key: str) -> Path:
        """The photo session `key` as an embedding file in its workdir (the photo as inverted, not as dragged)."""
        session = self.get(key)
        if session.photo is None:
            raise DragInputError("This image is generated, not a photo: invert a photo first to save its embedding")
        path = session.workdir() / "draggan-photo.safetensors"
        return save_embedding(path, session.photo, self.generator(session.model), portable_spec(session.model))

    def get(self, key: str) -> EditSession:
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

    def _expired_locked(self) -> list[EditSession]:
        now = self._clock()
        out = []
        for key in list(self._sessions):
            s = self._sessions[key]
            if now - s.last_used > self.ttl_s and not self._busy(s):
                out.append(self._sessions.pop(key))
        return out


def check_seed(seed: float) -> int:
    """A seed as the official app takes it: a whole number in [0, 2^32 - 1]."""
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise DragInputError(f"Seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}") from None
    if not (value == value and value.is_integer() and 0 <= value <= SEED_MAX):
        raise DragInputError(f"Seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")
    return int(value)


def check_psi(psi: float) -> float:
    """Truncation psi: a number in [0, 1] (the slider's range)."""
    try:
        value = float(psi)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value <= 1:
        raise DragInputError(f"Truncation ψ must be a number from 0 to 1, got {psi!r}")
    return value
