"""Where one drag step's time goes (`python -m draggan bench --profile [--official DIR]`).

Wall-clock timers, in a fresh process per line, on the steps after the first (which sets up):
  - each synthesis layer (`bN.conv0`, `bN.conv1`, `bN.torgb`) forward with autograd, its backward
    (module backward hooks: from its output's gradient to its input's) and its forward without
    autograd (the image tail of a frame), summed per block;
  - ours (the app's line: paced frames, points drawn): the step's forward to the feature block
    (`engine.step_features`), tracking (`engine.track_points`), the loss (`engine.motion_loss`),
    the backward, the optimizer (Adam), the frames (image tail, uint8, points drawn);
  - the stand-in `straightforward` (a frame every step): the synthesis forward with autograd, the
    feature map's resize, the backward, Adam, the image to uint8; its tracking and loss are the rest;
  - the official step (its app's line): the generator's forward (all blocks, image included, with
    autograd), the feature map's resize (`F.interpolate`), the backward, Adam, the app's frame; the
    rest of `_render_drag_impl` (tracking, the loss, the image to PIL) and Python is what is left.
A category's "rest" is the step's wall time less every timed part: Python, glue, what no timer covers.
Arithmetic is counted apart (torch's FlopCounterMode): per step without frames, per frame as ours renders one
mid-drag (the image finished from the step's whole low-resolution maps), and per whole image from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import defaultdict
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .measure import APP_PACING, drag_points, in_fresh_process, make_generator, steps_done

LAYER = re.compile(r"^b(\d+)\.(conv0|conv1|torgb)$")
BLOCK_PART = re.compile(r"^b\d+ ")
GENERATOR_FORWARD = "generator forward (every block, image too)"


class Timers:
    """Seconds per named part; `wrap` times a callable, `hook_layers` a synthesis network's layers."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open wrapped call: the seconds of the wrapped calls inside it

    def reset(self) -> None:
        self.seconds.clear()

    def wrap(self, fn: Callable, name: str) -> Callable:
        """`fn` timed under `name`, exclusive of any wrapped part it calls (that part has its own line)."""
        def timed(*args, **kwargs):
            self._inner.append(0.0)
            t0 = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = self.clock() - t0
                self.seconds[name] += elapsed - self._inner.pop()
                if self._inner:
                    self._inner[-1] += elapsed
        return timed

    def hook_layers(self, synthesis: torch.nn.Module) -> None:
        starts: dict[int, float] = {}

        def begin(module, *_):
            starts[id(module)] = time.perf_counter()

        def end_forward(module, *_):
            kind = "forward" if torch.is_grad_enabled() else "frame"
            self.seconds[f"b{module._bench_res} {kind}"] += time.perf_counter() - starts.pop(id(module))

        def end_backward(module, *_):
            self.seconds[f"b{module._bench_res} backward"] += time.perf_counter() - starts.pop(id(module))

        for name, module in synthesis.named_modules():
            m = LAYER.match(name)
            if not m:
                continue
            module._bench_res = int(m.group(1))
            module.register_forward_pre_hook(begin)
            module.register_forward_hook(end_forward)
            if m.group(2) != "torgb":  # no toRGB is on the loss's path: it has no backward
                module.register_full_backward_pre_hook(begin)
                module.register_full_backward_hook(end_backward)

    def time_module(self, module: torch.nn.Module, name: str) -> None:
        """Time `module`'s calls with autograd on (a frame's calls without it are the frame's)."""
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))

        def done(*_):
            start = starts.pop()
            if torch.is_grad_enabled():
                self.seconds[name] += time.perf_counter() - start
        module.register_forward_hook(done)

    def patch(self, owner, attr: str, name: str) -> None:
        setattr(owner, attr, self.wrap(getattr(owner, attr), name))


def gflop(fn: Callable[[], object]) -> float:
    """Billions of floating-point operations (convolutions, matrix products: what dominates) that `fn()` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def _common(timers: Timers) -> None:
    timers.patch(torch.Tensor, "backward", "backward")
    timers.patch(torch.optim.Adam, "step", "optimizer")


def profile_method(source: str | int, device: str, steps: int, threads: int, method: str = "draggan",
                   precision: str = "auto") -> dict:
    """One of our methods' steps, timed by part, in this (fresh) process, as the bench runs it: `draggan` as the
    app runs it (paced frames, points drawn), `straightforward` (the stand-in: fp32, weight gradients, a frame
    every step)."""
    import torch.nn.functional as F

    from draggan import baseline, engine
    from draggan.config import DragConfig
    from draggan.draw import draw_points
    from draggan.editor import seed_latent
    from draggan.methods import DragJob, run_drag

    torch.set_num_threads(threads)
    stand_in = method == "straightforward"
    G = make_generator(source, torch.device(device)).requires_grad_(stand_in)  # as the bench's lines
    timers = Timers()
    timers.hook_layers(G.synthesis)
    _common(timers)
    for attr, name in (("step_features", "forward to the feature block"), ("track_points", "tracking"),
                       ("motion_loss", "loss"), ("render", "frames: image"), ("image_to_uint8", "frames: uint8")):
        timers.patch(engine, attr, name)
    timers.patch(G.synthesis, "image_from_features", "frames: image")
    timers.patch(baseline, "image_to_uint8", "frames: uint8")
    timers.patch(F, "interpolate", "resize the feature map")
    timers.time_module(G.synthesis, GENERATOR_FORWARD)
    draw = timers.wrap(draw_points, "frames: points drawn")
    pacing = (0.0, 0.0) if stand_in else APP_PACING
    cfg = DragConfig(max_steps=steps + 1, frame_interval_s=pacing[0], frame_share=pacing[1], check_every=10,
                     precision="fp32" if stand_in else precision)
    handles, targets = drag_points(G.img_resolution)
    marks, frames = [], 0
    for frame in run_drag(method, DragJob(G, seed_latent(G, 0), handles, targets, cfg)):
        if not frame.done and not stand_in:
            draw(frame.image, frame.handles_xy, frame.targets_xy, scale=1)
        marks.append((steps_done(frame), time.perf_counter()))
        if len(marks) == 1:
            timers.reset()
        else:
            frames += 1
    out = _summary("straightforward (stand-in)" if stand_in else "ours, as the app", G.img_resolution, marks,
                   timers, frames)
    # Arithmetic, counted apart (the counter slows what it counts): a step without ours' frames, and a whole image.
    # (The counter cannot see a no-grad call of weights that require grad: the stand-in's last frame is left out.)
    job = DragJob(G, seed_latent(G, 0), handles, targets, dataclasses.replace(cfg, frame_every=steps + 2))
    G.requires_grad_(False)
    image = gflop(lambda: engine.render(G, job.w_start, job.noise_mode, cfg.compute_dtype(torch.device(device))))
    G.requires_grad_(stand_in)
    counts, frame_counts = [], []
    with FlopCounterMode(display=False) as counter:
        if not stand_in:  # ours: a frame finishes the image from the step's whole maps (its first frame, step 0)
            G.synthesis.image_from_features = _counted(G.synthesis.image_from_features, counter, frame_counts)
        for f in run_drag(method, dataclasses.replace(job, config=cfg) if stand_in else job):
            counts.append((steps_done(f), counter.get_total_flops() / 1e9))
            if stand_in and f.step >= steps:  # its last step's frame: its image came with the step
                break
    (s0, f0), (s1, f1) = counts[0], counts[-1]
    per_step = (f1 - f0 - (0 if stand_in else image)) / (s1 - s0)  # ours: less the last frame's image
    frame = {"gflop_per_frame": round(frame_counts[0], 2)} if frame_counts else {}
    return {**out, "gflop_per_step": round(per_step, 2), **frame, "gflop_per_image": round(image, 2)}


def _counted(fn: Callable, counter: FlopCounterMode, into: list) -> Callable:
    """`fn`, each call's GFLOP (as `counter` counts them) appended to `into`."""
    def counted(*args, **kwargs):
        before = counter.get_total_flops()
        out = fn(*args, **kwargs)
        into.append((counter.get_total_flops() - before) / 1e9)
        return out
    return counted


def profile_official(checkout: str, source: str | int, device: str, steps: int, threads: int,
                     count: bool = True) -> dict:
    """The official step as its app runs it (a frame every step), timed by part, in this (fresh) process."""
    import torch.nn.functional as F

    from .official import from_checkout, official_drag

    torch.set_num_threads(threads)
    dev = torch.device(device)
    G = make_generator(source, torch.device("cpu"))
    res_px = G.img_resolution
    timers = Timers()
    _common(timers)
    timers.patch(F, "interpolate", "resize the feature map")
    with from_checkout(checkout):
        run = official_drag(G, dev)
        del G
        official_G = run.renderer.G
        timers.hook_layers(official_G.synthesis)
        timers.time_module(official_G, GENERATOR_FORWARD)
        show = timers.wrap(run.show, "frames: points drawn, watermark")
        marks = []
        for step in range(steps + 1):
            run.drag()
            show()
            marks.append((step + 1, time.perf_counter()))
            if step == 0:
                timers.reset()
        out = _summary("official, as its app", res_px, marks, timers, steps)
        per_step = gflop(run.drag) if count else None  # its image comes with every step
    return {**out, "gflop_per_step": round(per_step, 2)} if count else out


TOP = ("forward to the feature block", GENERATOR_FORWARD, "resize the feature map",
       "tracking", "loss", "backward", "optimizer", "frames: image", "frames: uint8", "frames: points drawn",
       "frames: points drawn, watermark")


def _summary(line: str, res: int, marks: list, timers: Timers, frames: int) -> dict:
    """ms per step of each part; `rest` is the step's wall time less the top-level parts."""
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    n = s1 - s0
    per_step = {k: round(1000 * v / n, 2) for k, v in timers.seconds.items()}
    total = round(1000 * (t1 - t0) / n, 2)
    top = {k: per_step[k] for k in TOP if k in per_step}
    top["rest (Python, glue, untimed)"] = round(total - sum(top.values()), 2)
    blocks = {k: v for k, v in per_step.items() if BLOCK_PART.match(k)}
    return {"line": line, "resolution": res, "ms_per_step": total, "steps": n, "frames": frames, "parts": top,
            "blocks": dict(sorted(blocks.items(), key=lambda kv: (int(kv[0][1:].split()[0]), kv[0])))}


def table(profiles: list[dict]) -> str:
    """A markdown table: one column per profile, parts then blocks, ms per step."""
    head = "| ms per step | " + " | ".join(f"{p['line']}, {p['resolution']} px" for p in profiles) + " |"
    rows = [head, "|---" * (len(profiles) + 1) + "|",
            "| **whole step** | " + " | ".join(f"**{p['ms_per_step']:.1f}**" for p in profiles) + " |"]
    for key, name in (("gflop_per_step", "GFLOP per step (frames apart)"),
                      ("gflop_per_frame", "GFLOP per frame (finished from the step's whole maps)"),
                      ("gflop_per_image", "GFLOP per whole image")):
        if any(key in p for p in profiles):
            rows.append(f"| {name} | " + " | ".join(f"{p[key]:.1f}" if key in p else "" for p in profiles) + " |")
    for section in ("parts", "blocks"):
        names = list(dict.fromkeys(k for p in profiles for k in p[section]))
        for name in names:
            cells = [f"{p[section][name]:.1f}" if name in p[section] else "" for p in profiles]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def conv_throughput(threads: int, dtype: str, repeats: int = 5) -> float:
    """GFLOP/s this machine sustains on one 512-channel 3x3 convolution of a 64x64 map (the bulk of a step)."""
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x = torch.randn(1, 512, 64, 64, dtype=getattr(torch, dtype))
    w = torch.randn(512, 512, 3, 3, dtype=x.dtype)
    F.conv2d(x, w, padding=1)  # warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        F.conv2d(x, w, padding=1)
    return round(2 * w.numel() * 64 * 64 * repeats / (time.perf_counter() - t0) / 1e9, 1)


def run_profile(sources, device: torch.device, steps: int, precision: str, official: str | None,
                as_json: bool) -> int:
    """Profile ours (and the official step, given a checkout) on each source; print a table or JSON."""
    threads = torch.get_num_threads()
    profiles = []
    for _label, source in sources:
        if official:
            profiles.append(in_fresh_process(profile_official, official, source, str(device), steps, threads))
        for method in ("draggan", "straightforward"):
            profiles.append(in_fresh_process(profile_method, source, str(device), steps, threads, method, precision))
    conv = {d: in_fresh_process(conv_throughput, threads, d) if device.type == "cpu" else None
            for d in ("float32", "bfloat16")}
    if as_json:
        print(json.dumps({"torch": torch.__version__, "device": str(device), "threads": threads,
                          "conv_gflop_per_s": conv, "profiles": profiles}, indent=1))
    else:
        print(f"torch {torch.__version__}, {device}, {threads} threads, {steps} steps after the first; one 512-channel "
              f"3x3 conv of a 64x64 map: {conv['float32']} GFLOP/s float32, {conv['bfloat16']} bfloat16")
        print(table(profiles))
    return 0
