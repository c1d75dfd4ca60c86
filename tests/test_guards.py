"""Behaviours a planted bug once slipped past: each test here fails when its rule breaks.

The arrival rule and its distance floor, the optimizer's last step undone on arrival, the bounds of a
drag (steps, points, seeds), auto-refine's handover from the prediction to the optimizer, and the
landmark protocol's arithmetic (mean L2 distance, success over every pair).
"""
import math

import numpy as np
import pytest
import torch

from draggan import DragConfig, DragInputError, DragSession
from draggan import engine, methods
from draggan.config import MAX_POINTS, SETTINGS, DragJob, parse_points, validate_points
from draggan.experiments import landmarks
from draggan.experiments.pairs import Pair
from draggan.experiments.workbench import Bench, EditResult
from draggan.sessions import SEED_MAX, check_seed
from stylegan2.catalog import DRAG_DEFAULT_KEYS
from stylegan2.testing import tiny_generator

FAST = dict(lr=0.05, r1=24, r2=64, feature_block=4)


@pytest.fixture(scope="module")
def G64():
    return tiny_generator(64, 32)


# -- arrival -------------------------------------------------------------------

@pytest.mark.parametrize("resolution,floor", [(64, 2.0), (256, 2.0), (512, 2.0), (1024, 4.0)])
def test_a_handle_has_arrived_within_two_pixels_in_512_px_units_and_never_less_than_two(resolution, floor):
    assert engine.stop_distance(resolution) == floor


def test_a_handle_between_one_and_two_pixels_away_has_arrived_and_the_latent_stays(G64):
    """1.5 px: the motion term is not zero (> 1 px) so Adam would move the latent, but the handle has arrived
    (<= 2 px): the step taken before the arrival is read back is undone."""
    s = DragSession.from_seed(G64, 2)
    before = s.latent.clone()
    frames = list(s.drag([[30, 30]], [[31.5, 30]], DragConfig(max_steps=10, **FAST)))
    assert frames[-1].reason == "reached" and frames[-1].step == 0
    assert torch.equal(s.latent, before)


def test_a_handle_just_beyond_the_floor_has_not_arrived(G64):
    s = DragSession.from_seed(G64, 2)
    frames = list(s.drag([[30, 30]], [[32.5, 30]], DragConfig(max_steps=1, **FAST)))
    assert frames[0].distances == [2.5]
    assert frames[-1].reason == "max_steps" and frames[-1].step == 1


# -- bounds ----------------------------------------------------------------------

def test_max_steps_is_bounded_at_ten_thousand():
    DragConfig(max_steps=10_000).validate()
    with pytest.raises(DragInputError, match="max_steps must be between 1 and 10000"):
        DragConfig(max_steps=10_001).validate()


def test_at_most_max_points_pairs():
    pts = [[1.0, 1.0]] * MAX_POINTS
    assert len(validate_points(pts, pts, 64)[0]) == MAX_POINTS
    with pytest.raises(DragInputError, match=f"At most {MAX_POINTS}"):
        validate_points(pts + [[1.0, 1.0]], pts + [[1.0, 1.0]], 64)
    with pytest.raises(DragInputError, match=f"at most {MAX_POINTS} points"):
        parse_points(";".join(["1,1"] * (MAX_POINTS + 1)), "handles")


@pytest.mark.parametrize("text", ["1,1;" * 5000, "[" + "1" * 20_000 + "]", "[[1, 1]" + ", [1, 1]" * 3000 + "]"])
def test_point_text_over_its_length_bound_is_refused_before_it_is_parsed(text):
    from draggan.config import MAX_POINTS_TEXT
    assert len(text) > MAX_POINTS_TEXT
    with pytest.raises(DragInputError, match=f"handles: at most {MAX_POINTS} points \\({MAX_POINTS_TEXT} characters\\)"):
        parse_points(text, "handles")


@pytest.mark.parametrize("seed", [0, 7, SEED_MAX, float(SEED_MAX)])
def test_seeds_from_zero_to_two_to_the_32_minus_one_are_taken(seed):
    assert check_seed(seed) == int(seed)


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 2**53, 1.5, float("nan"), float("inf"), "x", None])
def test_other_seeds_are_refused_in_one_line(seed):
    with pytest.raises(DragInputError, match="Seed must be a whole number from 0 to 4294967295"):
        check_seed(seed)


def test_every_setting_a_catalog_entry_may_set_has_a_reset_and_bounds():
    assert set(DRAG_DEFAULT_KEYS) <= set(DragConfig.MODEL_KEYS)
    for name in DRAG_DEFAULT_KEYS:
        s = SETTINGS[name]
        assert s.minimum is not None and s.maximum is not None and s.minimum < s.maximum


def test_a_setting_checks_its_bounds_and_kind():
    assert SETTINGS["r1"].check(128) == 128.0
    assert SETTINGS["max_steps"].check(3.0) == 3 and isinstance(SETTINGS["max_steps"].check(3.0), int)
    for name, bad in [("r1", 128.5), ("r1", 0.5), ("max_steps", 2.5), ("max_steps", True), ("tracking", "l3"),
                      ("frame_share", 1.0), ("lr", "nan"), ("nearest", "yes")]:
        with pytest.raises(DragInputError, match=SETTINGS[name].field):
            SETTINGS[name].check(bad)


# -- auto-refine's handover --------------------------------------------------------

def test_auto_refine_hands_the_prediction_to_the_optimizer_with_the_start_features(G64, monkeypatch):
    """The optimizer continues from the last predicted latent, tracking the handles by their features on the
    *start* image (not on the predicted one), and its steps count after the predicted ones."""
    import draggan.auto

    w_start = DragSession.from_seed(G64, 3).latent
    predicted = [w_start + 0.05 * k for k in (1, 2, 3)]
    monkeypatch.setattr(draggan.auto, "rollout", lambda *a, **k: predicted)
    seen = {}
    real = engine.optimize_latent

    def spy(job, latent, handles_xy, refs=None, start_xy=None):
        seen.update(latent=latent, refs=refs, start_xy=start_xy)
        return real(job, latent, handles_xy, refs=refs, start_xy=start_xy)
    monkeypatch.setattr(engine, "optimize_latent", spy)
    handles, targets = [[20.0, 30.0]], [[40.0, 30.0]]
    job = DragJob(G64, w_start, handles, targets, DragConfig(max_steps=2, **FAST), auto=object())
    frames = list(methods.run_drag("auto-refine", job))
    assert torch.equal(seen["latent"], predicted[-1])
    start_refs = engine.reference_features(G64, w_start, handles, FAST["feature_block"], "const")
    assert torch.allclose(seen["refs"], start_refs)
    assert not torch.allclose(seen["refs"], engine.reference_features(G64, predicted[-1], handles, 4, "const"))
    assert seen["start_xy"] == handles
    assert frames[-1].done and frames[-1].step == len(predicted) + 2  # 3 predicted, then max_steps=2


@pytest.mark.parametrize("method,auto_steps,asked", [("auto", 2, 2), ("auto", 0, None), ("auto-n1", 5, 1),
                                                     ("auto-refine", 3, 3)])
def test_the_auto_steps_setting_reaches_the_rollout(G64, monkeypatch, method, auto_steps, asked):
    import draggan.auto
    w = DragSession.from_seed(G64, 3).latent
    seen = []
    monkeypatch.setattr(draggan.auto, "rollout", lambda *a, n_steps=None, **k: seen.append(n_steps) or [w])
    job = DragJob(G64, w, [[20.0, 30.0]], [[40.0, 30.0]], DragConfig(max_steps=1, auto_steps=auto_steps, **FAST),
                  auto=object())
    list(methods.run_drag(method, job))
    assert seen == [asked]


def test_an_auto_drag_stopped_between_predicted_steps_says_stopped(G64, monkeypatch):
    import draggan.auto
    w = DragSession.from_seed(G64, 3).latent
    monkeypatch.setattr(draggan.auto, "rollout", lambda *a, **k: [w + 0.01 * i for i in (1, 2, 3)])
    job = DragJob(G64, w, [[20.0, 30.0]], [[40.0, 30.0]], DragConfig(max_steps=1, **FAST), auto=object(),
                  on_step=lambda step, ws, points: step == 1 and job.stop.set())
    frames = list(methods.run_drag("auto", job))
    assert frames[-1].done and frames[-1].reason == "stopped" and frames[-1].step == 1


# -- the landmark protocol's arithmetic ------------------------------------------------

class _FixedDetector:
    def __init__(self, found):
        self.found = np.asarray(found, dtype=np.float64)

    def detect(self, image, points):
        return self.found


def _record(G64, monkeypatch, found):
    pair = Pair(0, 1, 2, handles_xy=[[10.0, 10.0], [20.0, 20.0]], targets_xy=[[13.0, 14.0], [20.0, 20.0]])
    image = np.zeros((64, 64, 3), np.uint8)
    monkeypatch.setattr(landmarks, "edit", lambda *a, **k: EditResult(image, torch.zeros(1), 3, 0.5, "reached"))
    job = landmarks.EditJob("draggan", "draggan", DragConfig(), pair, points=2, psi=0.7, keep_image=False)
    return landmarks.landmark_record(Bench(G64, detector=_FixedDetector(found)), job)


def test_mean_distance_is_the_mean_of_euclidean_distances(G64, monkeypatch):
    # the first landmark lands (3, 4) px from its goal: L2 5 (L1 would say 7); the second on its goal.
    rec = _record(G64, monkeypatch, [[16.0, 18.0], [20.0, 20.0]])
    assert rec["md_after"] == pytest.approx(2.5)
    assert rec["md_before"] == pytest.approx(2.5)  # the handles were 5 px and 0 px from the targets
    assert math.isnan(_record(G64, monkeypatch, [[np.nan, np.nan], [20.0, 20.0]])["md_after"])


def test_success_rate_counts_every_pair_even_those_whose_landmarks_were_lost():
    rows = [dict(md_before=9.0, md_after=a, steps=1, seconds=0.1, outside_change=0.0) for a in (1.0, 3.0, np.nan, 2.0)]
    summary = landmarks.summarize_edits(rows, success_px=2.0)
    assert summary["success_rate"] == pytest.approx(2 / 4)  # 1.0 and 2.0 succeed; the lost one counts as a failure
    assert summary["found_after"] == pytest.approx(3 / 4)
    assert summary["md_after"] == pytest.approx(2.0)  # the mean over the pairs found


# -- the parity data in CI ----------------------------------------------------------------

def test_missing_reference_data_fails_in_ci_and_skips_elsewhere(tmp_path):
    from conftest import REFERENCE, require_reference

    with pytest.raises(pytest.fail.Exception, match=str(tmp_path)):
        require_reference(tmp_path, ci="true")
    with pytest.raises(pytest.skip.Exception):
        require_reference(tmp_path, ci="")
    if (REFERENCE / "sg2_res128.safetensors").exists():
        assert require_reference(REFERENCE, ci="true") == REFERENCE


def test_undo_history_is_bounded_and_keeps_the_newest(G64):
    from draggan.editor import MAX_HISTORY

    s = DragSession.from_seed(G64, 2)
    marks = []
    for i in range(MAX_HISTORY + 20):
        s.latent = s.latent + 1.0      # a distinct latent before each reset
        marks.append(s.latent.clone())
        s.reset()
    assert len(s.history) == MAX_HISTORY
    assert s.undo() and torch.equal(s.latent, marks[-1])   # the newest is there to undo
    assert torch.equal(s.history[0].latent, marks[-MAX_HISTORY])


# -- a drag's budget: time and memory --------------------------------------------------------

class _Ticking:
    """A clock that advances one second each time it is read."""
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_a_time_limit_stops_the_drag_and_says_so(G64, monkeypatch):
    monkeypatch.setattr(engine.time, "perf_counter", _Ticking())
    s = DragSession.from_seed(G64, 2)
    frames = list(s.drag([[10, 10]], [[60, 60]], DragConfig(max_steps=1000, time_limit_s=5, **FAST)))
    assert frames[-1].reason == "time_limit" and 0 < frames[-1].step < 10
    monkeypatch.setattr(engine.time, "perf_counter", _Ticking())
    no_limit = list(s.drag([[10, 10]], [[60, 60]], DragConfig(max_steps=12, **FAST)))
    assert no_limit[-1].reason in ("max_steps", "reached") and no_limit[-1].step > frames[-1].step


def test_the_memory_of_tracking_grows_with_points_and_window():
    with torch.device("meta"):
        from stylegan2 import Generator, GeneratorConfig
        G = Generator(GeneratorConfig(img_resolution=512))
    one = engine.drag_memory_bytes(G, DragConfig(), 1)
    assert engine.drag_memory_bytes(G, DragConfig(), 100) == 100 * one
    assert engine.drag_memory_bytes(G, DragConfig(r2=256, feature_block=9), 100) > 9 * 2**30  # measured: > 9 GB


def test_a_drag_over_the_memory_budget_is_refused_before_anything_changes(G64):
    s = DragSession.from_seed(G64, 2)
    cfg = DragConfig(max_steps=2, **FAST)
    s.memory_budget = engine.drag_memory_bytes(G64, cfg, 2) - 1   # one pair fits, two do not
    list(s.drag([[10, 10]], [[20, 20]], cfg))
    history = len(s.history)
    with pytest.raises(DragInputError, match="would need about .* for point tracking .*2 points"):
        s.drag([[10, 10], [30, 30]], [[20, 20], [40, 40]], cfg)
    assert len(s.history) == history


def test_a_server_bounds_every_sessions_drag_time_and_memory():
    from draggan.sessions import SessionManager

    G = tiny_generator(32, seed=0)
    manager = SessionManager(device="cpu", load=lambda spec, device: G, max_drag_bytes=12345, drag_time_limit_s=80)
    a = manager.new_session("a", "tiny", seed=1)
    assert a.editor.memory_budget == 12345 and a.time_limit_s == 80
    with pytest.raises(DragInputError, match="the bound here is 0.0 GB"):
        a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2))
    a.editor.memory_budget = 1 << 30
    seen = []
    monkey = pytest.MonkeyPatch()
    real = engine.optimize_latent
    monkey.setattr(engine, "optimize_latent", lambda job, *a, **k: (seen.append(job.config.time_limit_s),
                                                                     real(job, *a, **k))[1])
    try:
        list(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2, time_limit_s=500)))  # asks for more
        list(a.run_drag([[4, 4]], [[28, 28]], DragConfig(max_steps=2, time_limit_s=10)))   # asks for less
    finally:
        monkey.undo()
    assert seen == [80, 10]


def test_auto_says_when_its_prediction_stops_short(G64, monkeypatch):
    import draggan.auto

    w_start = DragSession.from_seed(G64, 3).latent
    monkeypatch.setattr(draggan.auto, "rollout", lambda *a, **k: [w_start.clone(), w_start.clone()])  # no motion
    far = DragJob(G64, w_start, [[20.0, 30.0]], [[40.0, 30.0]], DragConfig(**FAST), auto=object())
    assert list(methods.run_drag("auto", far))[-1].reason == "short"
    near = DragJob(G64, w_start, [[20.0, 30.0]], [[21.5, 30.0]], DragConfig(**FAST), auto=object())
    assert list(methods.run_drag("auto", near))[-1].reason == "predicted"   # within the arrival distance


def test_points_nested_too_deep_get_one_line():
    with pytest.raises(DragInputError, match="must be points like"):
        parse_points("[" * 5000 + "]" * 5000, "handles")


# -- settings: radii, a model's defaults, coercion, psi (planted bugs slipped past these) -------------------

def test_a_radius_scales_with_resolution_and_is_at_least_one_pixel():
    cfg = DragConfig()
    assert [cfg.radius_px(3, res) for res in (64, 256, 512, 1024)] == [1, 2, 3, 6]
    assert cfg.radius_px(1, 64) == 1  # 0.125 px rounds to 0: at least one pixel


def test_a_catalog_models_drag_defaults_apply_and_overrides_win():
    from stylegan2.catalog import drag_defaults
    defaults = drag_defaults("toyfaces-64")
    assert defaults, "the toy model's catalog entry has drag_defaults"
    cfg = DragConfig.for_model("toyfaces-64")
    assert all(getattr(cfg, k) == pytest.approx(v) for k, v in defaults.items())
    assert DragConfig.for_model("toyfaces-64", lr=0.03, r1=None).lr == 0.03
    assert DragConfig.for_model("toyfaces-64", r1=None).r1 == pytest.approx(defaults["r1"])


def test_validate_coerces_whole_numbers_of_int_settings():
    cfg = DragConfig(max_steps=np.int64(5), feature_block=4.0, lr=np.float32(0.01))
    cfg.validate()
    assert type(cfg.max_steps) is int and type(cfg.feature_block) is int and type(cfg.lr) is float


@pytest.mark.parametrize("psi,ok", [(0, True), (0.7, True), (1, True), (1.01, False), (-0.01, False),
                                    (float("nan"), False), ("x", False), (None, False)])
def test_truncation_psi_is_between_zero_and_one(psi, ok):
    from draggan.config import check_psi
    if ok:
        assert check_psi(psi) == psi
    else:
        with pytest.raises(DragInputError, match="Truncation ψ must be a number from 0 to 1"):
            check_psi(psi)
