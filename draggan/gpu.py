"""Hugging Face ZeroGPU: a GPU only inside decorated calls, a no-op everywhere else.

On a ZeroGPU Space (env SPACES_ZERO_GPU=true, package `spaces` installed) a function
decorated with `spaces.GPU(duration=...)` gets a GPU for at most `duration` seconds per
call. The `spaces` package runs it in a forked worker process: its arguments, return value
and every value it yields are pickled across, so

- what the call changes in place (a session's latent, a cache) is lost when it returns:
  pass session state in as arguments (CPU tensors or arrays) and take the new state back
  from what it returns or yields;
- arguments must pickle: no locks, no Gradio requests, no objects that hold them;
- Stop works by closing the generator (Gradio's `cancels=`), which the worker sees at the
  next yield; a flag set in the main process does not reach the worker.

Set DRAGGAN_EMULATE_ZEROGPU=1 to check those rules offline: decorated functions then
receive pickled copies of their arguments and hand back pickled copies of their results.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import pickle
from typing import Any, Callable, TypeVar

import torch

from stylegan2.checkpoints import resolve_device

F = TypeVar("F", bound=Callable[..., Any])
Duration = int | Callable[..., int]  # seconds, or a function of the call's arguments returning seconds

TRUE = ("1", "t", "true", "yes")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space: the Space says so (SPACES_ZERO_GPU) and `spaces` can be imported."""
    return _env_flag("SPACES_ZERO_GPU") and importlib.util.find_spec("spaces") is not None


def device_for_call(default: str | torch.device = "auto") -> torch.device:
    """The device a GPU task should put its tensors on: CUDA on ZeroGPU (attached during the
    call), else `default` resolved as everywhere else ("auto" -> cuda, mps, cpu)."""
    return torch.device("cuda") if on_zerogpu() else resolve_device(default)


def gpu_task(duration: Duration = 60) -> Callable[[F], F]:
    """Decorator for a function (or generator function) that needs the GPU.

    On ZeroGPU it is `spaces.GPU(duration=duration)`; `duration` is seconds, or a callable
    taking the same arguments as the function and returning seconds (ask for little: shorter
    calls are queued first). Elsewhere it returns the function itself, so signatures,
    docstrings and generator-ness are untouched (Gradio sees the same parameters).
    """
    if not (isinstance(duration, int) or callable(duration)):
        raise TypeError(f"duration must be seconds (int) or a callable returning seconds, not {duration!r}")

    def decorate(fn: F) -> F:
        if on_zerogpu():
            import spaces

            decorated = spaces.GPU(duration=duration)(fn)
            return decorated if decorated is fn else functools.wraps(fn)(decorated)
        if _env_flag("DRAGGAN_EMULATE_ZEROGPU"):
            return _across_processes(fn, duration)
        return fn

    return decorate


def _copy(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


def _across_processes(fn: F, duration: Duration) -> F:
    """`fn` seeing and returning only pickled copies, as it would in a ZeroGPU worker."""
    def check(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        seconds = duration(*args, **kwargs) if callable(duration) else duration
        assert isinstance(seconds, (int, float)) and seconds > 0, f"duration gave {seconds!r}, not seconds > 0"
        return _copy(args), _copy(kwargs)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            args, kwargs = check(args, kwargs)
            for value in fn(*args, **kwargs):
                yield _copy(value)
        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def function(*args, **kwargs):
        args, kwargs = check(args, kwargs)
        return _copy(fn(*args, **kwargs))
    return function  # type: ignore[return-value]
