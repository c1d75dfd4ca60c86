"""`python -m draggan bench`: ms per drag step and peak memory, ours vs the official approach.

Every line runs in one invocation on the same generator, latent and points, each method in a
fresh process (peak memory above that process's starting point: the allocator's on CUDA,
the resident set elsewhere). The straightforward step is the official code's approach as it
ships (`draggan/baseline.py`): a full synthesis with autograd and weight gradients (the
official generator's parameters require grad), the feature map resized to the image,
host-side tracking, a frame every step. Ours runs as the app runs it (frames paced at the
app's rate, the precision and local steps `auto` picks), with a frame every step, and as
the CLI and scripts run it (a frame every 10 steps).

`--app`: steps per second of the same drag through the running app (its `/drag` endpoint,
streamed to a client) against the engine alone. `--edits N`: time per edit and mean distance
after, ours vs the official approach, on N pairs of the toy-faces oracle (`quality`).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import threading
import time

import torch

from draggan.config import APP_FRAME_RATE, APP_FRAME_SHARE

HELP = "measure ms per drag step and peak memory: engine vs the straightforward full-resolution step"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="catalog name, Hub 'repo_id:filename' or a local file")
    src.add_argument("--random-res", type=int, nargs="+", default=None,
                     help="random-weight generators of these resolutions, full StyleGAN2 width (default 256 512)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method (default 10)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="our method's precision (default auto: as the app runs it)")
    parser.add_argument("--app", action="store_true",
                        help="also: steps per second through the app's streaming /drag vs the engine alone")
    parser.add_argument("--app-trials", type=int, default=7, metavar="N",
                        help="with --app: runs of each, app and engine alternating (default 7)")
    parser.add_argument("--edits", type=int, default=0, metavar="N",
                        help="also: seconds per edit and distance after on N toy-faces oracle pairs, ours vs official")
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


APP_PACING = (1 / APP_FRAME_RATE, APP_FRAME_SHARE)  # (frame_interval_s, frame_share) as the app runs a drag
SLOW_LR = 0.002              # the official step size: the app line's drags run all their steps

# (label, method, frame_every, (frame_interval_s, frame_share)): the official approach, then ours as the app
# and the CLI run it.
METHODS = [("straightforward (official approach)", "straightforward", 1, (0.0, 0.0)),
           ("draggan, as the app (paced frames)", "draggan", 1, APP_PACING),
           ("draggan, frame every step", "draggan", 1, (0.0, 0.0)),
           ("draggan, frame every 10 steps", "draggan", 10, (0.0, 0.0))]

GPU_HINT = ("on a GPU: python -m draggan bench --device cuda (or mps) --steps 20; add --precision fp32 to "
            "compare with half precision, and --app --edits 30 for the app and per-edit lines")


def make_generator(source: str | int, device: torch.device):
    """A catalog name / Hub file / path, or a resolution for a random-weight generator of full StyleGAN2 width."""
    from stylegan2 import Generator, GeneratorConfig
    from stylegan2.checkpoints import load_generator

    if isinstance(source, int):
        torch.manual_seed(0)
        return Generator(GeneratorConfig(img_resolution=source)).eval().requires_grad_(False).to(device)
    return load_generator(source, device)


def time_method(source: str | int, device: str, method: str, every: int, pacing: tuple[float, float], steps: int,
                threads: int, precision: str = "auto") -> dict:
    """ms per step and peak memory of one method, in this (fresh) process.

    Times the steps after the first frame (which pays for set-up) up to the last frame (the drag's end,
    whose image every method renders): steps * frame_every steps, frames as the method shows them.
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
    cfg = DragConfig(max_steps=steps * every + 1, frame_every=every, frame_interval_s=pacing[0],
                     frame_share=pacing[1], check_every=10,
                     precision=precision if method == "draggan" else "fp32")
    job = DragJob(G, seed_latent(G, 0), handles, targets, cfg)
    marks = []  # (steps done, time)
    with PeakMemory(device) as mem:
        for frame in run_drag(method, job):
            _sync(device)
            marks.append((frame.step, time.perf_counter()))
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return {"resolution": G.img_resolution, "ms_per_step": round(1000 * (t1 - t0) / (s1 - s0), 2),
            "peak_mb": round(mem.peak_mb, 1)}


def _child(queue, *args) -> None:
    try:
        queue.put(time_method(*args))
    except BaseException as e:  # reported by the parent
        queue.put(e)


def bench_generator(source: str | int, device: torch.device, steps: int, label: str,
                    precision: str = "auto") -> list[dict]:
    """Every method on the same generator, latent and points, each in a fresh process so that
    one method's memory high-water mark does not hide another's."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for label_, method, every, pacing in METHODS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(queue, source, str(device), method, every, pacing, steps,
                                                 torch.get_num_threads(), precision))
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
    out: dict = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                 "precision": args.precision, "results": [], "app": [], "edits": []}
    say = (lambda *a, **k: None) if args.json else print
    say(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, precision {args.precision}")
    if device.type == "cpu":
        say(GPU_HINT)
    for label, source in sources:
        rows = bench_generator(source, device, max(args.steps, 2), label, args.precision)
        out["results"].extend(rows)
        for r in rows:
            say(f"{r['model']:>12}  {r['resolution']:4d}px  {r['method']:<36} {r['ms_per_step']:9.1f} ms/step"
                f"  {r['peak_mb']:8.1f} MB peak  x{r['speedup']:.2f} speed  x{r['memory_ratio']:.2f} memory", flush=True)
    if args.app:
        app_sources = [("toyfaces-64", "toyfaces-64", 200)] + [(label, source, 10) for label, source in sources
                                                               if source != "toyfaces-64"
                                                               and (not isinstance(source, int) or source <= 256)]
        for label, source, steps in app_sources:
            r = bench_app(source, device, steps, label, trials=max(1, args.app_trials))
            out["app"].append(r)
            say(f"{r['model']:>12}  {r['resolution']:4d}px  app /drag streamed {r['app_steps_per_s']:8.2f} steps/s, "
                f"engine alone {r['engine_steps_per_s']:8.2f} steps/s: app at {100 * r['app_vs_engine']:.0f}% "
                f"({r['app_steps']} and {r['engine_steps']} steps, {r['app_frames']} frames; "
                f"medians of {r['trials']} runs each)", flush=True)
    if args.edits:
        for r in bench_edits(args.edits, device, args.precision):
            out["edits"].append(r)
            say(f" toyfaces-64    64px  per edit, {r['method']:<16} {r['seconds_per_edit']:7.3f} s/edit  "
                f"{r['steps']:6.1f} steps  MD {r['md_before']:.2f} -> {r['md_after']:.2f} px  "
                f"success {100 * r['success_rate']:.0f}%" + (f"  x{r['speedup']:.2f} per edit" if "speedup" in r else ""),
                flush=True)
    if args.json:
        print(json.dumps(out, indent=1))
    return 0

def _app_source(source: str | int, folder: str) -> str:
    """A model spec the app can open: the catalog name / path itself, or the random generator saved to `folder`."""
    if not isinstance(source, int):
        return source
    from stylegan2.checkpoints import save_generator
    return str(save_generator(make_generator(source, torch.device("cpu")), os.path.join(folder, f"random-{source}.safetensors")))


def _start_app(spec: str, device: str, threads: int, timeout_s: float = 300) -> tuple["subprocess.Popen", int]:
    """Serve the app (`python -m app`, as a person starts it) on a free loopback port in a process of its own;
    returns the process and the port once the app answers. The engine never imports the app."""
    import socket
    import sys
    import tempfile
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen([sys.executable, "-m", "app", "--model", spec, "--device", device, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=root if (root / "app.py").is_file() else None,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)}, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).status_code == 200:
                return server, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    log.seek(0)
    raise RuntimeError(f"the app did not start on port {port}:\n{log.read()[-2000:]}")


def load_view(http, url: str) -> bytes:
    """A frame's image bytes, as the browser gets them: inline (a drag's frames) or fetched (a file)."""
    if url.startswith("data:"):
        return base64.b64decode(url.partition(",")[2], validate=True)
    reply = http.get(url)
    reply.raise_for_status()
    return reply.content


def bench_app(source: str | int, device: torch.device, steps: int, label: str, trials: int = 7) -> dict:
    """Steps per second of one drag through the app (its streaming `/drag`, read as a browser reads it: the
    event stream and each frame's image, decoded where it comes inline, fetched where it is a file) and of the same drag through the engine alone (frames
    paced as the app paces them), alternating, `trials` times each. The ratio is the median of each app run's
    rate over the engine run right after it (the machine's own drift cancels); the rates are medians."""
    import statistics
    import tempfile

    from gradio_client import Client  # the client package only: the engine never imports Gradio
    import httpx

    from draggan.config import DragConfig
    from draggan.editor import seed_latent
    from draggan.methods import DragJob, run_drag
    from stylegan2.checkpoints import load_generator

    def rate(marks):  # steps per second from the first frame to the last (start-up and request latency aside)
        (s0, t0), (s1, t1) = marks[0], marks[-1]
        return (s1 - s0) / (t1 - t0)

    with tempfile.TemporaryDirectory() as folder:
        spec = _app_source(source, folder)
        G = load_generator(spec, device)
        res = G.img_resolution
        handles, targets = [[0.3 * res, 0.4 * res]], [[0.75 * res, 0.45 * res]]
        # The official step size, small enough that neither run arrives early: this measures steps per second.
        cfg = DragConfig.for_model(spec if not isinstance(source, int) else None, max_steps=steps, lr=SLOW_LR,
                                   frame_interval_s=APP_PACING[0], frame_share=APP_PACING[1])

        def engine_drag() -> list:
            marks = []
            for frame in run_drag("draggan", DragJob(G, seed_latent(G, 0, 0.7), handles, targets, cfg)):
                _sync(device)
                marks.append((frame.step, time.perf_counter()))
            return marks

        # The app serves from a process of its own, as it does for a browser: the client's work is not the app's.
        server, port = _start_app(spec, str(device), torch.get_num_threads())
        app_rates, engine_rates, app_steps, engine_steps, frames = [], [], 0, 0, 0
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            client.predict(model=spec, seed=0, psi=0.7, api_name="/generate")
            with httpx.Client() as http:
                for _ in range(trials):
                    job = client.submit(handles=json.dumps(handles), targets=json.dumps(targets), max_steps=steps,
                                        lr=SLOW_LR, api_name="/drag")
                    marks = []
                    for view, _text, frame in job:  # frames as the client receives them
                        marks.append((frame["step"], time.perf_counter()))
                        if isinstance(view, dict) and view.get("url"):  # the browser loads each frame's image:
                            load_view(http, view["url"])
                    app_rates.append(rate(marks))
                    app_steps, frames = marks[-1][0], len(marks)
                    client.predict(api_name="/undo")
                    marks = engine_drag()
                    engine_rates.append(rate(marks))
                    engine_steps = marks[-1][0]
        finally:
            server.terminate()
            server.wait(60)

    app_rate, engine_rate = statistics.median(app_rates), statistics.median(engine_rates)
    ratio = statistics.median(a / e for a, e in zip(app_rates, engine_rates))
    return {"model": label, "resolution": res, "app_steps": app_steps, "engine_steps": engine_steps,
            "app_frames": frames, "trials": trials, "app_steps_per_s": round(app_rate, 2),
            "engine_steps_per_s": round(engine_rate, 2), "app_vs_engine": round(ratio, 3)}


def bench_edits(pairs: int, device: torch.device, precision: str) -> list[dict]:
    """Seconds per edit and mean distance after on the toy-faces oracle (`quality`, 5 landmarks per pair):
    the official approach with the official schedule, then ours as it ships (the model's settings)."""
    from draggan.commands.experiment import run_experiment

    rows = []
    for method, drag in (("straightforward", {"lr": 0.002, "precision": None}), ("draggan", {"lr": None,
                                                                                         "precision": precision})):
        args = argparse.Namespace(
            protocol="landmarks", model="toyfaces-64", device=str(device), pairs=pairs, methods=method, points=5,
            detector="toy", max_steps=200, feature_block=None, seed=0, psi=0.7, r1=None, r2=None, r3=None,
            success_px=2.0, fid=False, predictor=None, ray=None, lambda_mask=None, mask_margin=None, local=None,
            **drag)
        summary = run_experiment(args, quiet=True).methods[method]
        rows.append({"method": method, "pairs": pairs, **{k: summary.get(k) for k in
                                                         ("md_before", "md_after", "success_rate", "steps", "seconds_per_edit")}})
    rows[1]["speedup"] = round(rows[0]["seconds_per_edit"] / rows[1]["seconds_per_edit"], 2)
    return rows
