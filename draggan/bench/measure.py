"""What every bench line shares: the generator, the points, peak memory, a device sync, fresh processes."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

import torch

from draggan.config import APP_FRAME_RATE, APP_FRAME_SHARE

APP_PACING = (1 / APP_FRAME_RATE, APP_FRAME_SHARE)  # (frame_interval_s, frame_share) as the app runs a drag


class PeakMemory:
    """Peak memory above the starting point while the block runs: the allocator's on CUDA, RSS elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = self._peak = self._rss()
            self._done = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.002):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._done.set()
            self._thread.join()
            peak = max(self._peak, self._rss())
        self.peak_mb = (peak - self._start) / 2 ** 20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def drag_points(res: int) -> tuple[list[list[float]], list[list[float]]]:
    """(handles, targets) as (x, y) image pixels: far from their targets, so no handle arrives within the timed steps."""
    return [[0.3 * res, 0.4 * res], [0.6 * res, 0.5 * res]], [[0.7 * res, 0.4 * res], [0.2 * res, 0.9 * res]]


# Random-weight generators the bench builds (`--arch`), at full width, as NVIDIA's and the official configs set
# them: StyleGAN2 (channel base 32768), StyleGAN3 config T (32768 / 512) and config R (kernel 1, radial filters,
# channel base and max doubled, as NVIDIA's train.py sets them), StyleGAN-Human (H x H/2, 8 mapping layers).
ARCHS = ("stylegan2", "stylegan3-t", "stylegan3-r", "human")


def random_generator(arch: str, res: int):
    """A random-weight generator of `arch` (see ARCHS) at resolution `res` (seeded: every process builds the same)."""
    from stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    if arch == "stylegan2":
        return Generator(GeneratorConfig(img_resolution=res))
    if arch == "human":
        return Generator(GeneratorConfig(img_resolution=res, square=False))
    if arch in ("stylegan3-t", "stylegan3-r"):
        from stylegan2.stylegan3 import Generator as StyleGAN3
        from stylegan2.stylegan3_config import StyleGAN3Config

        r = dict(conv_kernel=1, use_radial_filters=True, channel_base=65536, channel_max=1024) if arch.endswith("r") else {}
        return StyleGAN3(StyleGAN3Config(img_resolution=res, **r))
    raise ValueError(f"unknown generator architecture {arch!r} (one of {', '.join(ARCHS)})")


def make_generator(source: str | int | tuple[str, int], device: torch.device):
    """A catalog name / Hub file / path, a resolution (a random full-width StyleGAN2) or (arch, resolution)."""
    from stylegan2.checkpoints import load_generator

    if isinstance(source, int):
        source = ("stylegan2", source)
    if isinstance(source, tuple):
        return random_generator(*source).eval().requires_grad_(False).to(device)
    return load_generator(source, device)


def steps_done(frame) -> int:
    """Steps computed when a drag method yields `frame`: a frame's image is of the latent before its step's
    update, which is done by the time it is yielded (step + 1 steps); the last frame comes after `step` steps."""
    return frame.step if frame.done else frame.step + 1


def ms_per_step(marks: list[tuple[int, float]]) -> float:
    """ms per step from (steps done, time) marks: from the first mark (set-up paid) to the last."""
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return round(1000 * (t1 - t0) / (s1 - s0), 2)


def _child(queue, fn: Callable[..., Any], args: tuple) -> None:
    try:
        queue.put(fn(*args))
    except BaseException as e:  # reported by the parent
        queue.put(e)


def in_fresh_process(fn: Callable[..., Any], *args) -> Any:
    """`fn(*args)` in a fresh (spawned) process, so that one line's memory high-water mark and warm caches do not
    touch another's. `fn` must be importable by name; its exception is raised here."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    try:
        result = _result(queue, proc)
    finally:
        proc.join()
    if isinstance(result, BaseException):
        raise result
    return result


def _result(queue, proc) -> Any:
    """The child's answer, or a RuntimeError if it died without one (killed for memory, a crash)."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=1.0)
        except queues.Empty:
            if not proc.is_alive():
                try:
                    return queue.get(timeout=1.0)
                except queues.Empty:
                    raise RuntimeError(f"the bench process ended with exit code {proc.exitcode} and no result") from None
