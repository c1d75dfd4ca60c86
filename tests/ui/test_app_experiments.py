"""The Experiment tab's handlers, called directly (no browser, no server) on the toy-faces model: a running
experiment holds its session (never evicted), Stop and a closed tab end it, it leaves no folder and no entry
behind; the single-pair test refuses bad target seeds in one line."""
import tempfile
import threading
import time
import types
from pathlib import Path

import pytest

from draggan.config import DragInputError
from ui.build import build_demo, unload
from ui.sections import experiment, model

TOYFACES = Path(__file__).resolve().parents[2] / "models" / "toyfaces-64.safetensors"
pytestmark = pytest.mark.skipif(not TOYFACES.is_file(), reason="needs the toy-faces model")
LONG = dict(protocol="landmarks", pairs=20, max_steps=200, points=1, feature_block=0, methods=["draggan"])


def request(key: str):
    return types.SimpleNamespace(session_hash=key, client=None, headers={})


@pytest.fixture
def built(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # every session folder lands here
    b = build_demo("toyfaces-64", "cpu", max_sessions=2, max_per_client=2)
    yield b
    for key in ("A", "B", "C"):
        b.experiments.stop(key)
        b.ctx.sessions.close(key)


def generate(ctx, key: str) -> None:
    model.generate_image(ctx, "toyfaces-64", 0, 0.7, "w+", request(key), lambda *a, **k: None)


def in_background(stream) -> tuple[threading.Thread, list]:
    outputs: list = []
    thread = threading.Thread(target=lambda: outputs.extend(stream), daemon=True)
    thread.start()
    return thread, outputs


def wait_for(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s  # liveness only
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.01)


def test_a_running_experiment_keeps_its_session_and_stop_ends_it(built):
    """Room for two sessions: with A's experiment running, a third tab evicts B (idle), never A, although A
    was used least recently. A second experiment in A is refused; Stop ends the first; nothing stays registered."""
    ctx, runs = built.ctx, built.experiments
    generate(ctx, "A")
    sess = ctx.sessions.get("A")
    thread, outputs = in_background(experiment.run(ctx, runs, request=request("A"), **LONG))
    wait_for(lambda: sess.busy, "the experiment to hold its session")
    generate(ctx, "B")
    generate(ctx, "C")
    assert "A" in ctx.sessions and "B" not in ctx.sessions and "C" in ctx.sessions
    with pytest.raises(DragInputError, match="already running"):
        next(experiment.run(ctx, runs, request=request("A"), **LONG))
    assert runs.running("A") and len(runs) == 1
    experiment.stop_experiment(runs, request("A"))
    thread.join(300)
    assert not thread.is_alive() and outputs[-1][0].startswith("Stopped after")
    assert len(runs) == 0 and not sess.busy


def test_closing_the_tab_stops_its_experiment_and_leaves_no_folder(built, tmp_path):
    """The tab closes while its experiment runs: the experiment stops, the session's folder is deleted and never
    made again (its results are not written anywhere), and the experiment is no longer registered."""
    ctx, runs = built.ctx, built.experiments
    generate(ctx, "A")
    sess = ctx.sessions.get("A")
    thread, outputs = in_background(experiment.run(ctx, runs, request=request("A"), **LONG))
    wait_for(lambda: sess.busy and list(tmp_path.glob("draggan-*")), "the experiment to start")
    unload(ctx, runs, request("A"))
    thread.join(300)
    assert not thread.is_alive() and outputs[-1][0].startswith("Stopped after")
    assert "A" not in ctx.sessions and len(runs) == 0
    assert list(tmp_path.glob("draggan-*")) == []


@pytest.mark.parametrize("seed", [-1, 2 ** 32, 1e300, "nan", None, [1]])
def test_the_single_pair_test_refuses_a_bad_target_seed_in_one_line(built, seed):
    generate(built.ctx, "A")
    with pytest.raises(DragInputError, match=r"^Seed must be a whole number from 0 to 4294967295"):
        next(experiment.single_test(built.ctx, seed, 5, "toy", request("A")))


@pytest.mark.parametrize("values, message", [
    (dict(n_points=3), "Landmarks must be one of 1, 5, 68"),
    (dict(detector_name=["toy"]), "Detector must be one of"),
])
def test_the_single_pair_test_refuses_other_bad_input_in_one_line(built, values, message):
    generate(built.ctx, "A")
    args = {**dict(seed=1, n_points=5, detector_name="toy"), **values}
    with pytest.raises(DragInputError, match=message):
        next(experiment.single_test(built.ctx, request=request("A"), **args))


def test_the_api_drag_takes_what_the_readme_lists(tmp_path):
    """Issue 26, item 12: /drag takes method auto and auto-refine on a model with a predictor (Gradio's own
    choice check knew only the first model's methods), and max steps up to 10000 (DragConfig's bound)."""
    import socket

    import gradio_client

    from ui.launch import launch

    b = build_demo("toyfaces-64", "cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(b, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        c = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        c.predict(api_name="/generate")
        for method in ("auto", "auto-refine"):
            last = c.predict(handles="[[20, 30]]", targets="[[26, 30]]", method=method, max_steps=10_000,
                             api_name="/drag")[2]
            arrived = max(last["distances"]) <= 2   # the toy model's arrival distance
            expected = {"auto": "predicted" if arrived else "short", "auto-refine": "reached" if arrived else None}
            assert last["done"] and expected[method] in (None, last["reason"]), last
        with pytest.raises(gradio_client.exceptions.AppError, match="^Max steps must be between 1 and 10000"):
            c.predict(handles="[[20, 30]]", targets="[[26, 30]]", max_steps=10_001, api_name="/drag")
    finally:
        b.demo.close()


def test_a_stopped_run_shows_the_rows_it_finished(built):
    """Stop after some edits: the line says how many, and the table holds those edits' summary (it was empty)."""
    ctx, runs = built.ctx, built.experiments
    generate(ctx, "A")
    thread, outputs = in_background(experiment.run(ctx, runs, request=request("A"), **LONG))
    wait_for(lambda: any(isinstance(o[0], str) and o[0].startswith("Running: 2 of") for o in outputs),
             "two edits to finish")
    experiment.stop_experiment(runs, request("A"))
    thread.join(300)
    line, table = outputs[-1][0], outputs[-1][1]
    assert line.startswith("Stopped after") and "The table shows those" in line
    assert list(table["method"]) == ["draggan"] and table["MD after"].notna().all()
