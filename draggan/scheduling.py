"""How long jobs share the device and how their frames reach a reader.

- `stream_newest`: a producer (a drag) runs at its own pace in a thread; a slow reader gets the newest item.
- `DeviceSlots`: at most n long jobs (drags, inversions, experiments) on the device at once.
- `DragLine`: one session's drag, running or waiting for the device, with its Stop.

Imports nothing from Gradio or from the rest of the app.
"""
from __future__ import annotations

import contextvars
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from stylegan2.errors import UserError

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


class LineFullError(UserError, ValueError):
    """A session asked for a second drag while its first still runs or waits."""


class DragLine:
    """One session's drags in line: one runs at a time (holding a device slot), the others wait their turn.

    Every drag has a ticket, the event its Stop sets. `arm` makes the ticket of a drag that was asked for
    but has not joined the line yet (the app: Drag pressed, the request still in the web framework's
    queue), so a Stop meanwhile reaches it too. The owner passes its own lock, so that "no drag runs"
    and a change of the owner's state are decided under one lock.
    """

    def __init__(self, lock: threading.RLock | None = None):
        self._lock = lock or threading.RLock()
        self._tickets: list[threading.Event] = []  # stop events of the drags in line, in order
        self._armed: threading.Event | None = None  # the stop event of a drag asked for, not yet in line
        self.running = False
        self._idle = threading.Event()
        self._idle.set()

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
                raise LineFullError("A drag is already running or waiting here: wait for it, or press Stop")
            ticket, self._armed = self._armed or threading.Event(), None
            self._tickets.append(ticket)
            return ticket

    def wait_turn(self, ticket: threading.Event, slots: DeviceSlots, closed: Callable[[], bool],
                  poll_s: float = 0.02) -> bool:
        """Wait until `ticket` is first in line and holds a device slot; False if stopped (or closed) first."""
        while not ticket.is_set():
            with self._lock:
                if closed():
                    return False
                if not self.running and self._tickets[0] is ticket and slots.try_acquire():
                    self.running = True
                    self._idle.clear()
                    return True
            time.sleep(poll_s)
        return False

    def leave(self, ticket: threading.Event, started: bool, slots: DeviceSlots) -> None:
        """`ticket`'s drag is over (started: it held the turn and a slot, both given back now)."""
        with self._lock:
            self._tickets.remove(ticket)
            if started:
                self.running = False
                slots.release()
                self._idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no drag runs; False on timeout."""
        return self._idle.wait(timeout)
