"""Experiments run for an interactive session (the app's Experiment tab), with no UI code: the single-pair test
and the landmark protocol in a worker thread that holds the session's turn and a device slot, reporting as
it goes, stopped by a Stop, forgotten when it ends.

    runs = ExperimentRuns()
    with runs.start(session.key, session.line) as ticket:   # one per session; runs.stop(key) or a Stop ends it
        for event in landmark_experiment(session, ExperimentPlan(["draggan"], pairs=4), ticket, closed):
            ...                                             # Tick, then Stopped or Finished
"""
from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from draggan.config import DragConfig, DragFrame, DragInputError
from draggan.methods import METHODS, check_method

from .detectors import LandmarkDetector, get_detector
from .report import Interrupted

POLL_S = 0.5                       # a Tick at least this often while the experiment runs


class ExperimentStopped(Interrupted):
    """Raised inside a running experiment when its session pressed Stop (or its time budget ran out: reason).
    The protocol attaches the summary of the edits it finished (`result`, see report.Interrupted)."""

    def __init__(self, reason: str = "stopped"):
        super().__init__(reason)
        self.reason = reason


# Which detector fits which catalog models (by what they show): the toy-faces colour oracle fits the toy-faces
# model only; dlib's face landmarks fit photographic human faces. Elsewhere the protocols measure nothing.
DETECTOR_FITS = {"toy": ("cartoon faces",), "dlib": ("human faces",)}


def detectors_for(model: str) -> list[str]:
    """The detectors that fit `model`: by its catalog entry; a model outside the catalog (a trusted server's
    own file) gets every detector, its owner knowing what it shows."""
    from stylegan2 import catalog

    try:
        shows = catalog.get_entry(model).shows
    except (KeyError, AttributeError):
        return list(DETECTOR_FITS)
    return [name for name, fits in DETECTOR_FITS.items() if shows in fits]


def check_detector(model: str, detector: str) -> None:
    """A DragInputError unless `detector` fits `model` (detectors_for)."""
    fitting = detectors_for(model)
    if detector not in fitting:
        which = f"only the {', '.join(fitting)} detector" if fitting else "no landmark detector"
        raise DragInputError(f"The {detector} detector does not fit this model ({which} does): landmark tests "
                             f"need a model whose faces the detector can find")


class _CheckedDetector:
    """A detector that calls `check` (Stop, the time budget) before every detection: every phase of an
    experiment detects landmarks on each render, pair selection included."""

    def __init__(self, detector: LandmarkDetector, check: Callable[[], None]):
        self._detector, self._check = detector, check

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def detect(self, *args, **kwargs):
        self._check()
        return self._detector.detect(*args, **kwargs)


@dataclasses.dataclass
class ExperimentPlan:
    """A landmark experiment as the app runs it."""
    methods: list[str]
    pairs: int = 4
    max_steps: int = 200
    points: int = 1
    feature_block: int | None = None  # None: the model's
    budget_s: float | None = None     # the whole run stops after this long (a public server's bound)


@dataclasses.dataclass
class Tick:
    done: int                      # edits finished
    total: int
    seconds: float


@dataclasses.dataclass
class Stopped:
    done: int
    total: int
    reason: str = "stopped"        # or "budget": the plan's budget_s ran out
    result: Any = None             # the ExperimentResult of the edits finished before the stop (or None)


@dataclasses.dataclass
class Finished:
    result: Any                    # the landmark protocol's ExperimentResult
    files: list[Path]              # experiment.json, experiment.csv
    plot: Path | None              # the decay plot, if matplotlib drew one
    note: str | None               # why there is no plot
    total: int
    seconds: float


class ExperimentRuns:
    """The running experiments by session key: at most one per session, standing in the session's line as a
    drag would (the session is busy meanwhile: never evicted or expired, its drags wait behind it, its Stop
    stops it); `stop` reaches it; its entry goes when its stream ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._stops)

    def running(self, key: str) -> bool:
        with self._lock:
            return key in self._stops

    def stop(self, key: str) -> bool:
        """Stop the session's experiment, if one runs."""
        with self._lock:
            event = self._stops.get(key)
        if event is not None:
            event.set()
        return event is not None

    @contextlib.contextmanager
    def start(self, key: str, line: Any) -> Iterator[threading.Event]:
        """Join the session's line (`line`: its DragLine); yields the ticket, which Stop sets. The work that
        holds the ticket must leave the line (`session_turn`)."""
        with self._lock:
            if key in self._stops:
                raise DragInputError("An experiment is already running in this tab: wait for it, or press Stop")
            ticket = self._stops[key] = line.join()
        try:
            yield ticket
        finally:
            ticket.set()  # a stream abandoned by its reader stops its worker too
            with self._lock:
                del self._stops[key]


@contextlib.contextmanager
def session_turn(sess: Any, ticket: threading.Event, closed: Callable[[], bool]) -> Iterator[bool]:
    """Wait for the session's turn and a device slot with `ticket` (from ExperimentRuns.start); yields False if
    stopped (or the session closed) first. Leaves the line at the end, whatever happened."""
    started = False
    try:
        started = sess.line.wait_turn(ticket, sess.slots, closed)
        yield started
    finally:
        sess.line.leave(ticket, started, sess.slots)


def check_plan(plan: ExperimentPlan, max_pairs: int, has_predictor: bool) -> ExperimentPlan:
    """Refuse what the app does not run, in one line each, before anything starts."""
    if not 1 <= plan.pairs <= max_pairs:
        raise DragInputError(f"pairs must be from 1 to {max_pairs} on this server")
    if not plan.methods:
        raise DragInputError(f"methods: one or more of {', '.join(METHODS)}")
    for method in plan.methods:
        check_method(method, has_predictor)
    if plan.points not in (1, 5):
        raise DragInputError(f"points must be 1 or 5 for the toy-faces detector, got {plan.points!r}")
    if not 1 <= plan.max_steps <= 10_000:
        raise DragInputError(f"max_steps must be from 1 to 10000, got {plan.max_steps}")
    return plan


def _work(sess: Any, plan: ExperimentPlan, stop: threading.Event, closed: Callable[[], bool],
          events: queue.Queue) -> None:
    """The worker thread: pairs, the protocol, the decay curve of the first pair; everything goes to `events`."""
    from .decay import DecaySettings, run_decay
    from .landmarks import LandmarkSettings, run_landmarks
    from .pairs import landmark_pairs
    from .workbench import Bench, BenchSpec

    since = [time.monotonic()]  # the budget counts from the run's turn, not from its wait for one

    def check() -> None:
        if stop.is_set() or closed():
            raise ExperimentStopped()
        if plan.budget_s is not None and time.monotonic() - since[0] > plan.budget_s:
            raise ExperimentStopped("budget")

    def progress(label: str) -> None:
        events.put(label)
        check()

    try:
        with session_turn(sess, stop, closed) as started:
            if not started:
                raise ExperimentStopped()
            since[0] = time.monotonic()
            detector = _CheckedDetector(get_detector("toy"), check)
            bench = Bench(sess.editor.G, detector, sess.editor.auto, BenchSpec(sess.model), stop=stop)
            settings = LandmarkSettings(max_steps=plan.max_steps, feature_block=plan.feature_block, points=plan.points)
            pairs = landmark_pairs(bench.G, bench.detector, plan.pairs, plan.points, settings.seed, settings.psi)
            result = run_landmarks(bench, plan.methods, settings, pairs, progress=progress)
            decay = run_decay(bench, plan.methods, DecaySettings(max_steps=plan.max_steps, points=plan.points,
                                                                 feature_block=plan.feature_block), pairs[:1])
        events.put((result, decay))
    except Exception as e:  # reported by the stream
        events.put(e)


def _write(folder: Path, result: Any, decay: Any) -> tuple[list[Path], Path | None, str | None]:
    from .decay import plot_decay

    files = [folder / "experiment.json", folder / "experiment.csv"]
    result.write_json(files[0])
    result.write_csv(files[1])
    note = plot_decay(decay, folder / "decay.png")
    plot = folder / "decay.png"
    return files, plot if plot.exists() else None, note


def landmark_experiment(sess: Any, plan: ExperimentPlan, ticket: threading.Event, closed: Callable[[], bool],
                        poll_s: float = POLL_S) -> Iterator[Tick | Stopped | Finished]:
    """Run the landmark protocol on the session's model in a worker thread that holds `ticket`'s turn in the
    session's line (ExperimentRuns.start) and leaves it; yield a Tick per finished edit and at least every
    poll_s, then Stopped or Finished (its files in the session's folder, taken now: a session that ends
    meanwhile takes its folder along, never to be made again). Errors are raised here."""
    folder = sess.workdir()
    total = plan.pairs * len(plan.methods)
    events: queue.Queue = queue.Queue()
    threading.Thread(target=_work, args=(sess, plan, ticket, closed, events), daemon=True,
                     name="experiment").start()
    done, t0 = 0, time.monotonic()
    while True:
        try:
            item = events.get(timeout=poll_s)
        except queue.Empty:
            yield Tick(done, total, time.monotonic() - t0)
            continue
        if isinstance(item, str):
            done += 1
            yield Tick(done, total, time.monotonic() - t0)
        elif isinstance(item, ExperimentStopped):
            yield Stopped(done, total, item.reason, item.result)
            return
        elif isinstance(item, Exception):
            raise item
        else:
            if not folder.is_dir():
                raise DragInputError("This session ended during the experiment: press Generate to start again")
            files, plot, note = _write(folder, *item)
            yield Finished(item[0], files, plot, note, total, time.monotonic() - t0)
            return


@dataclasses.dataclass
class SinglePairResult:
    found: np.ndarray              # [N, 2] landmarks detected on the result (NaN where not found)
    goal: np.ndarray               # [N, 2] the target image's landmarks
    md_before: float
    md_after: float
    last: DragFrame


def single_pair(sess: Any, detector: LandmarkDetector, seed: int, n_points: int,
                config: DragConfig) -> Iterator[DragFrame | SinglePairResult]:
    """The Qt panel's single-pair test: the current image's landmarks dragged to those of another seed's image.
    Yields the drag's frames, then a SinglePairResult."""
    from draggan.editor import seed_latent
    from draggan.engine import render

    G = sess.editor.G
    goal = detector.detect(sess.compute.call(lambda: render(G, seed_latent(G, seed, sess.psi or 0.7), "const")),
                           n_points)
    start = detector.detect(sess.image(), n_points)
    if not (np.isfinite(goal).all() and np.isfinite(start).all()):
        raise DragInputError("The detector did not find every landmark on both images: try another target seed")
    frame = None
    for frame in sess.run_drag(start.tolist(), goal.tolist(), config):
        yield frame
    found = detector.detect(sess.image(), n_points)
    md = float(np.linalg.norm(found - goal, axis=1).mean()) if np.isfinite(found).all() else float("nan")
    yield SinglePairResult(found, goal, float(np.linalg.norm(start - goal, axis=1).mean()), md, frame)
