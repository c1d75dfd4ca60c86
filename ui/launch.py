"""Launching the app: its look (theme, CSS), the queue's polling, the Gradio version check, and `main`, the
command line of `python app.py`."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import gradio as gr

from draggan.public import MAX_UPLOAD, is_public
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
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    quiet_queue(built.demo)
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
    return p


def main(argv: list[str] | None = None) -> None:
    args_parser = parser()
    args = args_parser.parse_args(argv)
    public = is_public(args.host, args.share, args.public, args.trusted)
    try:
        built = build_demo(args.model, args.device, public=public, max_sessions=args.max_sessions,
                           session_ttl_s=args.session_ttl, concurrency=args.concurrency, max_photos=args.max_photos)
    except (ValueError, UserError) as e:  # a device that is not here, a model not allowed
        args_parser.error(str(e))
    launch(built, args.host, args.port, args.share, quiet=True, prevent_thread_lock=True)
    print(f"DragGAN ({'public' if public else 'trusted'} mode, {built.ctx.device_label}, model "
          f"{built.ctx.default_model}) at {built.demo.local_url}"
          + (f" and {built.demo.share_url}" if args.share else "  (add --share for a public link)"), flush=True)
    built.demo.block_thread()
