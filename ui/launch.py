"""Launching the app: its look (theme, CSS), the queue's polling, the Gradio version check, and `main`, the
command line of `python app.py`."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from draggan.public import (MAX_UPLOAD, PUBLIC_CLIENT_UPLOAD_BYTES, PUBLIC_DRAG_TIME_LIMIT_S, PUBLIC_MAX_DRAG_BYTES,
                            PUBLIC_MAX_UPLOAD_BYTES, PUBLIC_MIN_FREE_BYTES, PUBLIC_PHOTOS_PER_CLIENT,
                            PUBLIC_PROTECT_RECENT_S, UploadGuard, UploadLedger, is_public, trusted_proxies)
from stylegan2.errors import UserError

from .build import BuiltApp, build_demo

MIN_GRADIO = "6.28"              # the oldest Gradio that passes our app and browser tests (requirements.txt)
QUEUE_POLL_S = 0.01              # how often Gradio's queue looks for new events (its own default: every 1 ms)
CSS = """
#status p { margin: 0; }
#view img { image-rendering: pixelated; width: 100%; height: auto; object-fit: contain; }
.reset-btn { max-width: 2.6em !important; min-width: 2.6em !important; }
#photo_report .meta-text-center { transform: none; }
"""


def theme() -> gr.themes.Base:
    """Gradio's Soft theme, with checkboxes you can see: its checkbox border is neutral-100 on a near-white
    field (contrast 1.05), so "Nearest" read as plain text; neutral-500 gives 4.6, above the 3 that WCAG asks
    of a control's outline."""
    return gr.themes.Soft().set(checkbox_border_color="*neutral_500")


def quiet_queue(demo: gr.Blocks) -> None:
    """Have Gradio's queue look for new events every QUEUE_POLL_S instead of every millisecond. Its loop
    wakes that often even when idle (9% of a core on our 2-core test machine, all of it taken from a running
    drag's steps); 10 ms more before an event starts is not felt."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and isinstance(getattr(queue, "sleep_when_free", None), (int, float)):
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)


def room_for_exports(demo: gr.Blocks, waiting: int) -> None:
    """Give Gradio's queue `waiting` job slots beyond its worker threads. Gradio runs at most max_threads events
    at once, each holding a slot until it ends, whether it holds a thread or not. An export waiting its turn holds
    no thread (its handler awaits, `ui/sections/save.py`) but would hold a slot, so a line of exports could fill
    the queue and stall everyone's Generate: with a slot more for each export that can wait (one per session),
    they never take the slots the other events need. Applied each time the queue starts."""
    start = getattr(demo, "run_startup_events", None)
    if start is None or getattr(start, "room_for_exports", False):
        return

    def run_startup_events() -> None:
        start()
        jobs = getattr(getattr(demo, "_queue", None), "active_jobs", None)
        if isinstance(jobs, list):
            jobs.extend([None] * waiting)
    run_startup_events.room_for_exports = True
    demo.run_startup_events = run_startup_events


def gradio_warning(version: str = gr.__version__) -> str | None:
    """A line for a Gradio older than MIN_GRADIO, else None. Older Gradio 6 releases break the page in ways our
    tests catch (6.0: it never shows the first image; 6.16: six app and browser tests fail; 6.25-6.27: one)."""
    have = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    if have >= tuple(int(n) for n in MIN_GRADIO.split(".")):
        return None
    return (f"Gradio {version} is older than {MIN_GRADIO}, the oldest this app is tested with; parts of the page "
            f"may not work: pip install -U 'gradio>={MIN_GRADIO},<7'")


def launch(built: BuiltApp, host: str | None = None, port: int | None = None, share: bool = False,
           **kwargs) -> Any:
    """Launch with the app's look (Gradio 6 takes theme and css at launch). host/port None: Gradio's
    defaults or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    if (warning := gradio_warning()) is not None:
        print(f"Warning: {warning}", file=sys.stderr)
    settings = built.ctx.settings
    kwargs.setdefault("max_file_size", settings.bound("max_upload_bytes") or MAX_UPLOAD)
    ledger = UploadLedger(settings.bound("client_upload_bytes"))
    guard = Middleware(UploadGuard, ledger=ledger, folder=gr.utils.get_upload_folder(),
                       min_free=settings.bound("min_free_bytes"))
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), guard]
    kwargs["app_kwargs"] = app_kwargs
    quiet_queue(built.demo)
    room_for_exports(built.demo, built.ctx.sessions.max_sessions)
    return built.demo.launch(server_name=host, server_port=port, share=share, css=CSS, theme=theme(),
                             ssr_mode=False, **kwargs)


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    flag = lambda name: env(name, "").strip().lower() in ("1", "true", "yes")  # noqa: E731
    p = argparse.ArgumentParser(description="The DragGAN web app")
    p.add_argument("--model", default=env("DRAGGAN_MODEL"),
                   help="default model: catalog name (or, on a trusted server, a Hub repo_id:filename or a local "
                        ".pkl/.safetensors path) (env DRAGGAN_MODEL; default: the catalog's first model here)")
    p.add_argument("--device", default=env("DRAGGAN_DEVICE", "auto"),
                   help="auto, cpu, cuda or mps (env DRAGGAN_DEVICE; default auto)")
    p.add_argument("--host", default=None, help="address to listen on (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (env GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (public mode)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--public", action="store_true", default=flag("DRAGGAN_PUBLIC"),
                      help="catalog models only, bounded work (env DRAGGAN_PUBLIC=1; the default beyond loopback)")
    mode.add_argument("--trusted", action="store_true", default=flag("DRAGGAN_TRUSTED"),
                      help="allow local paths and any Hub file as models, even when listening beyond loopback "
                           "(env DRAGGAN_TRUSTED=1): only for people you trust")
    p.add_argument("--max-sessions", type=int, default=int(env("DRAGGAN_MAX_SESSIONS", "32")),
                   help="live sessions kept; the least recently used idle one goes first (env DRAGGAN_MAX_SESSIONS)")
    p.add_argument("--session-ttl", type=float, default=float(env("DRAGGAN_SESSION_TTL", "1800")),
                   help="seconds an idle session is kept (env DRAGGAN_SESSION_TTL)")
    p.add_argument("--concurrency", type=int, default=int(env("DRAGGAN_CONCURRENCY", "1")),
                   help="drags/inversions/experiments run at once on the device (env DRAGGAN_CONCURRENCY)")
    p.add_argument("--max-photos", type=int, default=int(env("DRAGGAN_MAX_PHOTOS", "4")),
                   help="sessions that may edit a photo (each holds its own tuned generator copy) at once "
                        "(env DRAGGAN_MAX_PHOTOS; default 4)")
    bounds(p, env)
    return p


# The bounds on one visitor's work: flag, variable, type, unit (bytes per unit), ServerSettings field, help.
BOUND_FLAGS = (
    ("--drag-time-limit", "DRAGGAN_DRAG_TIME_LIMIT", float, None, "drag_time_limit_s",
     f"seconds after which a drag stops (public default {PUBLIC_DRAG_TIME_LIMIT_S:g}, as the official Space)"),
    ("--max-drag-gb", "DRAGGAN_MAX_DRAG_GB", float, 1 << 30, "max_drag_bytes",
     f"GB a drag's point tracking and motion terms may take, refused above (public default "
     f"{PUBLIC_MAX_DRAG_BYTES >> 30}; 0: half the device's memory)"),
    ("--protect-recent", "DRAGGAN_PROTECT_RECENT", float, None, "protect_recent_s",
     f"seconds a used session is safe from eviction: a newcomer is refused instead (public default "
     f"{PUBLIC_PROTECT_RECENT_S:g})"),
    ("--photos-per-client", "DRAGGAN_PHOTOS_PER_CLIENT", int, None, "photos_per_client",
     f"photos (tuned generator copies) one address may hold at once (public default {PUBLIC_PHOTOS_PER_CLIENT})"),
    ("--max-upload-mb", "DRAGGAN_MAX_UPLOAD_MB", float, 1 << 20, "max_upload_bytes",
     f"MB one uploaded file may have (public default {PUBLIC_MAX_UPLOAD_BYTES >> 20}; 0: {MAX_UPLOAD})"),
    ("--client-upload-mb", "DRAGGAN_CLIENT_UPLOAD_MB", float, 1 << 20, "client_upload_bytes",
     f"MB one address may upload an hour (public default {PUBLIC_CLIENT_UPLOAD_BYTES >> 20})"),
    ("--min-free-mb", "DRAGGAN_MIN_FREE_MB", float, 1 << 20, "min_free_bytes",
     f"MB of free cache disk below which uploads and exports are refused (public default "
     f"{PUBLIC_MIN_FREE_BYTES >> 20})"),
)


def bounds(p: argparse.ArgumentParser, env: Any) -> None:
    """The flags of the bounds on one visitor's work: unset, a public server uses draggan.public's defaults
    and a trusted one none; 0 turns a bound off."""
    for flag, name, kind, _, _, what in BOUND_FLAGS:
        value = env(name)
        p.add_argument(flag, type=kind, default=None if value in (None, "") else kind(value),
                       help=f"{what} (env {name}{'' if '0:' in what else '; 0: none'})")


def bound_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The bounds' flags as ServerSettings fields (None: unset)."""
    out = {}
    for flag, _, _, unit, field, _ in BOUND_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        out[field] = value if value is None or unit is None else int(value * unit)
    return out


def main(argv: list[str] | None = None) -> None:
    args_parser = parser()
    args = args_parser.parse_args(argv)
    public = is_public(args.host, args.share, args.public, args.trusted)
    try:
        trusted_proxies()  # a malformed DRAGGAN_TRUSTED_PROXIES stops the server here
        built = build_demo(args.model, args.device, public=public, max_sessions=args.max_sessions,
                           session_ttl_s=args.session_ttl, concurrency=args.concurrency, max_photos=args.max_photos,
                           **bound_settings(args))
    except (ValueError, UserError) as e:  # a device that is not here, a model not allowed
        args_parser.error(str(e))
    launch(built, args.host, args.port, args.share, quiet=True, prevent_thread_lock=True)
    print(f"DragGAN ({'public' if public else 'trusted'} mode, {built.ctx.device_label}, model "
          f"{built.ctx.default_model}) at {built.demo.local_url}"
          + (f" and {built.demo.share_url}" if args.share else "  (add --share for a public link)"), flush=True)
    built.demo.block_thread()
