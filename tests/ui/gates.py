"""Step hooks for app tests: a drag runner that pauses a drag at a step until the test lets it go on, so a test
can act (press Stop, start another drag) at a known step instead of racing the clock."""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator


class StepGate:
    """Wraps a session's drag runner: after the frame of step `at` (or the first frame after it), the drag waits
    until `resume` is set. `paused` is set, and `paused_step` says at which step, once it waits."""

    def __init__(self, runner: Callable, at: int = 3, timeout_s: float = 120):
        self.runner, self.at, self.timeout_s = runner, at, timeout_s
        self.paused, self.resume = threading.Event(), threading.Event()
        self.paused_step: int | None = None

    def __call__(self, method: str, job: Any) -> Iterator[Any]:
        return self._gated(self.runner(method, job))

    def _gated(self, frames: Iterator[Any]) -> Iterator[Any]:
        for frame in frames:
            yield frame
            if not frame.done and frame.step >= self.at and not self.paused.is_set():
                self.paused_step = frame.step
                self.paused.set()
                assert self.resume.wait(self.timeout_s), "the test never let the drag go on"


def gate_session(sessions: Any, key: str, at: int = 3) -> StepGate:
    """Put a StepGate on the drags of session `key`."""
    sess = sessions.get(key)
    gate = StepGate(sess.runner, at)
    sess.runner = gate
    return gate
