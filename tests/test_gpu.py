"""ZeroGPU wiring: a no-op off ZeroGPU, spaces.GPU with the right duration on it, and the offline emulation."""
import inspect
import sys
import threading
import types

import pytest
import torch

from draggan import gpu


def drag_like(latent: list[float], steps: int = 3, *, lr: float = 0.1):
    """Yields the latent after each of `steps` steps."""
    for _ in range(steps):
        latent = [x + lr for x in latent]
        yield latent


def generate_like(seed: int, psi: float = 0.7) -> int:
    """Returns the seed doubled."""
    return seed * 2


@pytest.fixture
def off_zerogpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("DRAGGAN_EMULATE_ZEROGPU", raising=False)


@pytest.fixture
def fake_spaces(monkeypatch):
    """A `spaces` module whose GPU records its duration and wraps like the real one (a new function)."""
    calls = []

    def GPU(task=None, *, duration=None, size=None):
        def decorate(fn):
            calls.append((fn, duration))
            if inspect.isgeneratorfunction(fn):
                def wrapper(*args, **kwargs):
                    yield from fn(*args, **kwargs)
            else:
                def wrapper(*args, **kwargs):
                    return fn(*args, **kwargs)
            return wrapper
        return decorate(task) if callable(task) else decorate

    module = types.ModuleType("spaces")
    module.GPU = GPU
    module.__spec__ = types.SimpleNamespace(name="spaces")
    monkeypatch.setitem(sys.modules, "spaces", module)
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: object() if name == "spaces" else None)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    return calls


def test_off_zerogpu_the_functions_are_returned_untouched(off_zerogpu):
    assert not gpu.on_zerogpu()
    assert gpu.gpu_task(120)(drag_like) is drag_like
    assert gpu.gpu_task(lambda seed, psi=0.7: 10)(generate_like) is generate_like
    assert list(drag_like([0.0], 2)) == [[0.1], [0.2]]
    assert gpu.device_for_call("cpu") == torch.device("cpu")


def test_the_env_flag_alone_is_not_zerogpu(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: None)  # `spaces` not installed
    assert not gpu.on_zerogpu()


def test_on_zerogpu_spaces_gpu_gets_the_duration_and_the_function_still_runs(fake_spaces):
    assert gpu.on_zerogpu() and gpu.device_for_call("cpu") == torch.device("cuda")

    def seconds(latent, steps=3, *, lr=0.1):
        return 5 + steps

    drag = gpu.gpu_task(seconds)(drag_like)
    generate = gpu.gpu_task(20)(generate_like)
    assert [(fn, d) for fn, d in fake_spaces] == [(drag_like, seconds), (generate_like, 20)]
    # still a generator function and a plain function, with the same parameters and docs for Gradio
    assert inspect.isgeneratorfunction(drag) and not inspect.isgeneratorfunction(generate)
    assert inspect.signature(drag) == inspect.signature(drag_like) and drag.__doc__ == drag_like.__doc__
    assert inspect.signature(generate) == inspect.signature(generate_like) and generate.__name__ == "generate_like"
    assert list(drag([1.0], 2, lr=1.0)) == [[2.0], [3.0]] and generate(4) == 8


def test_duration_must_be_seconds_or_a_function(off_zerogpu):
    with pytest.raises(TypeError, match="duration must be seconds"):
        gpu.gpu_task("60")


def test_emulation_passes_copies_like_a_zerogpu_worker(off_zerogpu, monkeypatch):
    monkeypatch.setenv("DRAGGAN_EMULATE_ZEROGPU", "1")
    state = {"latent": torch.zeros(2)}

    @gpu.gpu_task(30)
    def step_in_place(session: dict) -> torch.Tensor:
        session["latent"] += 1          # lost on ZeroGPU: the worker changes its own copy
        return session["latent"]

    out = step_in_place(state)
    assert out.tolist() == [1.0, 1.0] and state["latent"].tolist() == [0.0, 0.0]

    drag = gpu.gpu_task(lambda latent, steps=3, *, lr=0.1: 10)(drag_like)
    assert inspect.isgeneratorfunction(drag) and inspect.signature(drag) == inspect.signature(drag_like)
    assert list(drag([0.0], 2)) == [[0.1], [0.2]]

    @gpu.gpu_task(30)
    def with_lock(lock) -> None:
        pass

    with pytest.raises(TypeError, match="pickle"):  # what would fail on the Space fails here too
        with_lock(threading.Lock())


def test_emulation_checks_the_duration_function(off_zerogpu, monkeypatch):
    monkeypatch.setenv("DRAGGAN_EMULATE_ZEROGPU", "1")
    bad = gpu.gpu_task(lambda seed: 0)(generate_like)
    with pytest.raises(AssertionError, match="duration gave 0"):
        bad(3)
    wrong_args = gpu.gpu_task(lambda: 10)(generate_like)  # must take the function's arguments
    with pytest.raises(TypeError):
        wrong_args(3)
