"""How handlers meet Gradio: module-level handlers bound to the app's context (`bind`), the two ways a
UserError reaches a person (beside the image in the UI, `keep_on_error`; as the API's error, `user_errors`),
and `Page`, what the sections share while the page is built."""
from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import threading
from typing import Any, Callable

import gradio as gr

from stylegan2.errors import UserError


def skips(n: int) -> tuple:
    return tuple(gr.skip() for _ in range(n))


def _wrap(fn: Callable, call: Callable) -> Callable:
    """A function with fn's name, docstring and kind (plain, generator, coroutine or async generator: Gradio
    runs the last two on its event loop, holding none of its worker threads) that runs call(*args, **kwargs)."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen(*args, **kwargs):
            async for item in call(*args, **kwargs):
                yield item
        return agen

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro(*args, **kwargs):
            return await call(*args, **kwargs)
        return coro

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            yield from call(*args, **kwargs)
        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        return call(*args, **kwargs)
    return plain


def bind(fn: Callable, ctx: Any) -> Callable:
    """fn(ctx, ...) as a Gradio handler of the remaining parameters (its name, docstring and generator-ness
    kept: Gradio streams generator functions and documents the API from the docstring)."""
    handler = _wrap(fn, functools.partial(fn, ctx))
    sig = inspect.signature(fn)
    handler.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    return handler


class Notices:
    """The latest refusal shown beside each session's image ("Wait for the drag to finish ..."), so that a drag
    streaming its frames into the same line keeps showing it instead of overwriting it at its next frame."""

    def __init__(self, keep: int = 256):
        self._lock, self._keep = threading.Lock(), keep
        self._latest: collections.OrderedDict[str, str] = collections.OrderedDict()

    def note(self, request: Any, message: str) -> None:
        key = getattr(request, "session_hash", None)
        if isinstance(key, str):
            with self._lock:
                self._latest[key] = message
                self._latest.move_to_end(key)
                while len(self._latest) > self._keep:
                    self._latest.popitem(last=False)

    def get(self, request: Any) -> str | None:
        with self._lock:
            return self._latest.get(getattr(request, "session_hash", None))

    def clear(self, request: Any) -> None:
        with self._lock:
            self._latest.pop(getattr(request, "session_hash", None), None)


NOTICES = Notices()


def _request_of(args: tuple, kwargs: dict) -> Any:
    return next((a for a in (*args, *kwargs.values()) if isinstance(getattr(a, "session_hash", None), str)), None)


def _generator_guard(fn: Callable, on_error: Callable) -> Callable:
    @functools.wraps(fn)
    def gen(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except (UserError, gr.Error) as e:
            outcome = on_error(e, _request_of(args, kwargs))
            if outcome is not None:
                yield outcome
    return gen


def _plain_guard(fn: Callable, on_error: Callable) -> Callable:
    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, gr.Error) as e:
            return on_error(e, _request_of(args, kwargs))
    return plain


def _async_generator_guard(fn: Callable, on_error: Callable) -> Callable:
    @functools.wraps(fn)
    async def agen(*args, **kwargs):
        try:
            async for item in fn(*args, **kwargs):
                yield item
        except (UserError, gr.Error) as e:
            outcome = on_error(e, _request_of(args, kwargs))
            if outcome is not None:
                yield outcome
    return agen


def _coroutine_guard(fn: Callable, on_error: Callable) -> Callable:
    @functools.wraps(fn)
    async def coro(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except (UserError, gr.Error) as e:
            return on_error(e, _request_of(args, kwargs))
    return coro


def _guard(fn: Callable, on_error: Callable) -> Callable:
    if inspect.isasyncgenfunction(fn):
        return _async_generator_guard(fn, on_error)
    if inspect.iscoroutinefunction(fn):
        return _coroutine_guard(fn, on_error)
    return (_generator_guard if inspect.isgeneratorfunction(fn) else _plain_guard)(fn, on_error)


def keep_on_error(n_outputs: int, message_at: int | None) -> Callable:
    """Turn a UserError into a warning beside the image: every output skipped (unchanged) except the
    message output, which says what happened (and a drag running meanwhile keeps saying it). Wraps functions,
    generator functions and their async kinds."""
    def failed(e: Exception, request: Any) -> Any:
        message = e.message if isinstance(e, gr.Error) else str(e)
        gr.Warning(message)
        NOTICES.note(request, message)
        out = list(skips(n_outputs))
        if message_at is not None:
            out[message_at] = f"⚠️ {message}"
        return tuple(out) if n_outputs > 1 else out[0]

    def wrap(fn: Callable) -> Callable:
        guarded = _guard(fn, failed)
        guarded.__name__ = f"ui_{fn.__name__}"  # the API endpoint keeps the plain name
        return guarded
    return wrap


def _to_gradio_error(e: Exception, request: Any = None) -> None:
    if isinstance(e, gr.Error):
        raise e
    raise gr.Error(str(e), print_exception=False) from None


def user_errors(fn: Callable) -> Callable:
    """UserErrors -> gr.Error (one line, no traceback), which reaches the browser and API clients."""
    return _guard(fn, _to_gradio_error)


@dataclasses.dataclass
class Page:
    """What the sections share while the page is built: its components by name, the events that show a new
    image (the mask editor and the drag controls follow them), the wiring that must wait until every
    component exists, and how the mask editor is refreshed."""
    demo: gr.Blocks
    components: dict[str, Any] = dataclasses.field(default_factory=dict)
    new_image_events: list[Any] = dataclasses.field(default_factory=list)
    wire_later: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    refresh_mask: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.components[name]

    def __setitem__(self, name: str, component: Any) -> None:
        self.components[name] = component

    @staticmethod
    def api(name: str, fn: Callable, inputs, outputs, **kwargs) -> None:
        """An API endpoint that reports bad input as an error (the UI's own events keep the image instead)."""
        trigger = gr.Button(visible=False)
        trigger.click(user_errors(fn), inputs, outputs, api_name=name, **kwargs)
