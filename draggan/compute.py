"""One long-lived thread for the app's tensor work.

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the Linux wheels), which keeps a team of
worker threads for *each* thread that has run a parallel kernel. Once the process holds more
such workers than it has CPUs, libgomp stops spinning between kernels and puts its workers to
sleep after each one, and every small kernel pays for a wake-up. A web server runs each
request on some thread of its pool, so a drag that ran in a fresh thread after another thread
had used the model ran at half speed on 2 CPUs (toy-faces-64: 15 ms a step on one thread, 31-41
ms in a second one; `python -m draggan bench --app` measures the app against the engine).

`ComputeThread` keeps all of that work on one thread: `call` runs a function there and waits for
it; `iterate` has a generator (a drag) stepped there, a few items ahead of its reader, so the drag
does not wait for the thread that reads it, and the calls queued meanwhile (another session's
Generate) run between two of its steps instead of after the whole drag. Calls and stream items take
turns, so neither a burst of calls nor a stream starves the other. Calls from the compute
thread itself run inline. Everything runs in a copy of the caller's context (ZeroGPU's decorator
finds the request there). Nothing that runs here may wait for a lock the app holds while it
waits for this thread: the engine's own work (loading, synthesis, drag steps) never does.

Scripts and the CLI run the engine on their own thread and never need this (`Inline`).
"""
from __future__ import annotations

import collections
import contextvars
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()
AHEAD = 4  # items a stream may produce beyond what its reader has taken


class _Stream:
    """A generator stepped on the compute thread; its items wait in `buffer` for one reader."""

    def __init__(self, it: Iterator, wake: threading.Condition):
        self.it = it
        self.context = contextvars.copy_context()
        self.buffer: collections.deque = collections.deque()  # ("item" | "error" | "end", value)
        self.wake = wake
        self.cancelled = False
        self.over = False

    def ready(self) -> bool:
        """Whether the compute thread should step it now (holding `wake`)."""
        return self.cancelled or len(self.buffer) < AHEAD

    def step(self) -> None:
        """Produce one item, or finish (on the compute thread, not holding `wake`)."""
        if self.cancelled:
            close = getattr(self.it, "close", None)
            out = ("end", None)
            try:
                if close is not None:
                    self.context.run(close)
            except BaseException as e:  # noqa: BLE001 (nobody reads it any more)
                out = ("error", e)
        else:
            try:
                item = self.context.run(next, self.it, _END)
                out = ("end", None) if item is _END else ("item", item)
            except BaseException as e:  # handed to the reader
                out = ("error", e)
        with self.wake:
            self.buffer.append(out)
            self.over = out[0] != "item"
            self.wake.notify_all()

    def read(self) -> Iterator:
        """The reader's side: items as they come; leaving early cancels (closes the generator there)."""
        try:
            while True:
                with self.wake:
                    self.wake.wait_for(lambda: self.buffer)
                    kind, value = self.buffer.popleft()
                    self.wake.notify_all()  # room for the next item
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            with self.wake:
                if not self.over:
                    self.cancelled = True
                    self.wake.notify_all()


class ComputeThread:
    """A single daemon thread that runs the calls handed to it in order, and steps streams in turn."""

    def __init__(self, name: str = "draggan-compute"):
        self.name = name
        self._wake = threading.Condition()
        self._calls: collections.deque = collections.deque()  # (fn, args, kwargs, context, future)
        self._streams: list[_Stream] = []
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def on_thread(self) -> bool:
        """True when the caller is the compute thread."""
        return threading.current_thread() is self._thread

    def _ensure_started(self) -> None:  # holding _wake
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        turn, last_was_call = 0, False
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._calls or any(s.ready() for s in self._streams))
                ready = [s for s in self._streams if s.ready()]
                # Fair turns: calls and streams alternate while both wait (a burst of renders cannot starve a
                # drag); the streams take turns among themselves, one item each.
                call = self._calls.popleft() if self._calls and (not ready or not last_was_call) else None
                stream = None
                if call is None:
                    stream = ready[turn % len(ready)]
                    turn += 1
                last_was_call = call is not None
            if call is not None:
                self._run(*call)
                continue
            stream.step()
            if stream.over:
                with self._wake:
                    self._streams.remove(stream)

    @staticmethod
    def _run(fn, args, kwargs, context, future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as e:  # handed to the caller, whatever it is
            future.set_exception(e)
        else:
            future.set_result(result)

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        """Queue `fn(*args, **kwargs)` on the compute thread; its Future."""
        future: Future = Future()
        with self._wake:
            self._ensure_started()
            self._calls.append((fn, args, kwargs, contextvars.copy_context(), future))
            self._wake.notify_all()
        return future

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the compute thread (inline if already there); its result or exception."""
        if self.on_thread():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """The items of `items`, produced on the compute thread up to AHEAD items before they are read.

        Closing the returned iterator closes `items` there (a generator's `finally` runs on the compute
        thread); an exception from `items` is raised to the reader.
        """
        if self.on_thread():
            return iter(items)
        stream = _Stream(iter(items), self._wake)
        with self._wake:
            self._ensure_started()
            self._streams.append(stream)
            self._wake.notify_all()
        return stream.read()


class Inline:
    """The same interface, running everything on the caller's thread (scripts, tests of the session layer)."""

    thread = None

    def on_thread(self) -> bool:
        return True

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        return iter(items)
