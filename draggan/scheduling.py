"""How long jobs share the device and how their frames reach a reader.

- `stream_newest`: a producer (a drag) runs at its own pace in a thread; a slow reader gets the newest item.
  `astream_newest`: the same for a reader on an event loop (an export), which holds no thread while it waits.
- `DeviceSlots`: at most n long jobs (drags, inversions, experiments) on the device at once.
- `DragLine`: one session's drag, running or waiting for the device, with its Stop (also: one session's export).

Imports nothing from Gradio or from the rest of the app.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from stylegan2.errors import UserError

T = TypeVar("T")


class _Newest:
    """What a producer running in a thread of its own leaves for one reader: the newest item not yet taken, and
    how the producer ended. `wake` is called after each change (from the producer's thread)."""

    def __init__(self, wake: Callable[[], None] = lambda: None):
        self.cond = threading.Condition()
        self._wake = wake
        self._item: Any = None
        self._fresh = self._done = False
        self._error: BaseException | None = None

    def start(self, items: Iterator[Any]) -> None:
        """Run `items` in a daemon thread, in a copy of the caller's context (ZeroGPU's decorator reads the
        request from it)."""
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._produce, items), daemon=True, name="stream-newest").start()

    def _produce(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                with self.cond:
                    self._item, self._fresh = item, True
                    self.cond.notify()
                self._wake()
        except BaseException as e:  # handed to the reader
            self._error = e
        finally:
            with self.cond:
                self._done = True
                self.cond.notify()
            self._wake()

    def ready(self) -> bool:
        """An item to take, or the producer has ended."""
        return self._fresh or self._done

    def take(self) -> tuple[bool, Any]:
        """(True, the newest item), or (False, None) once the producer has ended (its exception raised here)."""
        with self.cond:
            if self._fresh:
                self._fresh = False
                return True, self._item
            if self._error is not None:
                raise self._error
            return False, None


def stream_newest(items: Iterator[T], stop: Callable[[], Any]) -> Iterator[T]:
    """Run `items` in a thread of its own; each time the caller asks, yield the newest item not yet yielded.

    Older unread items are skipped (never the last one), so a slow reader (an encoder, a browser on a slow
    link) never slows the producer: a drag streams at its own pace. The producer runs in a copy of the
    caller's context (ZeroGPU's decorator reads the request from it). Abandoning this iterator calls
    `stop` and lets the producer run to its end; the producer's exception is raised here.
    """
    newest = _Newest()
    newest.start(items)
    finished = False
    try:
        while True:
            with newest.cond:
                newest.cond.wait_for(newest.ready)
            finished = True  # until an item comes: an exception or the end finishes the stream
            fresh, item = newest.take()
            if not fresh:
                return
            finished = False
            yield item
    finally:
        if not finished:
            stop()


async def astream_newest(items: Iterator[T], stop: Callable[[], Any]) -> AsyncIterator[T]:
    """`stream_newest` for a reader on an event loop: the reader awaits, it never blocks a thread, so a job
    that waits in line (in its own thread) holds none of the web framework's worker threads meanwhile.
    Abandoning it (the client left) calls `stop`; the producer's exception is raised here."""
    loop = asyncio.get_running_loop()
    news = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads any more
            loop.call_soon_threadsafe(news.set)

    newest = _Newest(wake)
    newest.start(items)
    finished = False
    try:
        while True:
            news.clear()
            if not newest.ready():
                await news.wait()
                continue
            finished = True
            fresh, item = newest.take()
            if not fresh:
                return
            finished = False
            yield item
    finally:
        if not finished:  # the reader left (the client closed its page, or cancelled)
            stop()


class DeviceSlots:
    """At most `n` long jobs on the device at once (drags, inversions, experiments); the rest wait their turn,
    first come first served.

    Waiting happens in our code, not in the web framework's queue, so a waiting job can still be stopped
    (its session's Stop) and can say where it stands: `position` (1 = next) and `estimate_wait_s` (from how
    long recent jobs held a slot).
    """

    def __init__(self, n: int = 1, clock: Callable[[], float] = time.monotonic):
        assert n >= 1
        self.n = n
        self._clock = clock
        self._cond = threading.Condition()
        self._held: dict[object, float] = {}            # holder -> when it took its slot
        self._waiting: list[object] = []                # who waits, in order of arrival
        self._durations: collections.deque = collections.deque(maxlen=16)  # seconds recent jobs held a slot

    def join(self, who: object) -> None:
        """`who` starts waiting for a slot (at the end of the line)."""
        with self._cond:
            if who not in self._waiting and who not in self._held:
                self._waiting.append(who)

    def take(self, who: object) -> bool:
        """Take a slot for `who` if one is free and nobody who came earlier still waits for it."""
        with self._cond:
            if who in self._held:
                return True
            free = self.n - len(self._held)
            if who in self._waiting and self._waiting.index(who) < free:
                self._waiting.remove(who)
                self._held[who] = self._clock()
                return True
            return False

    def leave(self, who: object) -> None:
        """`who` gives up waiting (stopped, or its session ended)."""
        with self._cond:
            if who in self._waiting:
                self._waiting.remove(who)
                self._cond.notify_all()

    def position(self, who: object) -> int:
        """`who`'s place among those waiting: 1 = next; 0 = it holds a slot or is not waiting."""
        with self._cond:
            return self._waiting.index(who) + 1 if who in self._waiting else 0

    def estimate_wait_s(self, position: int) -> float | None:
        """A rough wait for the `position`-th in line: the mean hold of recent jobs per round of n slots,
        less what the current holders have already used; None before any job has finished."""
        with self._cond:
            if not self._durations:
                return None
            mean = sum(self._durations) / len(self._durations)
            now = self._clock()
            used = sorted(now - t for t in self._held.values())
            first = max(0.0, mean - used[-1]) if len(self._held) >= self.n and used else 0.0
            return first + mean * ((position - 1) // self.n)

    def release(self, who: object) -> None:
        """`who` is done with its slot."""
        with self._cond:
            start = self._held.pop(who, None)
            if start is not None:
                self._durations.append(self._clock() - start)
            self._cond.notify_all()

    def acquire(self, cancelled: threading.Event | None = None, poll_s: float = 0.05, who: object = None) -> bool:
        """Wait in line for a slot (as `who`, default: the calling thread); False if `cancelled` was set first.
        Give it back with `release(who)`."""
        who = threading.current_thread() if who is None else who
        self.join(who)
        try:
            while cancelled is None or not cancelled.is_set():
                if self.take(who):
                    return True
                with self._cond:
                    self._cond.wait(poll_s)
            return False
        finally:
            self.leave(who)


class LineFullError(UserError, ValueError):
    """A session asked for a second drag (or export) while its first still runs or waits."""


DRAG_BUSY = "A drag is already running or waiting here: wait for it, or press Stop"
EXPORT_BUSY = "An export is already running or waiting here: wait for it to finish"


class DragLine:
    """One session's drags in line: one runs at a time (holding a device slot), the others wait their turn.

    Every drag has a ticket, the event its Stop sets. `arm` makes the ticket of a drag that was asked for
    but has not joined the line yet (the app: Drag pressed, the request still in the web framework's
    queue), so a Stop meanwhile reaches it too. The owner passes its own lock, so that "no drag runs"
    and a change of the owner's state are decided under one lock. A session's exports use a line of their
    own (`full`: the line that refuses a second one).
    """

    _every: weakref.WeakSet = weakref.WeakSet()  # every line in this process, for `end_all`
    _every_lock = threading.Lock()

    def __init__(self, lock: threading.RLock | None = None, full: str = DRAG_BUSY):
        with DragLine._every_lock:
            DragLine._every.add(self)
        self._lock = lock or threading.RLock()
        self._full = full
        self._tickets: list[threading.Event] = []  # stop events of the drags in line, in order
        self._armed: threading.Event | None = None  # the stop event of a drag asked for, not yet in line
        self.running = False
        self._idle = threading.Event()
        self._idle.set()
        self._drags: weakref.WeakSet = weakref.WeakSet()  # the drags' iterators (`track`), for `end`

    @property
    def busy(self) -> bool:
        """A drag runs or waits for its turn."""
        return self.running or bool(self._tickets)

    @property
    def queued(self) -> int:
        """Drags in line, the running one included."""
        with self._lock:
            return len(self._tickets)

    def arm(self) -> None:
        """Note that a drag was asked for; a Stop from now on reaches it (a spent Stop is forgotten)."""
        with self._lock:
            if self._armed is None or self._armed.is_set():
                self._armed = threading.Event()

    def stop(self) -> bool:
        """Stop the running drag (before its next step), those waiting, and the one armed. False if none."""
        with self._lock:
            events = self._tickets + ([self._armed] if self._armed is not None else [])
            for ticket in events:
                ticket.set()
            return bool(events)

    def join(self) -> threading.Event:
        """Join the line; returns this drag's ticket (the armed one if there is one: maybe already set).

        A line holds one drag, running or waiting for the device: another is refused (LineFullError), so
        one visitor cannot pile up drags that each hold a server thread while they wait."""
        with self._lock:
            if self._tickets:
                raise LineFullError(self._full)
            ticket, self._armed = self._armed or threading.Event(), None
            self._tickets.append(ticket)
            return ticket

    def waiting(self, ticket: threading.Event, slots: DeviceSlots, closed: Callable[[], bool],
                poll_s: float = 0.02) -> Iterator[tuple[int, float | None]]:
        """Wait until `ticket` is first in line and holds a device slot, yielding (position among those waiting
        for the device, rough seconds to wait) whenever the position changes and about every second.
        Returns True when the turn is taken, False if stopped (or closed) first."""
        last, told = None, 0.0
        slots.join(ticket)
        try:
            while not ticket.is_set():
                with self._lock:
                    if closed():
                        return False
                    if not self.running and self._tickets[0] is ticket and slots.take(ticket):
                        self.running = True
                        self._idle.clear()
                        return True
                position = slots.position(ticket)
                if position and (position != last or time.monotonic() - told >= 1.0):
                    last, told = position, time.monotonic()
                    yield position, slots.estimate_wait_s(position)
                time.sleep(poll_s)
            return False
        finally:
            slots.leave(ticket)

    def wait_turn(self, ticket: threading.Event, slots: DeviceSlots, closed: Callable[[], bool],
                  poll_s: float = 0.02) -> bool:
        """`waiting`, without the reports: True when the turn is taken, False if stopped (or closed) first."""
        steps = self.waiting(ticket, slots, closed, poll_s)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return bool(done.value)

    def leave(self, ticket: threading.Event, started: bool, slots: DeviceSlots) -> None:
        """`ticket`'s drag is over (started: it held the turn and a slot, both given back now)."""
        with self._lock:
            self._tickets.remove(ticket)
            if started:
                self.running = False
                slots.release(ticket)
                self._idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no drag runs; False on timeout."""
        return self._idle.wait(timeout)

    def track(self, drag: Iterator[T]) -> Iterator[T]:
        """Note a drag's iterator (a generator that joins this line), so that `end` can finish it."""
        self._drags.add(drag)
        return drag

    def end(self, timeout: float | None = None) -> bool:
        """Stop every drag of this line and close those whose reader left them suspended (a failed test's
        traceback still holds one): each runs its own cleanup now, on this thread, and gives back its turn,
        instead of at the interpreter's exit, where a drag's tensors torn down mid-step abort the process.
        True when no drag runs (False on timeout)."""
        self.stop()
        with self._lock:
            self._armed = None  # spent: a drag asked for later must not inherit this Stop
        for drag in list(self._drags):
            if not getattr(drag, "gi_running", True):  # one being stepped elsewhere sees its Stop there
                with contextlib.suppress(ValueError):  # ... even if its step began since
                    drag.close()
        return self.wait_idle(timeout)

    @classmethod
    def end_all(cls, timeout: float | None = None) -> bool:
        """`end` every line in this process (a test's teardown, a server's exit); True when no drag runs."""
        with cls._every_lock:
            lines = list(cls._every)
        return all([line.end(timeout) for line in lines])
