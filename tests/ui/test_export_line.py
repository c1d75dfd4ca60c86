"""Exports and drags wait their turn (issue 26): while one job holds the device (a drag's slot, or the export
slot), the others wait in line in our code, awaited on Gradio's event loop, holding none of its worker threads;
each says its place in line, and every other request (a newcomer's first image, a waiting visitor's Save) still
gets through."""
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
from gradio_client.exceptions import AppError  # noqa: E402

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
    started = start_server(max_sessions=16, threads=THREADS)
    yield started
    started.built.demo.close()


def start_server(max_sessions: int, threads: int) -> types.SimpleNamespace:
    """A public server of the tiny model (in the catalog once `server` has run) with `threads` worker threads."""
    built = draggan_app.build_demo(MODEL, "cpu", public=True, max_sessions=max_sessions, max_per_client=max_sessions)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True, max_threads=threads)
    return types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built)


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


def hold_the_device(sessions) -> object:
    """Take the server's one device slot, as a long drag would; `release` it to let the line go on."""
    holder = object()
    sessions.slots.join(holder)
    assert sessions.slots.take(holder)
    return holder


def drag_place(job) -> int | None:
    """The place in line a drag's latest frame says (its JSON: reason 'waiting', queue.place), or None."""
    outputs = job.outputs()
    frame = outputs[-1][2] if outputs else None
    return frame["queue"]["place"] if isinstance(frame, dict) and frame.get("reason") == "waiting" else None


def test_drags_waiting_in_line_hold_no_worker_thread(server):
    """More drags wait for the device than the server has worker threads; each says its place in line; a
    newcomer's first image and a waiting visitor's Save still complete, and the worker threads stay free (a
    waiting drag's report borrows one for a moment to encode its line, so: free at most of the times looked);
    then every drag runs and ends with its frames."""
    sessions = server.built.ctx.sessions
    limiter = server.built.demo.limiter
    visitors = [client(server) for _ in range(WAITING)]
    for c in visitors:
        c.predict(api_name="/generate")
    holder = hold_the_device(sessions)
    try:
        jobs = [c.submit(handles="[[6, 6]]", targets="[[20, 18]]", max_steps=3, api_name="/drag") for c in visitors]
        wait_until(lambda: all(sessions.get(c.session_hash).line.busy for c in visitors),
                   "not every drag arrived in line")
        wait_until(lambda: sorted(drag_place(job) or 0 for job in jobs) == list(range(1, WAITING + 1)),
                   "a drag never said its place in line")
        newcomer = client(server)
        first = newcomer.submit(seed=5, api_name="/generate")
        assert first.result(timeout=DEADLINE_S)[0], "a newcomer's first image waited for the drags"
        saved = visitors[0].submit(api_name="/save_image")
        assert saved.result(timeout=DEADLINE_S).endswith(".png")
        threads_in_use = []
        for _ in range(40):
            threads_in_use.append(limiter.borrowed_tokens)
            time.sleep(0.02)
        assert not any(job.done() for job in jobs)                      # the drags still wait their turn
        assert threads_in_use.count(0) > len(threads_in_use) // 2, \
            f"waiting drags held worker threads: {threads_in_use}"      # ... holding no worker thread
    finally:
        sessions.slots.release(holder)
    for job in jobs:
        job.result(timeout=DEADLINE_S)
        outputs = job.outputs()
        frames = [out[2] for out in outputs]
        assert frames[0]["reason"] == "waiting", frames[0]
        assert frames[-1]["done"] and frames[-1]["reason"] in ("reached", "max_steps") and frames[-1]["step"] >= 1
        assert str(outputs[-1][0]).endswith(".png")                     # the last view, as a file
    assert not any(sessions.get(c.session_hash).line.busy for c in visitors)


def test_the_drag_button_waits_says_its_place_and_stop_or_a_closed_page_ends_the_wait(server):
    """The Drag button's handler, called as Gradio calls it, while the device is held: its line says the drag's
    place (the image left as it is), a second Drag is refused in one line, Stop ends the waiting drag before
    its first step; a drag whose page closes (Gradio closes the handler) leaves the line without running."""
    from draggan.scheduling import DRAG_BUSY
    from ui.sections import drag as drag_section, history
    from ui.wiring import bind, keep_on_error

    ctx, sessions = server.built.ctx, server.built.ctx.sessions
    c = client(server)
    c.predict(api_name="/generate")
    sess = sessions.get(c.session_hash)
    request = types.SimpleNamespace(session_hash=c.session_hash, client=None, headers={})
    press = keep_on_error(3, 1)(bind(drag_section.drag, ctx))  # as the Drag button wires it
    seen, closed = {}, threading.Event()

    async def visit() -> None:
        first = press("[[6, 6]]", "[[20, 18]]", max_steps=3, request=request)
        seen["waiting"] = await anext(first)
        seen["again"] = [out async for out in press("[[6, 6]]", "[[20, 18]]", request=request)]
        history.stop(ctx, request)
        seen["stopped"] = [out async for out in first]
        second = press("[[6, 6]]", "[[20, 18]]", max_steps=3, request=request)
        seen["second"] = await anext(second)
        await second.aclose()  # the page closed
        closed.set()

    holder = hold_the_device(sessions)
    # Run on a thread of its own, so that a handler that blocks instead of awaiting fails the test in time.
    visiting = threading.Thread(target=asyncio.run, args=(visit(),), daemon=True)
    visiting.start()
    try:
        assert closed.wait(DEADLINE_S), "the drags never ended while the device was held"
        wait_until(lambda: not sess.line.busy, "a drag whose page closed stayed in line")
        assert sessions.slots.position(holder) == 0  # ... all while the device was held
    finally:
        sessions.slots.release(holder)
    visiting.join(DEADLINE_S)
    view, text, frame = seen["waiting"]
    assert view == {"__type__": "update"} and frame["reason"] == "waiting"
    assert text.startswith("⏳ Waiting for the device: **1st** in line")
    assert [out[1] for out in seen["again"]] == [f"⚠️ {DRAG_BUSY}"]  # one line; the first drag goes on waiting
    *_, (_, text, last) = seen["stopped"]
    assert last["done"] and last["reason"] == "stopped" and last["step"] == 0
    assert text.startswith("**Stopped** after 0 steps")
    assert seen["second"][2]["reason"] == "waiting"
    assert not sess.editor.history  # nothing ran


def test_every_session_may_have_a_drag_and_an_export_waiting_and_still_be_served(server):
    """Gradio's queue runs as many events at once as it has worker threads, plus one for each drag and each
    export that can wait (one of each per session): with every session's drag and export waiting on a server of
    one thread, a session's Save still completes."""
    small = start_server(max_sessions=2, threads=1)
    sessions = small.built.ctx.sessions
    try:
        visitors = [client(small) for _ in range(2)]
        for c in visitors:
            c.predict(api_name="/generate")
            c.predict(handles="[[6, 6]]", targets="[[20, 18]]", max_steps=3, api_name="/drag")
        device, export_slot = hold_the_device(sessions), hold_the_export_slot(sessions)
        try:
            jobs = []
            for c in visitors:  # the export first: an export asked for while the session's drag waits is refused
                jobs.append(c.submit("gif", True, api_name="/export_video"))
                wait_until(lambda: sessions.get(c.session_hash).exports.busy, "the export did not arrive in line")
                jobs.append(c.submit(handles="[[6, 6]]", targets="[[20, 18]]", max_steps=3, api_name="/drag"))
            wait_until(lambda: all(sessions.get(c.session_hash).line.busy and sessions.get(c.session_hash).exports.busy
                                   for c in visitors), "not every drag and export arrived in line")
            saved = visitors[0].submit(api_name="/save_image")
            assert saved.result(timeout=DEADLINE_S).endswith(".png"), "a Save waited behind the waiting jobs"
            assert not any(job.done() for job in jobs)
        finally:
            sessions.slots.release(device)
            sessions.export_slots.release(export_slot)
        for job in jobs:  # each drag finishes; an export whose turn comes while its session's drag still waits or
            try:          # runs is refused in one line (it would export a drag about to change): either ends it
                job.result(timeout=DEADLINE_S)
            except AppError as e:
                assert job in jobs[0::2] and "Wait for the drag to finish" in str(e), e
    finally:
        small.built.demo.close()
