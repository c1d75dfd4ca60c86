"""Per-user sessions: isolation, Stop, shared generators, time to live, the LRU bound, photo sessions."""
import gc
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from draggan.compute import AHEAD, ComputeThread
from draggan.engine import DragConfig, DragInputError
from draggan.sessions import NoSessionError, PhotoLimitError, SessionManager
from pti import (EmbeddingError, InversionCancelled, PerceptualDistance, PerceptualWeightsError, VGG16Features,
                 get_preset)
from stylegan2.checkpoints import generator_hash
from stylegan2 import image_to_uint8, seed_to_z

from stylegan2.testing import tiny_generator

FAR = DragConfig(lr=0.001, r1=48, r2=96, max_steps=1000)   # moves slowly: only a Stop ends it early
FAST = DragConfig(lr=0.08, r1=48, r2=96, max_steps=20)     # moves a lot on the tiny model


def wait_until(condition, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; the deadline is for liveness only (a hung test), never a speed bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.002)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def loads():
    return []


def caching_loader(loads: list, seed: int = 0):
    """A loader with load_generator's contract: one shared copy per (model, device), loaded once."""
    cache, lock = {}, threading.Lock()

    def load(spec, device):
        with lock:
            if (spec, device) not in cache:
                loads.append((spec, device))
                cache[spec, device] = tiny_generator(32, seed=seed)
            return cache[spec, device]
    return load


@pytest.fixture(params=["inline", "compute thread"])
def manager(loads, request):
    load = caching_loader(loads)
    # Four device slots: these tests interleave several sessions' drags in one thread. The app runs the
    # tensor work of every session on one compute thread; scripts on their own.
    compute = ComputeThread() if request.param == "compute thread" else None
    return SessionManager(device="cpu", load=load, max_sessions=4, ttl_s=100.0, clock=Clock(), device_slots=4,
                          compute=compute)


def test_two_sessions_share_the_generator_but_not_points_or_latents(manager, loads):
    a = manager.new_session("a", "tiny", seed=1)
    b = manager.new_session("b", "tiny", seed=2)
    assert a.editor.G is b.editor.G and loads == [("tiny", "cpu")]
    assert not any(p.requires_grad for p in a.editor.G.parameters())  # shared read-only
    assert not torch.equal(a.editor.latent, b.editor.latent)

    assert a.add_point([3, 4]) == "handle" and a.add_point([20, 22]) == "target"
    assert b.handles_xy == [] and b.targets_xy == []
    b_latent, b_image = b.editor.latent.clone(), b.image().copy()
    frames = list(a.run_drag(a.handles_xy, a.targets_xy, FAST))
    assert frames[-1].done and frames[-1].mean_distance < 0.7 * np.hypot(17, 18)
    assert torch.equal(b.editor.latent, b_latent) and np.array_equal(b.image(), b_image)
    assert b.handles_xy == [] and not b.editor.history


def test_stopping_one_session_does_not_stop_another(manager):
    a = manager.new_session("a", "tiny", seed=1)
    b = manager.new_session("b", "tiny", seed=2)
    ga = a.run_drag([[4, 4]], [[28, 28]], FAR)
    gb = b.run_drag([[4, 4]], [[28, 28]], FAR)
    next(ga), next(gb)
    assert manager.get("a").stop()
    last_a = list(ga)[-1]
    # Before its next step; on the compute thread the drag may have run up to AHEAD frames past the reader.
    ahead = AHEAD + 1 if isinstance(manager.compute, ComputeThread) else 0
    assert last_a.done and last_a.reason == "stopped" and 1 <= last_a.step <= 1 + ahead
    frames_b = [next(gb) for _ in range(5)]
    assert not any(f.done for f in frames_b) and b.running
    assert b.stop() and list(gb)[-1].reason == "stopped"


def test_stop_from_another_thread_ends_the_drag_within_a_step(manager):
    a = manager.new_session("a", "tiny", seed=1)
    frames = []

    def run():
        for f in a.run_drag([[4, 4]], [[28, 28]], FAR):
            frames.append(f)

    t = threading.Thread(target=run)
    t.start()
    while len(frames) < 3 and t.is_alive():
        time.sleep(0.005)
    a.stop()
    t.join(timeout=30)
    assert not t.is_alive() and frames[-1].reason == "stopped"
    assert frames[-1].step <= frames[-2].step + 1 < FAR.max_steps


def test_stop_pressed_while_the_drag_waits_cancels_it(loads):
    manager = SessionManager(device="cpu", load=caching_loader(loads), max_sessions=4, ttl_s=100.0, clock=Clock(),
                             device_slots=1)
    a = manager.new_session("a", "tiny", seed=1)
    b = manager.new_session("b", "tiny", seed=2)
    assert not a.stop()                     # nothing running or waiting: no effect on later drags
    g_b = b.run_drag([[4, 4]], [[28, 28]], FAR)
    next(g_b)                               # b holds the only device slot: a's drag must wait
    frames = []
    t = threading.Thread(target=lambda: frames.extend(a.run_drag([[4, 4]], [[28, 28]], FAR)))
    t.start()
    wait_until(lambda: a.queued == 1)       # a's drag is in line, waiting for the slot
    assert a.stop()                         # reaches the waiting drag (as the API's /stop does)
    t.join(10)
    assert len(frames) == 1 and frames[0].reason == "stopped" and frames[0].step == 0
    assert not a.editor.history             # nothing ran, nothing to undo
    assert b.running and b.stop() and list(g_b)[-1].reason == "stopped"
    frames = list(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=3)))
    assert frames[-1].reason == "max_steps" and frames[-1].step == 3

    g = a.run_drag([[4, 4]], [[28, 28]], FAR)
    next(g)
    with pytest.raises(DragInputError, match="already running or waiting"):
        a.run_drag([[4, 4]], [[28, 28]], FAR)  # Drag pressed again: refused, the first goes on
    assert a.queued == 1 and a.stop() and list(g)[-1].reason == "stopped"


def test_a_stop_pressed_before_the_drag_reaches_the_session_still_stops_it(manager):
    """The app arms a drag when Drag is pressed; a Stop before the drag leaves the web queue reaches it."""
    a = manager.new_session("a", "tiny", seed=1)
    a.arm_drag()
    assert a.stop()
    frames = list(a.run_drag([[4, 4]], [[28, 28]], FAR))
    assert [f.reason for f in frames] == ["stopped"] and frames[0].step == 0 and not a.editor.history
    a.arm_drag()                            # the next press starts afresh: the old Stop is spent
    assert list(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2)))[-1].reason == "max_steps"
    assert list(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2)))[-1].reason == "max_steps"  # unarmed


def test_a_closed_session_refuses_to_drag(manager):
    """The browser left (or the session expired): whoever still holds the session object cannot drag on it."""
    a = manager.new_session("a", "tiny", seed=1)
    assert manager.close("a")
    with pytest.raises(NoSessionError, match="This session has ended"):
        a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2))


def test_a_stop_spent_on_a_drag_that_never_came_does_not_stop_the_next_one():
    """Drag pressed (armed), Stop pressed, but that drag never reached the line (refused on its way): the next
    press arms afresh."""
    from draggan.scheduling import DragLine
    line = DragLine()
    line.arm()
    assert line.stop()
    line.arm()
    assert not line.join().is_set()
    line2 = DragLine()
    line2.arm()
    line2.arm()  # pressed twice, nothing stopped: still one armed ticket, which a Stop reaches
    assert line2.stop() and line2.join().is_set()


@pytest.mark.parametrize("method,config,message", [
    ("warp", DragConfig(max_steps=2), "unknown drag method"),
    ("auto", DragConfig(max_steps=2), "no Auto DragGAN predictor"),
    ("draggan", DragConfig(max_steps=0), "max_steps must be between"),
])
def test_a_refused_drag_changes_nothing_and_keeps_the_last_video(manager, method, config, message):
    a = manager.new_session("a", "tiny", seed=1)
    list(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2)))
    history, frames, latent = len(a.editor.history), len(a.editor.recorder), a.editor.latent.clone()
    assert frames > 0
    with pytest.raises(DragInputError, match=message):
        a.run_drag([[4, 4]], [[28, 28]], config, method)   # refused when called, before any frame is asked for
    with pytest.raises(DragInputError, match=message):
        a.editor.drag([[4, 4]], [[28, 28]], config, method)
    assert len(a.editor.history) == history and len(a.editor.recorder) == frames
    assert torch.equal(a.editor.latent, latent) and not a.busy


def test_a_session_holds_one_drag_and_refuses_more_in_one_line(loads):
    """One drag per session, running or waiting: a visitor cannot pile up drags that each hold a server thread."""
    manager = SessionManager(device="cpu", load=caching_loader(loads), max_sessions=4, ttl_s=100.0, clock=Clock(),
                             device_slots=1)
    a, b = manager.new_session("a", "tiny", seed=1), manager.new_session("b", "tiny", seed=2)
    running = b.run_drag([[4, 4]], [[28, 28]], FAR)
    next(running)                           # b holds the only slot
    waiting = []
    t = threading.Thread(target=lambda: waiting.extend(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2))))
    t.start()
    wait_until(lambda: a.queued == 1)       # a's drag waits for the device
    for _ in range(3):
        with pytest.raises(DragInputError, match="already running or waiting"):
            a.run_drag([[4, 4]], [[28, 28]], FAR)
    assert a.queued == 1
    line = a.line                           # two calls that passed the check at once: the line still holds one
    from draggan.scheduling import LineFullError
    with pytest.raises(LineFullError):
        line.join()
    b.stop()
    assert list(running)[-1].reason == "stopped"
    t.join(30)
    assert waiting[-1].reason == "max_steps" and not a.busy


def test_a_drag_left_suspended_by_its_reader_is_finished_at_teardown(manager):
    """What the teardown of every test (conftest.no_drag_outlives_its_test) does: a drag whose reader still holds
    its iterator but steps it no more (a failed test's traceback) is stopped and run to its end now, its turn and
    device slot given back; left to the interpreter's exit, it aborted pytest -x (exit 134)."""
    from draggan.scheduling import DragLine
    a = manager.new_session("a", "tiny", seed=1)
    g = a.run_drag([[4, 4]], [[28, 28]], FAR)
    first = next(g)
    assert a.running and not first.done
    assert DragLine.end_all(timeout=60)
    assert not a.running and not a.busy and g.gi_frame is None      # the generator has ended
    assert manager.slots.position(object()) == 0 and not manager.slots._held  # its device slot is free
    if manager.compute.thread is not None:                          # nothing left stepping on the compute thread
        wait_until(lambda: not manager.compute._streams)
    frames = list(a.run_drag([[4, 4]], [[6, 6]], DragConfig(max_steps=2)))  # the line takes a new drag
    assert frames[-1].done


def test_a_dragging_session_outlives_its_time_to_live(manager):
    clock = manager._clock
    a = manager.new_session("a", "tiny", seed=1)
    g = a.run_drag([[4, 4]], [[28, 28]], FAR)
    next(g)
    clock.t = 1000                          # far past the TTL, while the drag runs
    assert manager.sweep() == 0 and manager.get("a") is a and a.running
    a.stop()
    assert list(g)[-1].reason == "stopped"
    clock.t = 2000                          # idle now: it ends
    assert manager.sweep() == 1 and "a" not in manager


def test_one_client_evicts_only_its_own_sessions(loads):
    manager = SessionManager(device="cpu", load=caching_loader(loads), max_sessions=8, ttl_s=100.0, clock=Clock(),
                             max_per_client=2, device_slots=4)
    manager.new_session("y1", "tiny", seed=1, client="10.0.0.2")
    manager.new_session("x1", "tiny", seed=1, client="10.0.0.1")
    manager.new_session("x2", "tiny", seed=2, client="10.0.0.1")
    manager.new_session("x3", "tiny", seed=3, client="10.0.0.1")   # x1, x's least recently used, goes
    assert "x1" not in manager and all(k in manager for k in ("x2", "x3", "y1"))
    gens = [manager.get(k).run_drag([[4, 4]], [[28, 28]], FAR) for k in ("x2", "x3")]
    for g in gens:
        next(g)
    with pytest.raises(DragInputError, match="already have 2 sessions"):
        manager.new_session("x4", "tiny", seed=4, client="10.0.0.1")  # both busy: refused, nobody evicted
    assert all(k in manager for k in ("x2", "x3", "y1")) and "x4" not in manager
    manager.new_session("y2", "tiny", seed=4, client="10.0.0.2")      # another client is not refused
    for k, g in zip(("x2", "x3"), gens):
        manager.get(k).stop()
        list(g)


def test_an_abandoned_drag_is_stopped_and_committed(manager):
    a = manager.new_session("a", "tiny", seed=1)
    w0 = a.editor.latent.clone()
    g = a.run_drag([[4, 4]], [[28, 28]], FAR)
    next(g), next(g)
    g.close()                               # a client went away mid-drag
    assert not a.running and not torch.equal(a.editor.latent, w0)
    assert a.undo() and torch.equal(a.editor.latent, w0)


def test_points_alternate_and_are_checked(manager):
    a = manager.new_session("a", "tiny", seed=1)
    assert [a.add_point(p) for p in ([1, 2], [3, 4], [5, 6])] == ["handle", "target", "handle"]
    assert a.handles_xy == [[1, 2], [5, 6]] and a.targets_xy == [[3, 4]]
    assert a.undo_point() and a.handles_xy == [[1, 2]]
    assert a.undo_point() and a.targets_xy == []
    with pytest.raises(DragInputError, match="outside the 32x32 image"):
        a.add_point([32, 3])
    a.clear_points()
    assert a.handles_xy == [] and not a.undo_point()

    g = a.run_drag([[4, 4]], [[28, 28]], FAR)
    next(g)
    with pytest.raises(DragInputError, match="Wait for the drag"):
        a.add_point([1, 1])
    with pytest.raises(DragInputError, match="Wait for the drag"):
        manager.new_session("a", "tiny", seed=3)
    a.stop()
    list(g)


def test_mask_is_per_session_and_empty_means_none(manager):
    a = manager.new_session("a", "tiny", seed=1)
    b = manager.new_session("b", "tiny", seed=2)
    m = np.zeros((32, 32), bool)
    m[8:16, 8:16] = True
    a.set_mask(m)
    assert a.editable is not None and a.editable.sum() == 64 and a.editor.editable is not None
    assert b.editable is None and b.editor.editable is None
    a.set_mask(np.zeros((32, 32)))
    assert a.editable is None and a.editor.editable is None
    with pytest.raises(DragInputError):
        a.set_mask(np.ones((16, 16)))


def test_time_to_live_ends_idle_sessions(manager):
    clock = manager._clock
    a = manager.new_session("a", "tiny", seed=1)
    folder = a.workdir()
    clock.t = 60
    manager.new_session("b", "tiny", seed=2)
    clock.t = 101                           # a idle for 101 s > ttl; b for 41 s
    assert manager.sweep() == 1 and "a" not in manager and "b" in manager
    assert not folder.exists()
    with pytest.raises(NoSessionError, match="press Generate"):
        manager.get("a")
    clock.t = 150
    manager.get("b")                        # using a session keeps it alive
    clock.t = 240
    assert manager.get("b") and len(manager) == 1


def test_the_bound_evicts_the_least_recently_used_idle_session_never_a_running_drag(manager):
    for i, key in enumerate("abcd"):
        manager.new_session(key, "tiny", seed=i)
    manager.get("a")                        # now b is the least recently used
    running = manager.get("b")
    manager.get("c"), manager.get("d"), manager.get("a")
    g = running.run_drag([[4, 4]], [[28, 28]], FAR)
    next(g)                                 # b drags: it must not be evicted, c (the LRU idle one) goes
    manager.new_session("e", "tiny", seed=5)
    assert len(manager) == 4 and "c" not in manager and all(k in manager for k in "abde")
    assert running.running and len(running.editor.history) == 1
    running.stop()
    assert list(g)[-1].reason == "stopped"
    # Every session busy: a new one is refused, nobody is pushed out.
    gens = [manager.get(k).run_drag([[4, 4]], [[28, 28]], FAR) for k in "abde"]
    for gen in gens:
        next(gen)
    with pytest.raises(DragInputError, match="busy"):
        manager.new_session("f", "tiny", seed=6)
    assert all(k in manager for k in "abde") and "f" not in manager
    for k, gen in zip("abde", gens):
        manager.get(k).stop()
        list(gen)
    assert manager.close("a") and not manager.close("a") and "a" not in manager


# ----------------------------------------------------------------------------
# Real photos: per-session tuned copies, cancel, the bound, the shared perceptual net, embeddings.

QUICK = get_preset("fast", w_steps=3, tune_steps=2)
LONG = get_preset("fast", w_steps=5000, tune_steps=5000)


@pytest.fixture(scope="module")
def perceptual():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PerceptualDistance(VGG16Features(width=1 / 16))


@pytest.fixture
def photos(loads, perceptual):
    """A manager for photo tests: at most two tuned copies; `perceptual_loads` counts the loader's calls."""
    def load(spec, device):
        loads.append((spec, device))
        return tiny_generator(32, seed=0)

    def load_perceptual(device):
        perceptual_loads.append(device)
        return perceptual

    perceptual_loads = []
    manager = SessionManager(device="cpu", load=load, max_sessions=4, ttl_s=100.0, clock=Clock(),
                             perceptual_loader=load_perceptual, max_photos=2)
    manager.perceptual_loads = perceptual_loads
    return manager


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    """A photo the tiny model can make (seed 9, no truncation), as a PNG file."""
    G = tiny_generator(32, seed=0)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    with torch.no_grad():
        ws = G.mapping(seed_to_z(9, G.z_dim))
        Image.fromarray(image_to_uint8(G.synthesis(ws, noise_mode="const"))).save(path)
    return path


def test_a_photo_session_drags_its_own_tuned_copy_and_leaves_the_base_alone(photos, photo_file):
    base = photos.generator("tiny")
    before = generator_hash(base)
    a, notes = photos.invert_photo("a", "tiny", photo_file, QUICK)
    assert notes == [] and a.photo is not None and a.seed is None and photos.photo_count() == 1
    assert a.editor.G is a.photo.G and a.editor.G is not base
    assert np.array_equal(a.image(), a.photo.image())        # starts at the reconstruction
    b, _ = photos.invert_photo("b", "tiny", photo_file, QUICK)
    assert b.editor.G is not a.editor.G and photos.photo_count() == 2

    frames = list(a.run_drag([[6, 6]], [[24, 22]], FAST))
    assert frames[-1].mean_distance < 0.8 * np.hypot(18, 16)
    assert not np.array_equal(a.image(), a.photo.image())
    a.reset()                                                 # back to the inverted photo
    assert np.array_equal(a.image(), a.photo.image())
    assert np.array_equal(b.image(), b.photo.image())         # a's drag never touched b
    assert generator_hash(base) == before and loads_once(photos)


def loads_once(manager) -> bool:
    return manager.perceptual_loads == ["cpu"]


@pytest.mark.parametrize("end", ["generate", "close", "expire"])
def test_the_tuned_copy_is_freed_when_the_photo_session_ends(photos, photo_file, end):
    sess, _ = photos.invert_photo("a", "tiny", photo_file, QUICK)
    copy_ref = weakref.ref(sess.editor.G)
    del sess
    if end == "generate":
        assert photos.new_session("a", "tiny", seed=1).photo is None
    elif end == "close":
        photos.close("a")
    else:
        photos._clock.t = 101
        photos.sweep()
    gc.collect()
    assert copy_ref() is None and photos.photo_count() == 0


def test_a_photo_session_is_never_evicted_for_a_newcomer(photos, photo_file):
    photos.invert_photo("a", "tiny", photo_file, QUICK)
    for i, key in enumerate("bcd"):
        photos.new_session(key, "tiny", seed=i)
    photos.new_session("e", "tiny", seed=5)         # full: a (the photo) is the least recently used, b goes
    assert "a" in photos and "b" not in photos and photos.photo_count() == 1
    busy = [photos.get(k) for k in "cde"]          # every generated session drags (or waits for the device)
    threads = [threading.Thread(target=lambda s=s: list(s.run_drag([[4, 4]], [[28, 28]], FAR))) for s in busy]
    for t in threads:
        t.start()
    for sess in busy:
        wait_until(lambda sess=sess: sess.busy)
    with pytest.raises(DragInputError, match="server is busy"):
        photos.new_session("f", "tiny", seed=6)     # only the idle photo could go, and it never does
    assert "a" in photos and photos.photo_count() == 1
    for sess, t in zip(busy, threads):
        sess.stop()
        t.join(30)
        assert not t.is_alive()


def test_recent_sessions_are_protected_when_the_server_says_so(loads):
    clock = Clock()
    manager = SessionManager(device="cpu", load=caching_loader(loads), max_sessions=2, ttl_s=1000.0, clock=clock,
                             protect_recent_s=60)
    manager.new_session("a", "tiny", seed=1, client="10.0.0.1")
    clock.t = 30
    manager.new_session("b", "tiny", seed=2, client="10.0.0.1")
    clock.t = 50                                     # both used within the last minute: a newcomer is refused
    with pytest.raises(DragInputError, match="server is busy"):
        manager.new_session("c", "tiny", seed=3, client="10.0.0.2")
    clock.t = 61                                     # a has been idle a minute now: it may go
    manager.new_session("c", "tiny", seed=3, client="10.0.0.2")
    assert "a" not in manager and "b" in manager and "c" in manager


def test_photo_slots_are_bounded_per_client(loads, perceptual, photo_file):
    manager = SessionManager(device="cpu", load=lambda spec, device: tiny_generator(32, seed=0), max_sessions=8,
                             clock=Clock(), perceptual_loader=lambda device: perceptual, max_photos=4,
                             photos_per_client=1)
    manager.invert_photo("a", "tiny", photo_file, QUICK, client="10.0.0.1")
    with pytest.raises(PhotoLimitError, match="already have 1 photo session"):
        manager.invert_photo("b", "tiny", photo_file, QUICK, client="10.0.0.1")
    manager.invert_photo("a", "tiny", photo_file, QUICK, client="10.0.0.1")   # the same tab may invert again
    manager.invert_photo("c", "tiny", photo_file, QUICK, client="10.0.0.2")   # another visitor may
    assert manager.photo_count() == 2


def test_the_per_client_photo_bound_counts_only_known_clients():
    """Callers that name no client (scripts, a server behind no proxy header) are not one visitor."""
    from draggan.photos import PhotoSlots
    slots = PhotoSlots(8, held=lambda: {"held": None}, per_client=1)
    slots.reserve("a")
    slots.reserve("b")
    slots.reserve("c", client="10.0.0.1")
    with pytest.raises(PhotoLimitError, match="already have 1 photo session"):
        slots.reserve("d", client="10.0.0.1")
    assert slots.taken() == {"held", "a", "b", "c"}


def test_cancel_stops_within_a_step_and_keeps_the_session(photos, photo_file):
    a = photos.new_session("a", "tiny", seed=1)
    image = a.image().copy()
    steps = []

    def progress(stage, step, total, loss):
        steps.append((stage, step))
        if step == 3:
            assert photos.cancel_invert("a")     # as the Cancel button does, from another thread
    with pytest.raises(InversionCancelled):
        photos.invert_photo("a", "tiny", photo_file, LONG, progress=progress)
    assert steps == [("project", 1), ("project", 2), ("project", 3)]
    assert photos.get("a") is a and np.array_equal(a.image(), image) and a.photo is None
    assert photos.photo_count() == 0 and not photos.inverting("a")

    photos.arm_invert("a")                      # Invert pressed; Cancel while it waits in the queue
    assert photos.cancel_invert("a")
    with pytest.raises(InversionCancelled):
        photos.invert_photo("a", "tiny", photo_file, LONG, progress=lambda *args: steps.append(args))
    assert len(steps) == 3 and photos.get("a") is a
    assert not photos.cancel_invert("a")        # nothing running or asked for: no effect on later ones
    assert photos.invert_photo("a", "tiny", photo_file, QUICK)[0].photo is not None


def test_cancel_from_another_thread(photos, photo_file):
    steps, outcome = [], []

    def run():
        try:
            photos.invert_photo("a", "tiny", photo_file, LONG, progress=lambda *args: steps.append(args))
        except InversionCancelled as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    while len(steps) < 2 and t.is_alive():
        time.sleep(0.005)
    photos.cancel_invert("a")
    t.join(timeout=30)
    assert not t.is_alive() and len(outcome) == 1 and 2 <= len(steps) < 50 and "a" not in photos


def test_closing_a_session_cancels_its_inversion_and_frees_its_slot(photos, photo_file):
    photos.new_session("a", "tiny", seed=1)
    steps, outcome = [], []

    def run():
        try:
            photos.invert_photo("a", "tiny", photo_file, LONG, progress=lambda *args: steps.append(args))
        except InversionCancelled as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    while len(steps) < 2 and t.is_alive():
        time.sleep(0.005)
    assert photos.photo_count() == 1
    assert photos.close("a")                # the tab went away mid-inversion
    t.join(timeout=30)
    assert not t.is_alive() and len(outcome) == 1 and len(steps) < 50  # nobody's steps ran on
    assert photos.photo_count() == 0 and "a" not in photos


def test_at_most_max_photos_tuned_copies(photos, photo_file):
    photos.invert_photo("a", "tiny", photo_file, QUICK)
    photos.invert_photo("b", "tiny", photo_file, QUICK)
    photos.new_session("c", "tiny", seed=3)
    with pytest.raises(PhotoLimitError, match="Too many photo sessions right now.*try again"):
        photos.invert_photo("c", "tiny", photo_file, QUICK)
    assert photos.get("c").photo is None and photos.photo_count() == 2
    photos.invert_photo("a", "tiny", photo_file, QUICK)      # a session re-inverting reuses its own slot
    photos.new_session("b", "tiny", seed=4)                   # b goes back to a seed: its slot is free
    assert photos.invert_photo("c", "tiny", photo_file, QUICK)[0].photo is not None
    assert photos.photo_count() == 2


def test_bad_photos_and_missing_perceptual_weights_leave_the_session_as_it_was(photos, photo_file, tmp_path):
    a = photos.new_session("a", "tiny", seed=1)
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)                   # 48 MP, a few kB on disk
    with pytest.raises(DragInputError, match=r"^huge.png is 8000x6000 \(48 megapixels\); the limit is 40"):
        photos.invert_photo("a", "tiny", huge, QUICK)
    with pytest.raises(DragInputError, match="outside the 32x32 image"):
        photos.invert_photo("a", "tiny", photo_file, QUICK, crop=(0, 0, 40, 40))

    def offline(device):
        raise PerceptualWeightsError("The perceptual network needs model.safetensors ... fetch it once")
    photos._load_perceptual = offline
    with pytest.raises(PerceptualWeightsError, match="fetch it once"):
        photos.invert_photo("a", "tiny", photo_file, QUICK)
    assert photos.get("a") is a and a.photo is None and photos.photo_count() == 0
    photos._load_perceptual = lambda device: photos.perceptual_loads.append(device) or PerceptualDistance(
        VGG16Features(width=1 / 16))
    assert photos.invert_photo("a", "tiny", photo_file, QUICK)[0].photo is not None   # failures are not cached
    photos.invert_photo("b", "tiny", photo_file, QUICK)
    assert loads_once(photos)                                   # then loaded once, shared


def test_embedding_round_trip_and_refusals(photos, photo_file, tmp_path):
    a, _ = photos.invert_photo("a", "tiny", photo_file, QUICK)
    photo_image = a.image().copy()
    path = photos.save_photo("a")
    assert path.parent == a.workdir() and path.suffix == ".safetensors"
    b = photos.load_photo("b", path)
    assert b.photo is not None and b.editor.G is not a.editor.G and np.array_equal(b.image(), photo_image)
    assert b.photo.tuning.psnr_after == a.photo.tuning.psnr_after and np.array_equal(b.photo.target, a.photo.target)

    c = photos.new_session("c", "tiny", seed=3)
    with pytest.raises(DragInputError, match="generated, not a photo"):
        photos.save_photo("c")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(EmbeddingError, match="^junk.safetensors is not a readable"):
        photos.load_photo("c", junk)
    other = SessionManager(device="cpu", load=lambda spec, device: tiny_generator(32, seed=1))
    with pytest.raises(EmbeddingError, match="other weights"):
        other.load_photo("c", path)
    assert photos.get("c") is c and c.photo is None and photos.photo_count() == 2
    with pytest.raises(PhotoLimitError):                      # a loaded photo takes a slot too
        photos.load_photo("c", path)


def test_stream_newest_never_waits_for_a_slow_reader():
    """While the reader still holds its first item, the producer runs to its end (it never waits for the
    reader); the reader then gets the newest item, the last, and the ones between are skipped, not queued."""
    from draggan.sessions import stream_newest

    finished = threading.Event()

    def produce():
        for i in range(40):
            yield i
        finished.set()

    seen = []
    for item in stream_newest(produce(), stop=lambda: None):
        seen.append(item)
        if len(seen) == 1:
            assert finished.wait(timeout=60)  # liveness only: the producer ended while the reader held item 1
    assert seen[-1] == 39 and seen == sorted(seen) and len(seen) <= 2


def test_stream_newest_stops_an_abandoned_producer_and_passes_errors():
    import threading as _threading

    from draggan.sessions import stream_newest

    stop = _threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            i += 1
            yield i
        yield "end"

    stream = stream_newest(produce(), stop=stop.set)
    next(stream)
    stream.close()
    assert stop.wait(1)

    def broken():
        yield 1
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        list(stream_newest(broken(), stop=lambda: None))


def test_with_a_compute_thread_every_session_loads_renders_and_drags_there(loads):
    compute = ComputeThread()
    threads = set()

    def runner(method, job):
        from draggan.methods import run_drag
        for frame in run_drag(method, job):
            threads.add(threading.get_ident())
            yield frame

    def load(spec, device):
        threads.add(threading.get_ident())
        return caching_loader(loads)(spec, device)

    m = SessionManager(device="cpu", load=load, compute=compute, runner=runner, device_slots=2)
    results = {}

    def user(key, seed):
        s = m.new_session(key, "tiny", seed=seed)
        results[key] = list(s.run_drag([[8, 8]], [[20, 20]], FAST))[-1]
        s.undo()
        s.image()

    users = [threading.Thread(target=user, args=(k, i)) for i, k in enumerate("ab")]
    for u in users:
        u.start()
    for u in users:
        u.join()
    assert set(results) == {"a", "b"} and all(f.done for f in results.values())
    assert threads == {compute.thread.ident}


def test_device_slots_serve_in_order_and_estimate_the_wait():
    from draggan.scheduling import DeviceSlots

    clock = Clock()
    slots = DeviceSlots(1, clock=clock)
    assert slots.acquire(who="a")
    for who in ("b", "c"):
        slots.join(who)
    assert [slots.position(w) for w in "abc"] == [0, 1, 2]
    assert slots.estimate_wait_s(1) is None          # no job has finished yet: no guess
    assert not slots.take("c")                       # c came after b: it waits even when asked first
    clock.t = 30
    slots.release("a")                               # a held its slot 30 s
    assert not slots.take("c") and slots.take("b") and slots.position("c") == 1
    clock.t = 40                                     # b has used 10 s of the ~30 s a job takes
    assert slots.estimate_wait_s(1) == pytest.approx(20)
    assert slots.estimate_wait_s(2) == pytest.approx(50)
    slots.leave("c")
    assert slots.position("c") == 0


def test_a_waiting_drag_reports_its_place_in_line(loads):
    manager = SessionManager(device="cpu", load=caching_loader(loads), max_sessions=4, ttl_s=100.0, clock=Clock(),
                             device_slots=1)
    a, b, c = (manager.new_session(k, "tiny", seed=i) for i, k in enumerate("abc"))
    running = b.run_drag([[4, 4]], [[28, 28]], FAR)
    next(running)                                    # b holds the only slot
    seen, order = {"a": [], "c": []}, []

    def drag(sess, key):
        for f in sess.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2), report_wait=True):
            if f.reason != "waiting" and key not in order:
                order.append(key)
            seen[key].append(f)
    threads = [threading.Thread(target=drag, args=(a, "a"))]
    threads[0].start()
    wait_until(lambda: any(f.reason == "waiting" for f in seen["a"]))
    threads.append(threading.Thread(target=drag, args=(c, "c")))
    threads[1].start()
    wait_until(lambda: any(f.reason == "waiting" for f in seen["c"]))
    first_a = next(f for f in seen["a"] if f.reason == "waiting")
    assert first_a.queue == (1, None) and first_a.image is None and not first_a.done
    assert next(f for f in seen["c"] if f.reason == "waiting").queue[0] == 2
    b.stop()
    assert list(running)[-1].reason == "stopped"
    for t in threads:
        t.join(30)
    assert seen["a"][-1].reason == "max_steps" and seen["c"][-1].reason == "max_steps"
    assert order == ["a", "c"]                       # first come, first served
    assert all(f.image is not None for f in seen["a"] if f.reason != "waiting")


def test_an_export_waits_in_line_saying_its_place_and_its_stop_ends_the_wait(manager, tmp_path):
    """Exports take turns like drags: while the export slot is held, an export says its place (the drags'
    `waiting` reports), a second from the same session is refused at once, and once the slot is free it renders
    frame by frame and ends with its file; a stop set while it waits ends it, writing nothing."""
    from draggan.sessions import EXPORT_BUSY, LineFullError

    a, b = manager.new_session("a", "tiny", seed=1), manager.new_session("b", "tiny", seed=2)
    for sess in (a, b):
        list(sess.run_drag([[6, 6]], [[20, 18]], DragConfig(max_steps=3)))
    holder = object()
    manager.export_slots.join(holder)
    assert manager.export_slots.take(holder)
    steps = b.export_steps(tmp_path / "b.gif")
    assert next(steps) == ("waiting", (1, None))
    with pytest.raises(LineFullError, match=EXPORT_BUSY):
        b.export_steps(tmp_path / "again.gif")
    stop = threading.Event()
    stopped = a.export_steps(tmp_path / "a.gif", stop=stop)
    assert next(stopped) == ("waiting", (2, None))
    stop.set()
    assert all(kind == "waiting" for kind, _ in stopped)     # it ends without rendering
    assert not a.exports.busy and not (tmp_path / "a.gif").exists()
    manager.export_slots.release(holder)
    rest = list(steps)
    assert [v for k, v in rest if k == "rendering"][-1] == (4, 4)   # steps 0-2 and the final latent
    assert rest[-1] == ("done", tmp_path / "b.gif") and (tmp_path / "b.gif").stat().st_size > 0
    kinds = [kind for kind, _ in a.export_steps(tmp_path / "a.gif")]   # the line and the slot were given back:
    assert kinds[0] == "rendering" and kinds[-1] == "done"            # the next export renders without waiting


def test_astream_newest_awaits_the_newest_item_and_stops_an_abandoned_producer():
    import asyncio

    from draggan.scheduling import astream_newest

    finished, stop = threading.Event(), threading.Event()

    def produce():
        for i in range(40):
            yield i
        finished.set()

    def endless():
        i = 0
        while not stop.is_set():
            i += 1
            yield i

    def broken():
        yield 1
        raise ValueError("bad frame")

    async def read_all(items, hold: threading.Event | None = None) -> list:
        seen = []
        async for item in astream_newest(items, stop=lambda: None):
            seen.append(item)
            if len(seen) == 1 and hold is not None:
                assert await asyncio.to_thread(hold.wait, 60)  # liveness only: the producer ran to its end
        return seen

    async def abandon() -> None:
        stream = astream_newest(endless(), stop=stop.set)
        await stream.__anext__()
        await stream.aclose()

    seen = asyncio.run(read_all(produce(), hold=finished))
    assert seen[-1] == 39 and seen == sorted(seen) and len(seen) <= 2
    asyncio.run(abandon())
    assert stop.wait(1)
    with pytest.raises(ValueError, match="bad frame"):
        asyncio.run(read_all(broken()))


def test_a_photo_inverts_into_a_non_square_model(perceptual, tmp_path):
    """StyleGAN-Human-shaped generator: the photo is cropped to its shape and padded as it pads, then inverted."""
    G = tiny_generator(32, seed=0, square=False)
    with torch.no_grad():
        picture = image_to_uint8(G.synthesis(G.mapping(seed_to_z(9, G.z_dim)), noise_mode="const"))[:, 8:24]
    path = tmp_path / "person.png"
    Image.fromarray(picture).save(path)              # the generator's own 16x32 picture, without its pad
    manager = SessionManager(device="cpu", load=lambda spec, device: G, clock=Clock(),
                             perceptual_loader=lambda device: perceptual)
    start = manager.new_session("a", "tiny", seed=1).image()
    sess, notes = manager.invert_photo("a", "tiny", path, get_preset("fast", w_steps=30, tune_steps=20))
    image = sess.image()
    assert image.shape == (32, 32, 3) and (image[:, :8] == 255).all() and (image[:, 24:] == 255).all()
    error = lambda im: np.abs(im[:, 8:24].astype(int) - picture.astype(int)).mean()
    assert error(image) < 0.5 * error(start)
