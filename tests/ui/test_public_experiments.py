"""Experiments on a public server (issue 26 item 4): Stop reaches pair selection, a run has a time budget,
and the landmark tests run only where a detector fits the model."""
import tempfile
import threading
import types
from pathlib import Path

import pytest

from draggan.config import DragInputError
from draggan.experiments import detectors
from ui.build import build_demo
from ui.sections import experiment, model

TOYFACES = Path(__file__).resolve().parents[2] / "models" / "toyfaces-64.safetensors"
pytestmark = pytest.mark.skipif(not TOYFACES.is_file(), reason="needs the toy-faces model")
RUN = dict(protocol="landmarks", pairs=8, max_steps=10, points=1, feature_block=0, methods=["draggan"])


def request(key: str):
    return types.SimpleNamespace(session_hash=key, client=None, headers={})


@pytest.fixture
def built(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    b = build_demo("toyfaces-64", "cpu", public=True, max_sessions=2, max_per_client=2)
    model.generate_image(b.ctx, "toyfaces-64", 0, 0.7, "w+", request("A"), lambda *a, **k: None)
    yield b
    b.experiments.stop("A")
    b.ctx.sessions.close("A")


def test_stop_reaches_pair_selection(built, monkeypatch):
    """The first detection of pair selection waits until the test has pressed Stop: no other detection follows
    (before, pair selection rendered and detected every candidate pair before the first check)."""
    real = detectors.ToyFacesDetector.detect
    first, go, calls = threading.Event(), threading.Event(), []

    def gated(self, image, points):
        calls.append(points)
        if not first.is_set():
            first.set()
            assert go.wait(120)
        return real(self, image, points)
    monkeypatch.setattr(detectors.ToyFacesDetector, "detect", gated)
    outputs = []
    thread = threading.Thread(target=lambda: outputs.extend(
        experiment.run(built.ctx, built.experiments, request=request("A"), **RUN)), daemon=True)
    thread.start()
    assert first.wait(120), "pair selection never started"
    experiment.stop_experiment(built.experiments, request("A"))
    go.set()
    thread.join(120)
    assert not thread.is_alive() and outputs[-1][0] == "Stopped after 0 of 8 edits."
    assert len(calls) <= 2   # the held detection, and at most the one already asked for beside it


def test_a_public_experiment_stops_when_its_time_budget_runs_out(built, monkeypatch):
    monkeypatch.setattr(experiment, "experiment_budget_s", lambda public: 0.0 if public else None)
    outputs = list(experiment.run(built.ctx, built.experiments, request=request("A"), **RUN))
    assert outputs[-1][0] == "Stopped after 0 of 8 edits: an experiment's time on this server ran out."
    assert len(built.experiments) == 0 and not built.ctx.sessions.get("A").busy


def test_landmark_tests_run_only_where_a_detector_fits(built):
    ctx = built.ctx
    with pytest.raises(DragInputError, match="dlib detector does not fit this model"):
        next(experiment.single_test(ctx, 1, 5, "dlib", request("A")))   # toy faces are not real faces
    ctx.sessions.get("A").model = "ffhq-512"                           # as if the session showed real faces
    with pytest.raises(DragInputError, match="toy detector does not fit this model"):
        next(experiment.run(ctx, built.experiments, request=request("A"), **RUN))
    with pytest.raises(DragInputError, match="toy detector does not fit"):
        next(experiment.single_test(ctx, 1, 5, "toy", request("A")))
    ctx.sessions.get("A").model = "lhq-256"                            # landscapes: no detector at all
    with pytest.raises(DragInputError, match="no landmark detector"):
        next(experiment.single_test(ctx, 1, 5, "toy", request("A")))


def test_the_tab_offers_only_the_detectors_that_fit(built):
    radio, test_btn, run_btn, note = experiment.offer(built.ctx, request("A"))   # toy faces
    assert [c[1] for c in radio.choices] == ["toy"] and run_btn.interactive and note == ""
    built.ctx.sessions.get("A").model = "lhq-256"
    radio, test_btn, run_btn, note = experiment.offer(built.ctx, request("A"))
    assert radio.choices == [] and not test_btn.interactive and not run_btn.interactive and note == experiment.NO_FIT
