"""The app in public mode, as an anonymous visitor meets it: refusals, bounds, and a small load test on loopback."""
import gc
import json
import socket
import threading
import time
import types

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
from draggan.public import is_public  # noqa: E402
from gates import gate_session  # noqa: E402
from gradio_client import handle_file  # noqa: E402
from stylegan2.checkpoints import NOT_ALLOWED, save_generator  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402

RES = 32
MODEL = "tiny-public"
MOVE = dict(lr=0.08, r1=48, r2=96)
AppError = gradio_client.exceptions.AppError


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_catalog):
    folder = tmp_path_factory.mktemp("public")
    model = save_generator(tiny_generator(RES, seed=0), folder / "tiny.safetensors")
    extra_catalog({"name": MODEL, "label": "Tiny public", "path": str(model), "resolution": RES, "shows": "noise",
                   "licence": "test", "source": "tests"})
    # Every test client comes from 127.0.0.1, one "client" for the per-client bound: room for the 6 honest ones.
    built = draggan_app.build_demo(MODEL, "cpu", public=True, max_sessions=16, max_per_client=10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built, model_path=str(model), folder=folder)
    built.demo.close()


def client(server):
    return gradio_client.Client(server.url, verbose=False)


def test_public_mode_is_the_default_beyond_loopback():
    assert not is_public("127.0.0.1", False, False, False)
    assert is_public("0.0.0.0", False, False, False)
    assert is_public("127.0.0.1", True, False, False)          # a share link
    assert not is_public("0.0.0.0", False, False, True)        # --trusted
    assert is_public("127.0.0.1", False, True, False)          # --public


def test_models_outside_the_catalog_are_refused_alike(server, tmp_path):
    c = client(server)
    c.predict(model=MODEL, api_name="/generate")
    before = np.asarray(__import__("PIL.Image").Image.open(c.predict(api_name="/save_image")))
    uploaded = c.upload_files([handle_file(server.model_path)]) if hasattr(c, "upload_files") else None
    specs = [server.model_path,                                   # an existing local file
             str(tmp_path / "missing.safetensors"),               # a missing one
             "someone/somewhere:G.pkl",                           # a Hub file
             "/etc/passwd"]
    if uploaded:
        specs.append(uploaded[0])                                 # a file the visitor just uploaded
    messages = set()
    for spec in specs:
        with pytest.raises(AppError) as e:
            c.predict(model=spec, api_name="/generate")
        messages.add(str(e.value))
    assert len(messages) == 1 and NOT_ALLOWED in messages.pop()   # no file-existence oracle
    after = np.asarray(__import__("PIL.Image").Image.open(c.predict(api_name="/save_image")))
    assert np.array_equal(before, after)                          # the visitor's image is as it was


def test_huge_and_bad_point_lists_are_refused_quickly_in_one_line(server):
    c = client(server)
    c.predict(api_name="/generate")
    huge = json.dumps([[1, 1]] * 100_000)
    # Refused by its length, before it is parsed (the message counts characters, not points).
    with pytest.raises(AppError, match=r"at most 100 points \(16384 characters\), got 800000 characters") as e:
        c.predict(handles=huge, targets=huge, api_name="/drag")
    assert "\n" not in str(e.value) and len(str(e.value)) < 300   # the 1 MB text is not echoed back
    for handles, message in (("[[NaN, 1]]", "not a number"), ("[[Infinity, 1]]", "not a number"),
                             ("[[1e400, 1]]", "not a number")):
        with pytest.raises(AppError, match=message):
            c.predict(handles=handles, targets="[[3, 3]]", api_name="/drag")


def test_an_api_stop_reaches_a_drag_still_waiting_for_the_device(server):
    """One drag holds the only device slot (held at a step by a hook); another session's drag waits in line
    for it; that session's Stop ends the waiting drag before its first step."""
    busy, waiting = client(server), client(server)
    busy.predict(api_name="/generate")
    waiting.predict(api_name="/generate")
    sessions = server.built.ctx.sessions
    gate = gate_session(sessions, busy.session_hash, at=1)
    long = dict(lr=0.0005, r1=48, r2=96, max_steps=2000, frame_rate=5)
    job_busy = busy.submit(handles="[[2, 2]]", targets="[[29, 29]]", api_name="/drag", **long)
    try:
        assert gate.paused.wait(60), "the first drag never started"
        job_wait = waiting.submit(handles="[[2, 2]]", targets="[[29, 29]]", api_name="/drag", **long)
        waiter = sessions.get(waiting.session_hash)
        deadline = time.monotonic() + 60
        while not waiter.busy:                                    # it has arrived and waits for the slot
            assert time.monotonic() < deadline, "the second drag never arrived"
            time.sleep(0.01)
        assert not waiter.running
        waiting.predict(api_name="/stop")
        last = job_wait.result(timeout=60)[2]
        assert last["done"] and last["reason"] == "stopped" and last["step"] == 0
    finally:
        busy.predict(api_name="/stop")
        gate.resume.set()
    assert job_busy.result(timeout=60)[2]["reason"] == "stopped"


def burst(server, clients: list, hog_keys: list | None = None) -> list[str]:
    """Every client generates and drags while one more client opens 50 sessions; returns the hog's refusals
    (and adds the keys of its sessions to hog_keys). An idle session may be evicted for a newcomer: the
    clients generate again first."""
    for i, c in enumerate(clients):
        c.predict(seed=i, api_name="/generate")
    jobs = [c.submit(handles=f"[[{4 + i}, 4]]", targets=f"[[{20 + i}, 26]]", max_steps=60, api_name="/drag",
                     **MOVE) for i, c in enumerate(clients)]
    sessions = server.built.ctx.sessions
    deadline = time.monotonic() + 60
    while not all(sessions.get(c.session_hash).busy for c in clients):  # every drag has arrived (runs or waits)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    refused = []

    def hog():
        c = client(server)
        for _ in range(50):
            c.reset_session()  # a new session each time, as 50 tabs would open
            if hog_keys is not None:
                hog_keys.append(c.session_hash)
            try:
                c.predict(api_name="/generate")
            except AppError as e:
                refused.append(str(e))

    t = threading.Thread(target=hog)
    t.start()
    results = [job.result(timeout=300)[2] for job in jobs]
    t.join(300)
    for i, last in enumerate(results):
        assert last["done"] and last["reason"] in ("reached", "max_steps"), last  # nobody's drag was stopped
        assert last["targets"] == [[20 + i, 26]]                                # nor saw another's points
    return refused


def sessions_in_memory(keys: set) -> set:
    """The keys among `keys` of Session objects still in memory anywhere in the process."""
    from draggan.sessions import Session

    gc.collect()
    return {o.key for o in gc.get_objects() if type(o) is Session and o.key in keys}


def test_load_burst_keeps_running_drags_and_memory(server):
    """6 clients generate and drag at once while one client opens 50 sessions: no running drag is stopped
    or evicted, nobody sees another's points, the hog is refused in one line, and every session it pushed
    out is gone from memory (none is kept alive by a cache, a stream or a thread), twice in a row."""
    clients = [client(server) for _ in range(6)]
    sessions = server.built.ctx.sessions
    for _ in range(2):
        hog_keys: list = []
        refused = burst(server, clients, hog_keys)
        assert all("busy" in m or "sessions open" in m for m in refused)
        assert len(sessions) <= 16 and len(hog_keys) == 50
        live = {k for k in hog_keys if k in sessions}
        assert sessions_in_memory(set(hog_keys)) == live
