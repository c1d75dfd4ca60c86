"""The app over HTTP, driven by gradio_client on a tiny generator saved to a temporary file."""
import asyncio
import base64
import io
import json
import os
import socket
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
from draggan.config import DragConfig, DragInputError, parse_points  # noqa: E402
from ui import controls, launch, views  # noqa: E402
from ui.sections import drag as drag_section, history, points as points_section  # noqa: E402
from ui.wiring import bind, keep_on_error  # noqa: E402
from gates import gate_session  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402

RES = 32
MOVE = dict(lr=0.08, r1=48, r2=96)  # big steps and radii, so the tiny random model visibly moves


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = save_generator(tiny_generator(RES, seed=0), tmp_path_factory.mktemp("model") / "tiny.safetensors")
    built = draggan_app.build_demo(str(model), "cpu", public=False)
    port = free_port()
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built, model=str(model))
    built.demo.close()


def client(server):
    return gradio_client.Client(server.url, verbose=False)


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def wait_frames(job, n: int, timeout: float = 60) -> list:
    end = time.monotonic() + timeout
    while len(job.outputs()) < n and not job.done():
        assert time.monotonic() < end, "no frames arrived"
        time.sleep(0.02)
    return job.outputs()


def all_outputs(job, timeout: float = 120) -> list:
    job.result(timeout=timeout)
    return job.outputs()


def run_handler(outputs, first: bool = False):
    """A streaming handler's outputs (an async generator, as Gradio runs it on its event loop): all, or the first."""
    async def read():
        if first:
            return await anext(outputs)
        return [out async for out in outputs]
    return asyncio.run(read())


def test_generate_then_drag_streams_frames_and_moves_the_handle(server):
    c = client(server)
    view, status, hint = c.predict(seed=3, api_name="/generate")
    assert "tiny.safetensors" in status and "cpu" in status and "seed 3" in status and "handle" in hint
    assert load(view).shape == (256, 256, 3)  # 32 px shown 8x larger (the browser scales it further)
    plain = load(c.predict(api_name="/save_image"))
    assert plain.shape == (RES, RES, 3)

    job = c.submit(handles="[[6, 6]]", targets="[[24, 22]]", max_steps=40, frame_rate=0, api_name="/drag", **MOVE)
    outputs = all_outputs(job)
    frames = [o[2] for o in outputs]
    assert len(frames) >= 3 and frames[-1]["done"] and not any(f["done"] for f in frames[:-1])
    steps = [f["step"] for f in frames]  # a slow reader gets the newest frame: steps may be skipped, never repeated
    assert steps == sorted(set(steps))
    assert frames[-1]["reason"] in ("reached", "max_steps") and frames[-1]["targets"] == [[24, 22]]
    start = np.hypot(24 - 6, 22 - 6)
    assert frames[-1]["mean_distance"] < 0.6 * start
    assert frames[-1]["handles"] != [[6, 6]]
    assert "after" in outputs[-1][1] and "mean distance" in outputs[-1][1]

    dragged = load(c.predict(api_name="/save_image"))
    assert np.abs(dragged.astype(int) - plain).mean() > 1
    _, text = c.predict(api_name="/undo")
    assert text == "Undone." and np.array_equal(load(c.predict(api_name="/save_image")), plain)
    c.predict(api_name="/reset")
    assert np.array_equal(load(c.predict(api_name="/save_image")), plain)

    video = c.predict(video_format="gif", overlay=True, api_name="/export_video")
    with Image.open(video) as gif:  # repeated frames dropped, at most 100, shown about 384 px wide
        assert 2 <= gif.n_frames <= min(steps[-1] + 1, 100) and gif.size == (384, 384)
    assert c.predict(video_format="mp4", overlay=False, api_name="/export_video").endswith(".mp4")


def test_a_drags_frames_come_inline_and_its_last_view_is_a_file(server):
    """The frames before the last travel inside the event stream as JPEG data URLs (no file written or fetched
    per frame); each decodes to the view, drawn where that frame's handle was; the last view is a file."""
    c = client(server)
    c.predict(seed=4, api_name="/generate")
    job = c.submit(handles="[[6, 6]]", targets="[[24, 22]]", max_steps=30, frame_rate=0, api_name="/drag", **MOVE)
    *middle, last = all_outputs(job)
    assert len(middle) >= 2
    views = []
    for view, _, frame in middle:
        kind, _, data = view["url"].partition(",")
        assert kind == "data:image/jpeg;base64" and "path" not in view
        views.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data, validate=True))).convert("RGB")))
        assert views[-1].shape == (256, 256, 3)
        x, y = (int(v) * 8 + 4 for v in frame["handles"][0])  # the red handle disc, 8 view pixels per image pixel
        r, g, b = views[-1][y, x].astype(int)
        assert r > 150 and g < 100 and b < 100
    assert np.abs(views[-1].astype(int) - views[0]).mean() > 1  # the drag moved in between
    assert load(last[0]).shape == (256, 256, 3) and last[2]["done"]


def test_gradio_queue_polls_at_our_interval(server):
    """Gradio's queue loop looks for events every 1 ms by default, costing a drag its steps on a small
    machine; the app slows it to QUEUE_POLL_S. Fails if a Gradio upgrade renames what we set."""
    assert server.built.demo._queue.sleep_when_free == launch.QUEUE_POLL_S


def test_stop_ends_a_long_drag_within_a_step(server):
    """The drag is held at a known step (a step hook, not the clock) while Stop is pressed: it ends there or
    one step later, stopped, with the frames before it all shown."""
    c = client(server)
    c.predict(api_name="/generate")
    gate = gate_session(server.built.ctx.sessions, c.session_hash, at=3)
    job = c.submit(handles="[[2, 2]]", targets="[[29, 29]]", lr=0.0005, r1=48, r2=96, max_steps=2000, frame_rate=0,
                   api_name="/drag")
    assert gate.paused.wait(60), "the drag never reached step 3"
    c.predict(api_name="/stop")
    gate.resume.set()
    last = job.result(timeout=60)[2]
    assert last["done"] and last["reason"] == "stopped"
    assert gate.paused_step <= last["step"] <= gate.paused_step + 1


def test_two_clients_do_not_disturb_each_other(server):
    a, b = client(server), client(server)
    a.predict(seed=1, api_name="/generate")
    b.predict(seed=2, api_name="/generate")
    b_before = load(b.predict(api_name="/save_image"))

    job_a = a.submit(handles="[[6, 6]]", targets="[[24, 22]]", max_steps=15, frame_rate=0, api_name="/drag", **MOVE)
    job_b = b.submit(handles="[[25, 5]]", targets="[[5, 25]]", max_steps=15, frame_rate=0, api_name="/drag", **MOVE)
    wait_frames(job_a, 2)
    b.predict(api_name="/stop")  # B's Stop reaches only B's own drag (queued behind A's, or running)
    frames_a = [o[2] for o in all_outputs(job_a)]
    frames_b = [o[2] for o in all_outputs(job_b)]
    assert frames_a[-1]["reason"] != "stopped" and frames_a[-1]["step"] >= 10
    assert all(f["targets"] == [[24, 22]] for f in frames_a)
    assert all(f["targets"] == [[5, 25]] for f in frames_b)

    a_after = load(a.predict(api_name="/save_image"))
    b.predict(api_name="/undo")
    assert np.array_equal(load(b.predict(api_name="/save_image")), b_before)  # A's drag never touched B
    assert not np.array_equal(a_after, b_before)


def test_bad_input_gets_a_message_that_says_what_to_do(server):
    c = client(server)
    with pytest.raises(gradio_client.exceptions.AppError, match="press Generate first"):
        c.predict(handles="[[5, 5]]", targets="[[9, 9]]", api_name="/drag")
    with pytest.raises(gradio_client.exceptions.AppError, match="model file not found"):
        c.predict(model="/nowhere/missing.safetensors", api_name="/generate")
    c.predict(api_name="/generate")  # still usable
    cases = {
        "Handle 1 has no target": ("[[5, 5]]", ""),
        "Click a handle point": ("", "[[5, 5]]"),
        "outside the 32x32 image": ("[[50, 5]]", "[[10, 10]]"),
        "handles must be points like": ("[5, 5]", "[[10, 10]]"),
    }
    for message, (handles, targets) in cases.items():
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            c.predict(handles=handles, targets=targets, api_name="/drag")
    with pytest.raises(gradio_client.exceptions.AppError, match="No drag to export"):
        c.predict(api_name="/export_video")



def test_out_of_range_settings_are_refused_naming_the_field(server):
    """Gradio's own slider check says "Value 5.0 is greater than maximum value 0.1"; ours names the field."""
    c = client(server)
    c.predict(api_name="/generate")
    cases = {"Step size must be between 0.0005 and 0.1, got 5": dict(lr=5.0),
             "R1 must be between 1 and 128, got 500": dict(r1=500),
             "λ must be between 0 and 100, got -1": dict(lambda_mask=-1),
             "Max steps must be a whole number, got 2.5": dict(max_steps=2.5),
             "Frames per second shown must be between 0 and 60, got 61": dict(frame_rate=61)}
    for message, values in cases.items():
        with pytest.raises(gradio_client.exceptions.AppError) as e:
            c.predict(handles="[[5, 5]]", targets="[[9, 9]]", api_name="/drag", **values)
        assert str(e.value).strip() == message, str(e.value)
    with pytest.raises(gradio_client.exceptions.AppError, match="^Truncation ψ must be a number from 0 to 1, got 5"):
        c.predict(psi=5, api_name="/generate")
    frames = [o[2] for o in all_outputs(c.submit(handles="[[5, 5]]", targets="[[9, 9]]", lr=0.1, r1=128,
                                                 max_steps=1, api_name="/drag"))]
    assert frames[-1]["done"]  # the bounds themselves are allowed

    # The UI's Drag (the browser clamps its sliders, but whatever arrives is checked the same way): the
    # message goes beside the image, which stays as it was (every other output skipped).
    ui_drag = keep_on_error(3, 1)(bind(drag_section.drag, server.built.ctx))  # as the Drag button wires it
    request = types.SimpleNamespace(session_hash=c.session_hash, client=None)
    values = dict(controls.control_defaults(server.model), lr=5.0)
    with pytest.warns(UserWarning, match="Step size must be"):  # gr.Warning outside a request: the toast's text
        out = run_handler(ui_drag("[[5, 5]]", "[[9, 9]]", *[values[n] for n in controls.drag_parameters()], request))
    assert len(out) == 1 and out[0][1] == "⚠️ Step size must be between 0.0005 and 0.1, got 5"
    assert all(isinstance(o, dict) and o.get("__type__") == "update" and len(o) == 1 for o in out[0][::2])


def test_a_model_that_cannot_load_leaves_the_app_usable(server):
    ctx = server.built.ctx
    request = types.SimpleNamespace(session_hash="offline-tab", client=None)
    view, status, _ = ctx.on_load("nobody/nothing:missing.pkl", 0, 0.7, "w+", request)
    assert view is None and "not in the Hugging Face cache" in status and "pick another model" in status
    view, status, _ = ctx.on_load(server.model, 0, 0.7, "w+", request)
    assert view.shape == (256, 256, 3) and "tiny.safetensors" in status


def test_clicks_on_the_view_become_image_pixels_and_masks_round_trip():
    assert views.view_scale(32) == 8 and views.view_scale(512) == 1 and views.view_scale(1024) == 1
    assert views.view_to_image_xy([0, 255], 32) == [0.0, 31.0]
    assert views.view_to_image_xy([8 * 5 + 7, 8 * 7], 32) == [5.0, 7.0]
    assert views.view_to_image_xy([300, 20], 512) == [300.0, 20.0]
    editable = np.zeros((32, 32), bool)
    editable[4:10, 20:30] = True
    layer = views.mask_layer(editable, 32)
    assert layer.shape == (256, 256, 4)
    assert np.array_equal(views.mask_from_layers([layer], 32), editable)
    assert views.mask_from_layers([np.zeros((256, 256, 4), np.uint8)], 32) is None
    assert parse_points(" ", "handles") == []
    assert json.dumps(parse_points("[[1, 2.5]]", "handles")) == "[[1.0, 2.5]]"
    assert parse_points("1,2.5;3,4", "handles") == [[1.0, 2.5], [3.0, 4.0]]


def test_a_picture_shown_again_is_never_rewritten_under_a_reader(tmp_path):
    """The view and the mask editor's background are the same picture after Generate, so the same content-named
    file is produced twice. cached_png writes it once, whole: a reader reading it all the while only ever gets
    the complete PNG, which decodes to the picture (RGB and RGBA), and no staging file is left behind."""
    rgb = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
    path = views.cached_png(rgb, tmp_path)
    whole = Path(path).read_bytes()
    reads, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            reads.append(Path(path).read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(200):
            assert views.cached_png(rgb.copy(), tmp_path) == path
    finally:
        stop.set()
        thread.join()
    assert reads and all(r == whole for r in reads)
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
    rgba = np.dstack([rgb, np.full((256, 256), 128, np.uint8)])
    path_rgba = views.cached_png(rgba, tmp_path)
    assert path_rgba != path and np.array_equal(np.asarray(Image.open(path_rgba)), rgba)
    assert sorted(os.listdir(Path(path).parent)) == ["image.png"]


def test_an_older_gradio_is_named_at_launch_and_requirements_agree():
    """Below MIN_GRADIO the launch prints what to install; requirements.txt asks for the same minimum."""
    assert launch.gradio_warning("6.31.0") is None and launch.gradio_warning("7.0.1") is None
    line = launch.gradio_warning("6.16.0")
    assert line and "6.16.0" in line and f"pip install -U 'gradio>={launch.MIN_GRADIO},<7'" in line
    assert launch.gradio_warning("6.0.2") and launch.gradio_warning("5.50.0")
    requirements = (Path(draggan_app.__file__).parent / "requirements.txt").read_text()
    assert f"gradio>={launch.MIN_GRADIO},<7" in requirements.splitlines()


def test_nearest_shows_where_it_moved_the_handles(server):
    c = client(server)
    c.predict(api_name="/generate")
    job = c.submit(handles="[[5, 5]]", targets="[[28, 4]]", nearest=True, r3=256, max_steps=2, api_name="/drag",
                   **MOVE)
    outputs = all_outputs(job)
    moved = outputs[0][2]["nearest_moved"]
    assert len(moved) == 1 and moved[0]["from"] == [5, 5] and moved[0]["to"] != [5, 5]
    assert moved[0]["to"] == outputs[0][2]["handles"][0]
    assert "Nearest moved handle 1 (5, 5) → " in outputs[0][1]


def test_a_refused_drag_changes_nothing_it_leaves_no_undo_entry_and_keeps_the_video(server):
    """A drag refused for its method (unknown, or Auto on a model without a predictor) is refused before
    anything changes: one Undo still undoes the drag before it, and the recorded video is still there. Also
    when a script calls the session directly (the runner checks the method before the editor records)."""
    c = client(server)
    c.predict(seed=5, api_name="/generate")
    plain = load(c.predict(api_name="/save_image"))
    all_outputs(c.submit(handles="[[6, 6]]", targets="[[24, 22]]", max_steps=5, frame_rate=0, api_name="/drag",
                         **MOVE))
    dragged = load(c.predict(api_name="/save_image"))
    with Image.open(c.predict(video_format="gif", overlay=False, api_name="/export_video")) as gif:
        frames_before = gif.n_frames
    for method, message in (("auto", "no Auto DragGAN predictor"), ("auto-refine", "no Auto DragGAN predictor"),
                            ("nonsense", "unknown drag method 'nonsense'")):
        with pytest.raises(gradio_client.exceptions.AppError, match=message):
            c.predict(handles="[[6, 6]]", targets="[[24, 22]]", method=method, api_name="/drag")
    sess = server.built.ctx.sessions.get(c.session_hash)
    with pytest.raises(DragInputError, match="no Auto DragGAN predictor"):
        list(sess.run_drag([[6, 6]], [[24, 22]], DragConfig(max_steps=2), "auto"))
    assert np.array_equal(load(c.predict(api_name="/save_image")), dragged)
    with Image.open(c.predict(video_format="gif", overlay=False, api_name="/export_video")) as gif:
        assert gif.n_frames == frames_before >= 2
    _, text = c.predict(api_name="/undo")
    assert text == "Undone." and np.array_equal(load(c.predict(api_name="/save_image")), plain)
    assert c.predict(api_name="/undo")[1] == "Nothing to undo."


def test_malformed_input_gets_one_line_not_a_traceback(server):
    """Points nested too deep for the JSON parser, and click events whose index is not an [x, y] pair (what a
    hand-made request can send), are refused in one line; the session is as it was."""
    c = client(server)
    c.predict(api_name="/generate")
    before = load(c.predict(api_name="/save_image"))
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(gradio_client.exceptions.AppError, match=r"^handles must be points like \[\[12, 30\]"):
        c.predict(handles=deep, targets="[[3, 3]]", api_name="/drag")
    ctx = server.built.ctx
    request = types.SimpleNamespace(session_hash=c.session_hash, client=None)
    for index in (["a", "b"], None, "ab", [float("nan"), 1], {"x": 1}):
        with pytest.raises(DragInputError, match=r"^a click must be an \[x, y\] pair of view pixels"):
            points_section.click(ctx, types.SimpleNamespace(index=index), request)
    assert ctx.session(request).handles_xy == []
    assert np.array_equal(load(c.predict(api_name="/save_image")), before)


def test_a_stop_pressed_before_the_drag_reaches_the_session_stops_it(server):
    """Drag pressed (the page arms the drag at once), Stop pressed while the drag itself is still in Gradio's
    queue: when it arrives it ends before its first step and the image is as it was."""
    c = client(server)
    c.predict(api_name="/generate")
    before = load(c.predict(api_name="/save_image"))
    ctx = server.built.ctx
    request = types.SimpleNamespace(session_hash=c.session_hash, client=None)
    drag_section.arm_drag(ctx, request)
    history.stop(ctx, request)
    *_, (_, text, last) = run_handler(drag_section.drag(ctx, "[[2, 2]]", "[[29, 29]]", max_steps=50, request=request))
    assert last["done"] and last["reason"] == "stopped" and last["step"] == 0 and text.startswith("**Stopped** after 0 steps")
    assert np.array_equal(load(c.predict(api_name="/save_image")), before)
    *_, (_, _, again) = run_handler(drag_section.drag(ctx, "[[2, 2]]", "[[29, 29]]", max_steps=3, frame_rate=0,
                                                      request=request))
    assert again["step"] >= 1                     # the Stop was spent: the next drag runs


def test_a_registered_method_is_offered_by_the_app_and_runs_through_drag(server):
    """Where things go: a drag method registered once (draggan.methods.register_method) is in the app's Method
    choice for every model it fits, and /drag runs it by name."""
    from draggan.methods import METHODS, MethodSpec, register_method, unregister_method
    from ui.build import follow_model

    calls = []

    def twice_as_careful(job):
        calls.append(job.config.max_steps)
        yield from METHODS["draggan"].run(job)

    register_method(MethodSpec("careful", "Careful (test)", twice_as_careful, in_app=True))
    try:
        c = client(server)
        c.predict(api_name="/generate")
        request = types.SimpleNamespace(session_hash=c.session_hash, client=None)
        method_update = follow_model(server.built.ctx, server.model, request)[-2]
        assert ("Careful (test)", "careful") in [tuple(choice) for choice in method_update.choices]
        last = all_outputs(c.submit(handles="[[6, 6]]", targets="[[24, 22]]", max_steps=4, method="careful",
                                    api_name="/drag", **MOVE))[-1][2]
        assert last["done"] and calls == [4]
    finally:
        unregister_method("careful")


def test_a_setting_given_a_section_joins_the_page_the_endpoint_and_its_checks(monkeypatch, tmp_path):
    """Where things go: one Setting in draggan/config.py's SETTINGS drives the app. Give a script-only setting
    (Nearest rate) a section: the page shows it, /drag takes it after the existing parameters (positions never
    shift), and a value out of its bounds is refused naming it."""
    import dataclasses

    from draggan import config
    from ui.build import build_demo

    monkeypatch.setitem(config.SETTINGS, "nearest_rate",
                        dataclasses.replace(config.SETTINGS["nearest_rate"], section="advanced"))
    built = build_demo(str(save_generator(tiny_generator(RES, seed=0), tmp_path / "tiny.safetensors")), "cpu")
    try:
        params = [p["parameter_name"] for p in built.demo.get_api_info()["named_endpoints"]["/drag"]["parameters"]]
        assert params[:17] == ["handles", "targets", *controls.API_ORDER] and params[17:] == ["nearest_rate"]
        labels = [c["props"].get("label") for c in built.demo.config["components"]]
        assert "Nearest rate" in labels
        request = types.SimpleNamespace(session_hash="s", client=None)
        built.ctx.sessions.new_session("s", built.ctx.default_model, 0)
        with pytest.raises(DragInputError, match="^Nearest rate must be between 0 and 1, got 5$"):
            run_handler(drag_section.drag(built.ctx, "[[5, 5]]", "[[9, 9]]", nearest_rate=5, request=request),
                        first=True)
    finally:
        built.ctx.sessions.close("s")
        monkeypatch.undo()
        drag_section.drag.__signature__ = drag_section.drag_signature(with_ctx=True)
