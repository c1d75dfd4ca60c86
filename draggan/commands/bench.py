"""`python -m draggan bench`: ms per drag step and peak memory, ours against the official code itself.

Every line runs in one invocation on the same generator, latent and points, each in a fresh
process (peak memory above that process's starting point: the allocator's on CUDA, the resident
set elsewhere). With `--official DIR` (a DragGAN checkout the user has: `draggan/bench/official.py`)
the first line is the official implementation's own drag step as its Gradio app runs it (the
renderer's `_render_drag_impl` per step, a frame with the points and watermark after every step),
on our generator's weights; every ratio is against it. Ours runs as the app runs it (frames paced:
the precision and local steps `auto` picks, the points drawn on each frame), with a frame every
step, and as scripts run it (a frame every 10 steps). `straightforward` (`draggan/baseline.py`)
is our stand-in of the official step, a method and a correctness yardstick: it is timed, but no
ratio is taken against it.

`--app`: steps per second of the same drag through the running app (its `/drag` endpoint,
streamed to a client) against the engine alone. `--edits N`: time per edit and mean distance
after on N pairs of the toy-faces oracle (`quality`), each comparison at equal settings: ours and
the stand-in at the official step size, then ours at the model's own step size (its own line).
`--profile`: where one step's milliseconds go (`draggan/bench/profile.py`).
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import subprocess
import time

import torch

from draggan.bench.measure import APP_PACING, ARCHS, PeakMemory, drag_points, in_fresh_process, make_generator  # noqa: F401
from draggan.bench.measure import ms_per_step, steps_done
from draggan.bench.measure import sync as _sync

HELP = "measure ms per drag step and peak memory: ours vs the official code (--official DIR)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="catalog name, Hub 'repo_id:filename' or a local file")
    src.add_argument("--random-res", type=int, nargs="+", default=None,
                     help="random-weight generators of these resolutions, full StyleGAN2 width "
                          "(default 256 512; with --official 256 512 1024)")
    parser.add_argument("--arch", choices=ARCHS, default="stylegan2",
                        help="with --random-res: the generator's kind (default stylegan2; stylegan3-t, stylegan3-r, "
                             "or human: StyleGAN-Human's H x H/2)")
    parser.add_argument("--official", metavar="DIR",
                        help="a DragGAN checkout (github.com/XingangPan/DragGAN): time its own drag step too")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method (default 10; at least 1)")
    parser.add_argument("--lines", default=",".join(LINE_KEYS), type=line_keys, metavar="A,B",
                        help=f"our lines to time (default all: {','.join(LINE_KEYS)}); the official one comes with "
                             "--official")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="our method's precision (default auto: as the app runs it)")
    parser.add_argument("--app", action="store_true",
                        help="also: steps per second through the app's streaming /drag vs the engine alone")
    parser.add_argument("--app-trials", type=int, default=7, metavar="N",
                        help="with --app: runs of each, app and engine alternating (default 7)")
    parser.add_argument("--edits", type=int, default=0, metavar="N",
                        help="also: seconds per edit and distance after on N toy-faces oracle pairs, at equal settings")
    parser.add_argument("--profile", action="store_true",
                        help="instead: where one step's time goes (blocks forward and backward, tracking, ...)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


SLOW_LR = 0.002              # the official step size: the app line's drags run all their steps
OFFICIAL_LABEL = "official DragGAN, as its app"


@dataclasses.dataclass(frozen=True)
class Line:
    """One timed line: a method with its frames as shown (every `every`-th step, paced, points drawn or not)."""
    key: str                                  # its name for --lines
    label: str
    method: str
    every: int = 1
    pacing: tuple[float, float] = (0.0, 0.0)  # (frame_interval_s, frame_share)
    points_drawn: bool = False                # the app draws the points on each frame it shows


LINES = [Line("app", "draggan, as the app (paced frames)", "draggan", 1, APP_PACING, True),
         Line("every", "draggan, frame every step", "draggan", 1),
         Line("scripts", "draggan, as scripts (frame every 10)", "draggan", 10),
         Line("stand-in", "straightforward (our stand-in)", "straightforward", 1)]
LINE_KEYS = tuple(line.key for line in LINES)

GPU_HINT = ("on a GPU: python -m draggan bench --device cuda (or mps) --steps 20; add --precision fp32 to "
            "compare with half precision, and --app --edits 30 for the app and per-edit lines")


def time_method(source: str | int, device: str, line: Line, steps: int, threads: int,
                precision: str = "auto") -> dict:
    """ms per step and peak memory of one line, in this (fresh) process.

    Times the steps after the first frame (which pays for set-up) up to the last frame (the drag's end,
    whose image every method shows): steps * every steps, frames as the line shows them.
    """
    from draggan.config import DragConfig
    from draggan.draw import draw_points
    from draggan.editor import seed_latent
    from draggan.methods import DragJob, run_drag

    torch.set_num_threads(threads)
    device = torch.device(device)
    G = make_generator(source, device)
    if line.method == "straightforward":
        G.requires_grad_(True)  # the official generator's weights require grad: it pays for weight gradients too
    handles, targets = drag_points(G.img_resolution)
    cfg = DragConfig(max_steps=steps * line.every + 1, frame_every=line.every, frame_interval_s=line.pacing[0],
                     frame_share=line.pacing[1], check_every=10,
                     precision=precision if line.method == "draggan" else "fp32")
    job = DragJob(G, seed_latent(G, 0), handles, targets, cfg)
    marks = []  # (steps done, time)
    with PeakMemory(device) as mem:
        for frame in run_drag(line.method, job):
            if line.points_drawn and not frame.done:  # the app's view of a frame (at 256 px and up, not enlarged)
                draw_points(frame.image, frame.handles_xy, frame.targets_xy, scale=1)
            _sync(device)
            marks.append((steps_done(frame), time.perf_counter()))
    return {"resolution": G.img_resolution, "ms_per_step": ms_per_step(marks), "peak_mb": round(mem.peak_mb, 1)}


def line_keys(text: str) -> tuple[str, ...]:
    """--lines: comma-separated names of LINES, each known, at least one."""
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in LINE_KEYS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown line {', '.join(unknown) or '(none)'}: use some of {','.join(LINE_KEYS)}")
    return keys


def bench_generator(source: str | int, device: torch.device, steps: int, label: str,
                    precision: str = "auto", official: str | None = None,
                    lines: tuple[str, ...] = LINE_KEYS) -> list[dict]:
    """Every line on the same generator, latent and points, each in a fresh process so that one line's memory
    high-water mark does not hide another's. With `official` (a checkout) its step comes first and every
    ratio (`speedup`, `memory_ratio`) is against it; without it there are no ratios."""
    from draggan.bench.official import time_official

    threads = torch.get_num_threads()
    rows = []
    if official:
        result = in_fresh_process(time_official, official, source, str(device), steps, threads)
        rows.append({"model": label, "device": str(device), "method": OFFICIAL_LABEL,
                     **{k: result[k] for k in ("resolution", "ms_per_step", "peak_mb", "points_drawn")}})
    for line in (line for line in LINES if line.key in lines):
        result = in_fresh_process(time_method, source, str(device), line, steps, threads, precision)
        rows.append({"model": label, "device": str(device), "method": line.label, **result})
    if official:
        base = rows[0]
        for r in rows:
            r["speedup"] = round(base["ms_per_step"] / r["ms_per_step"], 2)
            r["memory_ratio"] = round(base["peak_mb"] / max(r["peak_mb"], 1e-6), 2)
    return rows


def format_row(r: dict) -> str:
    ratios = f"  x{r['speedup']:.2f} speed  x{r['memory_ratio']:.2f} memory" if "speedup" in r else ""
    return (f"{r['model']:>12}  {r['resolution']:4d}px  {r['method']:<36} {r['ms_per_step']:9.1f} ms/step"
            f"  {r['peak_mb']:8.1f} MB peak{ratios}")


def run(args: argparse.Namespace) -> int:
    from draggan.bench.official import HOW_TO_GET, check_checkout
    from stylegan2.checkpoints import resolve_device

    device = resolve_device(args.device)
    official = check_checkout(args.official) if args.official else None
    if args.model:
        make_generator(args.model, torch.device("cpu"))  # fail early, with the loader's message
        sources = [(args.model, args.model)]
    else:
        sizes = args.random_res or ([256, 512, 1024] if official else [256, 512])
        sources = [(f"random-{r}", r) if args.arch == "stylegan2" else (f"{args.arch}-{r}", (args.arch, r)) for r in sizes]
    if args.profile:
        from draggan.bench.profile import run_profile
        return run_profile(sources, device, max(args.steps, 2), args.precision, official, args.json)
    out: dict = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
                 "precision": args.precision, "official": official, "results": [], "app": [], "edits": []}
    say = (lambda *a, **k: None) if args.json else print
    say(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, precision {args.precision}")
    if not official:
        say(f"no ratios without the official code: {HOW_TO_GET}")
    if device.type == "cpu":
        say(GPU_HINT)
    for label, source in sources:
        rows = bench_generator(source, device, max(args.steps, 1), label, args.precision, official, args.lines)
        out["results"].extend(rows)
        for r in rows:
            say(format_row(r), flush=True)
    if args.app:
        app_sources = [("toyfaces-64", "toyfaces-64", 200)] + [(label, source, 10) for label, source in sources
                                                               if source != "toyfaces-64"
                                                               and (not is_random(source) or resolution(source) <= 256)]
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
            gain = r.get("step_size_gain")
            say(f" toyfaces-64    64px  per edit, {r['method']:<16} lr {r['lr']:<8} {r['seconds_per_edit']:7.3f} s/edit"
                f"  {r['steps']:6.1f} steps  MD {r['md_before']:.2f} -> {r['md_after']:.2f} px  success "
                f"{100 * r['success_rate']:.0f}%" + (f"  x{gain:.2f} per edit from the step size alone" if gain else ""),
                flush=True)
    if args.json:
        print(json.dumps(out, indent=1))
    return 0

def is_random(source) -> bool:
    """A random generator's source (a resolution, or (arch, resolution)), not a model spec."""
    return isinstance(source, (int, tuple))


def resolution(source: int | tuple[str, int]) -> int:
    return source if isinstance(source, int) else source[1]


def _app_source(source, folder: str) -> str:
    """A model spec the app can open: the catalog name / path itself, or the random generator saved to `folder`."""
    if not is_random(source):
        return source
    from stylegan2.checkpoints import save_generator
    name = f"random-{source}" if isinstance(source, int) else f"{source[0]}-{source[1]}"
    return str(save_generator(make_generator(source, torch.device("cpu")), os.path.join(folder, f"{name}.safetensors")))


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
        cfg = DragConfig.for_model(spec if not is_random(source) else None, max_steps=steps, lr=SLOW_LR,
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
    """Seconds per edit and mean distance after on the toy-faces oracle (`quality`, 5 landmarks per pair), each
    comparison at equal settings: the stand-in and ours at the official step size (same stopping rule), then ours
    at the model's own step size, whose gain over ours at the official one is its own ratio (`step_size_gain`)."""
    from draggan.commands.experiment import run_experiment

    rows = []
    for method, lr, prec in (("straightforward", SLOW_LR, None), ("draggan", SLOW_LR, precision),
                             ("draggan", None, precision)):
        args = argparse.Namespace(
            protocol="landmarks", model="toyfaces-64", device=str(device), pairs=pairs, methods=method, points=5,
            detector="toy", max_steps=200, feature_block=None, seed=0, psi=0.7, r1=None, r2=None, r3=None,
            success_px=2.0, fid=False, predictor=None, ray=None, lambda_mask=None, mask_margin=None, local=None,
            lr=lr, precision=prec)
        summary = run_experiment(args, quiet=True).methods[method]
        rows.append({"method": method, "lr": lr if lr is not None else "model's", "pairs": pairs,
                     **{k: summary.get(k) for k in ("md_before", "md_after", "success_rate", "steps",
                                                    "seconds_per_edit")}})
    rows[2]["step_size_gain"] = round(rows[1]["seconds_per_edit"] / rows[2]["seconds_per_edit"], 2)
    return rows
