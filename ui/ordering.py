"""A page's numbered events applied in the order the page numbered them, whatever order their requests arrive in.

The browser sends each event as its own HTTP request, and two sent within a millisecond can reach the server
swapped: a handle and its target, or a Clear and the click after it. So the page numbers its points events
(1, 2, 3, ... in the order the person made them) and `InOrder` applies event n only after n-1. An early
arrival waits in `pending` (its handler returns at once, it never blocks: the events share one worker) and is
applied, in order, by the handler of the event that fills the gap. A gap that never fills (a lost request)
does not freeze the page: once `max_pending` events wait, or the oldest has waited `max_wait_s` when the next
one arrives, everything pending is applied in order and the gap is skipped. An event without a number (API
clients, tests), or one whose number was skipped or already applied, applies at once.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Callable, Hashable

from stylegan2.errors import UserError

log = logging.getLogger(__name__)

Action = Callable[[], object]


@dataclasses.dataclass
class _Line:
    """One page's events: the number it applies next, and those that came early (number -> arrival, action)."""
    next: int = 1
    pending: dict[int, tuple[float, Action]] = dataclasses.field(default_factory=dict)


class InOrder:
    """Applies each page's numbered actions in number order. Holds at most `keep` pages (the least recently
    used one goes first) and at most `max_pending` early actions per page."""

    def __init__(self, max_pending: int = 16, max_wait_s: float = 2.0, keep: int = 256,
                 clock: Callable[[], float] = time.monotonic):
        self.max_pending, self.max_wait_s, self.keep, self._clock = max_pending, max_wait_s, keep, clock
        self._lock = threading.Lock()  # taken before any session's lock, never after one
        self._lines: collections.OrderedDict[Hashable, _Line] = collections.OrderedDict()

    def apply(self, key: Hashable, seq: int | None, action: Action) -> list[UserError | None]:
        """Take page `key`'s event number `seq` (None: not numbered) and run every action now due, in order.
        Returns one outcome per action run (None, or the UserError it raised), in the order they ran: empty
        when this one waits for an earlier number. Other exceptions propagate; the actions after the one that
        raised stay pending and run with the next event."""
        with self._lock:
            line = self._line(key) if seq is not None else None
            if line is None or seq < line.next or seq in line.pending:
                return [self._run(action)]
            now = self._clock()
            line.pending[seq] = (now, action)
            oldest = min(arrived for arrived, _ in line.pending.values())
            release = len(line.pending) >= self.max_pending or now - oldest >= self.max_wait_s
            if release and line.next not in line.pending:
                log.warning("points: event %d never arrived; %d later events applied without it",
                            line.next, len(line.pending))
            outcomes = []
            while line.pending and (release or line.next in line.pending):
                n = line.next if line.next in line.pending else min(line.pending)
                _, due = line.pending.pop(n)
                line.next = n + 1
                outcomes.append(self._run(due))
            return outcomes

    def pending(self, key: Hashable) -> list[int]:
        """The numbers of page `key`'s events waiting for an earlier one."""
        with self._lock:
            line = self._lines.get(key)
            return sorted(line.pending) if line else []

    def forget(self, key: Hashable) -> None:
        """The page is gone (its tab closed)."""
        with self._lock:
            self._lines.pop(key, None)

    def _line(self, key: Hashable) -> _Line:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
            while len(self._lines) > self.keep:
                _, dropped = self._lines.popitem(last=False)
                if dropped.pending:
                    log.warning("points: %d early events of an idle page dropped", len(dropped.pending))
        self._lines.move_to_end(key)
        return line

    @staticmethod
    def _run(action: Action) -> UserError | None:
        try:
            action()
        except UserError as e:
            return e
        return None
