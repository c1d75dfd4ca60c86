"""A session's video export, in turn with every other session's (`SessionExports`, part of `Session`).

A session holds one export, running or waiting (a second is refused at once); one export renders at a time
on the server (the manager's `export_slots`). While it waits it reports its place in line and a rough wait as a
drag does (`DragLine.waiting`, `DeviceSlots.estimate_wait_s`), so whoever reads it can say so; the app awaits
it on the event loop (`scheduling.astream_newest`), holding no worker thread meanwhile.

Imports nothing from Gradio.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

from .scheduling import EXPORT_BUSY, LineFullError


class SessionExports:
    """The export methods of `Session` (which has the line, the slots, the lock and the editor they use)."""

    def export_steps(self, path, overlay: bool = True,
                     stop: threading.Event | None = None) -> Iterator[tuple[str, Any]]:
        """The last drag as a video, in steps: ("waiting", (place in line, rough seconds or None)) while it waits
        its turn among all sessions' exports here (the drags' line and estimate: `DragLine.waiting`; when the
        place changes and about every second), then ("rendering", (frames done, total)) as `Editor.render_video`
        renders on the compute thread, and last ("done", path). A second one while this one runs or waits is
        refused at once (LineFullError); `stop` set (its reader left) ends the wait, or the render before its
        next frame."""
        self._check_open()
        if self.exports.busy:
            raise LineFullError(EXPORT_BUSY)
        return self._export_in_line(path, overlay, stop or threading.Event())

    def _export_in_line(self, path, overlay: bool, stop: threading.Event) -> Iterator[tuple[str, Any]]:
        ticket = self.exports.join()
        started = False
        try:
            waits = self.exports.waiting(ticket, self.export_slots, lambda: self.closed or stop.is_set())
            while True:
                try:
                    yield "waiting", next(waits)
                except StopIteration as turn:
                    started = bool(turn.value)
                    break
            if not started:
                self._check_open()  # ended by the session's end, or stopped by its reader
                return
            with self._lock:
                self._check_idle("exporting its video")
                steps = self.compute.iterate(self.editor.render_video(path, overlay=overlay))
                try:
                    for step in steps:
                        yield step
                        if stop.is_set():
                            return
                finally:
                    steps.close()
        finally:
            self.exports.leave(ticket, started, self.export_slots)

    def export_video(self, path, overlay: bool = True, progress: Callable[[int, int], None] | None = None):
        """`export_steps`, waited for here: the path; progress(done, total) after each frame rendered."""
        written = None
        for kind, value in self.export_steps(path, overlay):
            if kind == "rendering" and progress is not None:
                progress(*value)
            elif kind == "done":
                written = value
        return written
