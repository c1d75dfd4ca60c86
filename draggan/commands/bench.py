"""`python -m draggan bench`: ms per drag step and peak memory, engine vs the straightforward step.

Both run in one invocation on the same generator, latent and points, each method in a
fresh process (peak memory above that process's starting point: the allocator's on CUDA,
the resident set elsewhere). The
straightforward step is the official code's approach (`draggan/baseline.py`): a full
synthesis with autograd and weight gradients (the official generator's parameters
require grad), the feature map resized to the image, host-side tracking.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time

import torch

HELP = "measure ms per drag step and peak memory: engine vs the straightforward full-resolution step"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="catalog name, Hub 'repo_id:filename' or a local file")
    src.add_argument("--random-res", type=int, nargs="+", default=None,
                     help="random-weight generators of these resolutions, full StyleGAN2 width (default 256 512)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _points(res: int) -> tuple[list[list[float]], list[list[float]]]:
    # Far from their targets, so no handle arrives within the timed steps.
    return [[0.3 * res, 0.4 * res], [0.6 * res, 0.5 * res]], [[0.7 * res, 0.4 * res], [0.2 * res, 0.9 * res]]


# (label, method, frame_every, frame_interval_s): the official approach, then ours as the CLI and the app run it.
METHODS = [("straightforward (official approach)", "straightforward", 1, 0.0),
           ("draggan, frame every step", "draggan", 1, 0.0),
           ("draggan, frame every 10 steps", "draggan", 10, 0.0)]


def make_generator(source: str | int, device: torch.device):
    """A catalog name / Hub file / path, or a resolution for a random-weight generator of full StyleGAN2 width."""
    from stylegan2 import Generator, GeneratorConfig
    from stylegan2.checkpoints import load_generator

    if isinstance(source, int):
        torch.manual_seed(0)
        return Generator(GeneratorConfig(img_resolution=source)).eval().requires_grad_(False).to(device)
    return load_generator(source, device)


def time_method(source: str | int, device: str, method: str, every: int, interval: float, steps: int,
                threads: int) -> dict:
    """ms per step and peak memory of one method, in this (fresh) process.

    Times `steps` frames after the first (which pays for set-up): steps * frame_every steps.
    """
    from draggan.config import DragConfig
    from draggan.editor import seed_latent
    from draggan.methods import DragJob, run_drag

    torch.set_num_threads(threads)
    device = torch.device(device)
    G = make_generator(source, device)
    if method == "straightforward":
        G.requires_grad_(True)  # the official generator's weights require grad: it pays for weight gradients too
    handles, targets = _points(G.img_resolution)
    cfg = DragConfig(max_steps=steps * every + 1, frame_every=every, frame_interval_s=interval, check_every=10)
    job = DragJob(G, seed_latent(G, 0), handles, targets, cfg)
    marks = []  # (steps done, time)
    with PeakMemory(device) as mem:
        for frame in run_drag(method, job):
            _sync(device)
            if not frame.done:
                marks.append((frame.step, time.perf_counter()))
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return {"resolution": G.img_resolution, "ms_per_step": round(1000 * (t1 - t0) / (s1 - s0), 2),
            "peak_mb": round(mem.peak_mb, 1)}


def _child(queue, *args) -> None:
    try:
        queue.put(time_method(*args))
    except BaseException as e:  # reported by the parent
        queue.put(e)


def bench_generator(source: str | int, device: torch.device, steps: int, label: str) -> list[dict]:
    """Every method on the same generator, latent and points, each in a fresh process so that
    one method's memory high-water mark does not hide another's."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for label_, method, every, interval in METHODS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(queue, source, str(device), method, every, interval, steps,
                                                 torch.get_num_threads()))
        proc.start()
        result = queue.get()
        proc.join()
        if isinstance(result, BaseException):
            raise result
        rows.append({"model": label, "device": str(device), "method": label_, **result})
    base = rows[0]
    for r in rows:
        r["speedup"] = round(base["ms_per_step"] / r["ms_per_step"], 2)
        r["memory_ratio"] = round(base["peak_mb"] / max(r["peak_mb"], 1e-6), 2)
    return rows


def run(args: argparse.Namespace) -> int:
    from stylegan2.checkpoints import resolve_device

    device = resolve_device(args.device)
    if args.model:
        make_generator(args.model, torch.device("cpu"))  # fail early, with the loader's message
        sources = [(args.model, args.model)]
    else:
        sources = [(f"random-{r}", r) for r in (args.random_res or [256, 512])]
    results = []
    for label, source in sources:
        rows = bench_generator(source, device, max(args.steps, 2), label)
        results.extend(rows)
        if not args.json:
            for r in rows:
                print(f"{r['model']:>12}  {r['resolution']:4d}px  {r['method']:<36} {r['ms_per_step']:9.1f} ms/step"
                      f"  {r['peak_mb']:8.1f} MB peak  x{r['speedup']:.2f} speed  x{r['memory_ratio']:.2f} memory",
                      flush=True)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results},
                         indent=1))
    return 0
