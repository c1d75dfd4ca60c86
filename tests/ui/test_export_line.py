"""Exports wait their turn like drags (issue 26): while one export holds the export slot, the others wait in
line in our code, awaited on Gradio's event loop, holding none of its worker threads; each says its place in
line, and every other request (a newcomer's first image, a waiting visitor's Save) still gets through."""
import asyncio
import socket
import threading
import time
import types

import pytest

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402

MODEL = "tiny-exports"
THREADS = 2           # Gradio's worker threads on this server (its `max_threads`)
WAITING = 4           # exports waiting in line at once: more than the worker threads
DEADLINE_S = 120      # liveness only: a request that never completes fails the test instead of hanging it


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_catalog):
    folder = tmp_path_factory.mktemp("exports")
    model = save_generator(tiny_generator(32, seed=0), folder / "tiny.safetensors")
    extra_catalog({"name": MODEL, "label": "Tiny exports", "path": str(model), "resolution": 32, "shows": "noise",
                   "licence": "test", "source": "tests"})
    built = draggan_app.build_demo(MODEL, "cpu", public=True, max_sessions=16, max_per_client=10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True, max_threads=THREADS)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built)
    built.demo.close()


def client(server):
    return gradio_client.Client(server.url, verbose=False)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def hold_the_export_slot(sessions) -> object:
    """Take the server's one export slot, as a long render would; `release` it to let the line go on."""
    holder = object()
    sessions.export_slots.join(holder)
    assert sessions.export_slots.take(holder)
    return holder


def place_said(job) -> int | None:
    """The place in line an export's progress says ('Waiting for the device: 2nd in line'), or None."""
    progress = job.status().progress_data or []
    for unit in progress:
        desc = getattr(unit, "desc", None) or ""
        if desc.startswith("⏳ Waiting for the device: "):
            return int("".join(ch for ch in desc.split(": ")[1].split(" in line")[0] if ch.isdigit()))
    return None


def test_exports_waiting_in_line_hold_no_worker_thread(server):
    """More exports wait than the server has worker threads; each says its place in line over the API; a
    newcomer's first image and a waiting visitor's Save still complete; then every export ends with its file."""
    sessions = server.built.ctx.sessions
    visitors = [client(server) for _ in range(WAITING)]
    for c in visitors:
        c.predict(api_name="/generate")
        c.predict(handles="[[6, 6]]", targets="[[20, 18]]", max_steps=3, api_name="/drag")
    holder = hold_the_export_slot(sessions)
    try:
        jobs = [c.submit("gif", True, api_name="/export_video") for c in visitors]
        wait_until(lambda: all(sessions.get(c.session_hash).exports.busy for c in visitors),
                   "not every export arrived in line")
        wait_until(lambda: all(place_said(job) for job in jobs), "an export never said its place in line")
        assert sorted(place_said(job) for job in jobs) == list(range(1, WAITING + 1))
        newcomer = client(server)
        first = newcomer.submit(seed=5, api_name="/generate")
        assert first.result(timeout=DEADLINE_S)[0], "a newcomer's first image waited for the exports"
        saved = visitors[0].submit(api_name="/save_image")
        assert saved.result(timeout=DEADLINE_S).endswith(".png")
        assert not any(job.done() for job in jobs)                      # the exports still wait their turn
        assert server.built.demo.limiter.borrowed_tokens == 0            # ... holding no worker thread
    finally:
        sessions.export_slots.release(holder)
    for job in jobs:
        assert job.result(timeout=DEADLINE_S).endswith(".gif")
    assert sessions.export_slots.position(holder) == 0 and not any(
        sessions.get(c.session_hash).exports.busy for c in visitors)


def test_the_export_button_says_its_place_then_gives_the_file(server):
    """The Export button's handler, called as Gradio calls it: its note says the export's place in line while
    the slot is held, then the file comes (an MP4, also played in the page) and the note is cleared."""
    from ui.sections import save

    sessions = server.built.ctx.sessions
    c = client(server)
    c.predict(api_name="/generate")
    c.predict(handles="[[6, 6]]", targets="[[20, 18]]", max_steps=3, api_name="/drag")
    request = types.SimpleNamespace(session_hash=c.session_hash, client=None, headers={})
    holder = hold_the_export_slot(sessions)
    said_place, outputs = threading.Event(), []

    async def press() -> None:
        async for out in save.export_and_play(server.built.ctx, "mp4", True, request):
            outputs.append(out)
            said_place.set()

    # Pressed on a thread of its own, so that a handler that blocks instead of awaiting fails the test in time.
    pressing = threading.Thread(target=asyncio.run, args=(press(),), daemon=True)
    pressing.start()
    try:
        assert said_place.wait(DEADLINE_S), "the button never said its place in line"
        assert outputs[0][2].startswith("⏳ Waiting for the device: **1st** in line")  # ", about N s" once one ended
    finally:
        sessions.export_slots.release(holder)
    pressing.join(DEADLINE_S)
    assert not pressing.is_alive(), "the export never ended"
    path, video, note = outputs[-1]
    assert path.endswith(".mp4") and video.visible and note == ""
