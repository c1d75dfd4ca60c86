"""The experiment protocols: detectors, pairs, landmarks, reconstruction, decay, Nearest, the command and its alias."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from draggan.__main__ import main
from draggan.experiments.decay import DecaySettings, plot_decay, run_decay
from draggan.experiments.detectors import ExperimentSetupError, ToyFacesDetector, get_detector
from draggan.experiments.landmarks import LandmarkSettings, run_landmarks
from draggan.experiments.nearest import BASELINE, run_nearest
from draggan.experiments.pairs import landmark_pairs
from draggan.experiments.reconstruction import (ReconstructionSettings, flow_vectors, mse_x100, perturb_latent,
                                                run_reconstruction)
from draggan.experiments.report import ExperimentResult
from draggan.experiments.workbench import Bench, BenchSpec, check_methods, load_bench
from draggan.toyfaces import render_face
from stylegan2.testing import tiny_generator

MODEL = Path(__file__).resolve().parents[1] / "models" / "toyfaces-64.safetensors"
needs_toyfaces = pytest.mark.skipif(not MODEL.is_file(), reason="models/toyfaces-64.safetensors is not there")


class BrightestPixel:
    """A stand-in detector, exact by construction: the brightest pixel is the one landmark."""
    name = "brightest"
    points_available = frozenset({1})

    def detect(self, image: np.ndarray, points: int) -> np.ndarray:
        row, col = np.unravel_index(np.argmax(image.astype(int).sum(axis=2)), image.shape[:2])
        return np.array([[float(col), float(row)]])


@pytest.fixture(scope="module")
def tiny():
    return Bench(tiny_generator(32), BrightestPixel())


@pytest.fixture(scope="module")
def toy():
    if not MODEL.is_file():
        pytest.skip("models/toyfaces-64.safetensors is not there")
    return load_bench(BenchSpec("toyfaces-64", "cpu", "toy"))


# -- detectors and pairs ---------------------------------------------------------------

def test_toy_detector_finds_rendered_landmarks_and_its_one_point_is_the_nose():
    image, truth = render_face(11, 64)                        # truth [5, 2] (x, y)
    det = get_detector("toy")
    five = det.detect(image, 5)
    assert np.abs(five - truth).max() < 0.5
    assert np.array_equal(det.detect(image, 1), five[[ToyFacesDetector.NOSE]])
    with pytest.raises(ExperimentSetupError, match="points"):
        det.detect(image, 68)


def test_pairs_are_deterministic_and_measured_between_the_two_images(tiny):
    a = landmark_pairs(tiny.G, tiny.detector, 3, 1, seed=5)
    b = landmark_pairs(tiny.G, tiny.detector, 3, 1, seed=5)
    c = landmark_pairs(tiny.G, tiny.detector, 3, 1, seed=6)
    assert [(p.seed_a, p.seed_b, p.handles_xy, p.targets_xy) for p in a] == \
           [(p.seed_a, p.seed_b, p.handles_xy, p.targets_xy) for p in b]
    assert [p.seed_a for p in a] != [p.seed_a for p in c]
    p = a[0]
    assert p.md_before() == pytest.approx(math.dist(p.handles_xy[0], p.targets_xy[0]))


# -- landmarks, Nearest, decay ---------------------------------------------------------

def test_landmark_protocol_records_and_summary_arithmetic(tiny):
    settings = LandmarkSettings(points=1, max_steps=3, success_px=1e9)
    pairs = landmark_pairs(tiny.G, tiny.detector, 2, 1, seed=0)
    result = run_landmarks(tiny, ["draggan"], settings, pairs)
    recs = result.pairs
    assert [r["pair"] for r in recs] == [0, 1] and all(r["steps"] <= 3 for r in recs)
    s = result.methods["draggan"]
    assert s["md_before"] == pytest.approx(np.mean([p.md_before() for p in pairs]))
    assert s["md_after"] == pytest.approx(np.mean([r["md_after"] for r in recs]))
    assert s["success_rate"] == 1.0 and s["found_after"] == 1.0 and s["pairs"] == 2


def test_methods_a_model_cannot_run_are_refused_up_front(tiny):
    with pytest.raises(ExperimentSetupError, match="--predictor"):
        check_methods(["draggan", "auto"], tiny)
    with pytest.raises(ExperimentSetupError, match="unknown method"):
        check_methods(["dragan"], tiny)
    check_methods(["draggan+nearest", "straightforward"], tiny)


@needs_toyfaces
def test_draggan_brings_toy_face_landmarks_closer(toy):
    settings = LandmarkSettings(points=5, max_steps=60)
    pairs = landmark_pairs(toy.G, toy.detector, 2, 5, seed=0)
    s = run_landmarks(toy, ["draggan"], settings, pairs).methods["draggan"]
    assert s["found_after"] == 1.0 and s["md_after"] < 0.6 * s["md_before"]


@needs_toyfaces
def test_a_masked_run_measures_the_picture_shown_and_the_latents_own(toy):
    """With the hold (the default) the picture keeps the outside exactly, so the record also says how much the
    latent's own picture changed there (what the hold hides); without the hold the two are one."""
    pairs = [p for p in landmark_pairs(toy.G, toy.detector, 6, 1, seed=0) if p.md_before() > 4][:2]
    held = run_landmarks(toy, ["draggan"], LandmarkSettings(points=1, max_steps=40, mask_margin=8), pairs)
    plain = run_landmarks(toy, ["draggan"], LandmarkSettings(points=1, max_steps=40, mask_margin=8,
                                                             drag={"hold": False}), pairs)
    for h, p in zip(held.pairs, plain.pairs):
        assert h["outside_change"] == 0.0 and h["latent_outside_change"] > 0.5
        assert p["outside_change"] == p["latent_outside_change"]    # the same drag; its last frame drawn in the
        assert p["outside_change"] == pytest.approx(h["latent_outside_change"], rel=0.01)  # drag's precision
    assert "latent's outside Δ" in held.table()
    unmasked = run_landmarks(toy, ["draggan"], LandmarkSettings(points=1, max_steps=40), pairs)
    assert "latent_outside_change" not in unmasked.methods["draggan"] and "latent's" not in unmasked.table()


@needs_toyfaces
def test_nearest_ablation_has_the_baseline_and_one_row_per_radius(toy):
    settings = LandmarkSettings(points=1, max_steps=10)
    pairs = landmark_pairs(toy.G, toy.detector, 1, 1, seed=2)
    result = run_nearest(toy, settings, pairs, r3_values=[40, 200])
    assert list(result.methods) == [BASELINE, "nearest r3=40", "nearest r3=200"]
    configs = result.settings["drag_configs"]
    assert not configs[BASELINE]["nearest"] and configs["nearest r3=200"]["nearest"]
    assert configs["nearest r3=200"]["r3"] == 200.0
    assert len({r["md_before"] for r in result.pairs}) == 1    # the same pair for every variant


@needs_toyfaces
def test_decay_curves_start_at_one_run_forward_in_time_and_fall(toy, tmp_path):
    settings = DecaySettings(points=5, max_steps=40)
    pairs = landmark_pairs(toy.G, toy.detector, 1, 5, seed=0)
    result = run_decay(toy, ["draggan"], settings, pairs)
    curve = np.array(result.pairs[0]["curve"])                # [frames, 2] (seconds, MD ratio)
    assert tuple(curve[0]) == (0.0, 1.0) and len(curve) > 10
    assert (np.diff(curve[:, 0]) >= 0).all()
    assert curve[-1, 1] < 0.7 and result.methods["draggan"]["md_ratio_final"] == pytest.approx(curve[-1, 1], abs=1e-4)
    pytest.importorskip("matplotlib")
    assert plot_decay(result, tmp_path / "decay.png") is None
    assert (tmp_path / "decay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- reconstruction --------------------------------------------------------------------

def test_flow_sampler_returns_in_image_vectors_that_follow_a_known_shift():
    rng = np.random.default_rng(0)
    texture = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    image_1 = np.kron(texture, np.ones((4, 4, 1), np.uint8))   # [96, 96, 3], blocky: trackable
    image_1 = np.ascontiguousarray(np.roll(image_1, (1, 2), axis=(0, 1)))
    image_2 = np.ascontiguousarray(np.roll(image_1, (2, 3), axis=(0, 1)))   # content moves 3 right, 2 down
    handles, targets = flow_vectors(image_1, image_2, 32, np.random.default_rng(1))
    assert handles.shape == targets.shape == (32, 2)
    assert len({tuple(h) for h in handles}) == 32
    assert (targets >= 0).all() and (targets <= 95).all()
    shift = targets - handles
    assert np.median(np.abs(shift - [3.0, 2.0]).max(axis=1)) < 0.5


def test_perturb_latent_moves_only_the_first_rows():
    w1, w2 = torch.zeros(1, 10, 4), torch.ones(1, 10, 4)
    out = perturb_latent(w1, w2, rows=6, strength=0.25)
    assert torch.equal(out[:, :6], torch.full((1, 6, 4), 0.25)) and torch.equal(out[:, 6:], w1[:, 6:])


def test_reconstruction_on_a_tiny_generator(tiny):
    settings = ReconstructionSettings(max_steps=5, vectors=32, lpips=False, drag={"r1": 48, "r2": 96})
    result = run_reconstruction(tiny, ["draggan"], settings, 2)
    for r in result.pairs:
        assert 1 <= r["vectors"] <= 32 and math.isfinite(r["mse"]) and r["mse_before"] > 0
        assert "_image" not in r
    s = result.methods["draggan"]
    assert s["mse_before"] == pytest.approx(np.mean([r["mse_before"] for r in result.pairs]))
    assert "lpips" not in s


@needs_toyfaces
def test_reconstruction_brings_the_toy_result_closer_to_the_second_image(toy):
    settings = ReconstructionSettings(max_steps=60, lpips=False, seed=0)
    s = run_reconstruction(toy, ["draggan"], settings, 2).methods["draggan"]
    assert s["mse"] < s["mse_before"]


def test_mse_x100_of_black_and_white_is_100():
    assert mse_x100(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)) == pytest.approx(100.0)


# -- results, the command, and the quality alias ---------------------------------------

def test_json_drops_images_and_writes_nan_as_null(tmp_path):
    result = ExperimentResult("landmarks", {"points": 1}, {"m": {"md_after": float("nan"), "pairs": 1}},
                              [{"method": "m", "_image": np.zeros(3), "md_after": np.float32(1.5)}])
    result.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["methods"]["m"]["md_after"] is None and data["pairs"] == [{"method": "m", "md_after": 1.5}]
    assert "n/a" in result.table()


@needs_toyfaces
def test_experiment_command_writes_json_and_csv_with_the_documented_keys(tmp_path, capsys):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    rc = main(["experiment", "landmarks", "--pairs", "2", "--points", "5", "--max-steps", "40",
               "--methods", "draggan,straightforward", "--json", str(out_json), "--csv", str(out_csv)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "MD after" in captured.out and "ETA" in captured.err
    data = json.loads(out_json.read_text())
    assert set(data) >= {"protocol", "settings", "methods", "pairs"} and data["protocol"] == "landmarks"
    for name in ("draggan", "straightforward"):
        s = data["methods"][name]
        assert {"md_before", "md_after", "success_rate", "steps", "seconds_per_edit"} <= set(s)
        assert s["md_after"] < s["md_before"]
    assert len(data["pairs"]) == 4 and data["settings"]["max_steps"] == 40
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["method"] for r in rows] == ["draggan", "straightforward"]
    assert float(rows[0]["md_before"]) == pytest.approx(data["methods"]["draggan"]["md_before"])


@needs_toyfaces
def test_command_refuses_auto_without_a_predictor_in_one_line(capsys, tmp_path):
    from stylegan2.checkpoints import save_generator
    from stylegan2.testing import tiny_generator
    model = save_generator(tiny_generator(32), tmp_path / "tiny.safetensors")  # a model with no predictor
    assert main(["experiment", "landmarks", "--model", str(model), "--methods", "auto", "--pairs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--predictor" in err[0]


@needs_toyfaces
def test_quality_alias_keeps_its_flags_and_writes_json_to_a_path(tmp_path, capsys):
    path = tmp_path / "q.json"
    rc = main(["quality", "--pairs", "1", "--points", "1", "--steps", "20", "--methods", "engine",
               "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    s = data["methods"]["engine"]
    assert s["pairs"] == 1 and s["mean_distance_before"] == s["md_before"] and "landmarks_found_after" in s
    assert data["pairs"][0]["method"] == "engine"


def test_a_registered_protocol_is_a_command_line_experiment(capsys):
    """A new protocol is one register_protocol call: the command offers it, with its own flags, and runs it."""
    import argparse

    from draggan.experiments.protocols import PROTOCOLS, Protocol, register_protocol, unregister_protocol

    seen = {}

    def run(bench, methods, common, args, count, quiet):
        seen.update(model=bench.G.img_resolution, methods=methods, count=count, knob=args.knob,
                    max_steps=common["max_steps"])
        return ExperimentResult("dummy", {}, {"draggan": {"pairs": count}}, [])

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--knob", type=int, default=3)

    register_protocol(Protocol("dummy", "a test protocol", run, default_pairs=7, needs_detector=False,
                               options=options))
    try:
        with pytest.raises(ValueError):
            register_protocol(Protocol("dummy", "again", run))
        assert main(["experiment", "dummy", "--knob", "5", "--steps", "9"]) == 0
        assert seen == {"model": 64, "methods": ["draggan"], "count": 7, "knob": 5, "max_steps": 9}
        try:
            main(["experiment", "--help"])
        except SystemExit:
            pass
        assert "dummy: a test protocol" in capsys.readouterr().out
    finally:
        unregister_protocol("dummy")
    assert "dummy" not in PROTOCOLS


def test_a_benchs_stop_event_stops_the_edit_in_progress(tiny):
    """The app's experiment passes its Stop to the bench: an edit running when Stop is pressed ends within a step."""
    import threading

    from draggan import DragConfig
    from draggan.editor import seed_latent
    from draggan.experiments.workbench import edit

    G = tiny.G
    stop = threading.Event()
    bench = Bench(G, stop=stop)
    w = seed_latent(G, 1, 0.7)
    seen = []

    def on_frame(frame, seconds):
        seen.append(frame.step)
        if frame.step == 2:
            stop.set()
    result = edit(bench, "draggan", w, [[4.0, 4.0]], [[28.0, 28.0]], DragConfig(max_steps=500, lr=0.001),
                  on_frame=on_frame)
    assert result.reason == "stopped" and result.steps == 3


class _EveryOtherImage:
    """Finds a landmark on every other image it is shown: the first image of each pair, never the second."""
    name, points_available = "stub", frozenset({1})

    def __init__(self):
        self.calls = 0

    def detect(self, image, points):
        self.calls += 1
        return np.array([[5.0, 6.0]]) if self.calls % 2 else np.full((1, 2), np.nan)


def test_a_pair_needs_the_landmarks_on_both_images():
    G = tiny_generator(32, 16)
    with pytest.raises(ExperimentSetupError, match="too few generated images"):
        landmark_pairs(G, _EveryOtherImage(), count=1, points=1)
    found = _EveryOtherImage()
    found.detect = lambda image, points: np.array([[5.0, 6.0]])
    assert len(landmark_pairs(G, found, count=2, points=1)) == 2


def test_the_landmark_box_spans_x_along_columns_and_y_along_rows():
    from draggan.experiments.landmarks import landmark_box
    from draggan.experiments.pairs import Pair
    box = landmark_box(Pair(0, 1, 2, [[10.0, 2.0]], [[12.0, 3.0]]), margin=1.0, resolution=32)
    rows, cols = np.nonzero(box)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 4, 9, 13)
