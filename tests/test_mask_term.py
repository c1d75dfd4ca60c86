"""The mask's terms: what the hold, image and composite terms compute, and that on the toy model the default mask
keeps the outside while the handle still arrives."""
from pathlib import Path

import numpy as np
import pytest
import torch

from draggan import DragConfig, DragSession
from draggan.composite import composite_loss
from draggan.editor import _Snapshot
from draggan import editor as editor_module
from draggan.engine import image_mask_loss, image_mask_weight, stop_distance
from draggan.hold import Hold, Layers, edge_ramp, ramp_width
from draggan.experiments.landmarks import landmark_box
from draggan.experiments.pairs import landmark_pairs
from draggan.experiments.workbench import BenchSpec, load_bench
from stylegan2.testing import tiny_generator

MODEL = Path(__file__).resolve().parents[1] / "models" / "toyfaces-64.safetensors"


def test_image_term_is_a_mean_over_the_fixed_area_whatever_its_size_or_resolution():
    for side in (16, 64):
        img0 = torch.zeros(1, 3, side, side)
        img = img0 + 0.5                                  # the same change everywhere
        for painted in (2, side // 2):
            fixed = torch.ones(1, 1, side, side)
            fixed[..., :painted, :painted] = 0
            assert image_mask_loss(img, img0, fixed, 2.0).item() == pytest.approx(1.0)
    img = torch.zeros(1, 3, 8, 8)
    img[..., 0, 0] = 1.0                                  # a change inside the editable area only
    fixed = torch.ones(1, 1, 8, 8)
    fixed[..., 0, 0] = 0
    assert image_mask_loss(img, torch.zeros_like(img), fixed, 1.0).item() == 0.0


def test_image_term_weight_counts_each_handle_in_feature_units():
    feat0 = torch.full((1, 4, 8, 8), -0.25)
    assert image_mask_weight(10.0, feat0, 1).item() == pytest.approx(2.5)
    assert image_mask_weight(10.0, feat0, 5).item() == pytest.approx(12.5)


def test_features_term_is_still_there_and_differs_from_the_image_term():
    G64 = tiny_generator(64, 32)
    editable = np.zeros((64, 64), bool)
    editable[8:40, 8:40] = True
    latents = {}
    for term in ("features", "image"):
        s = DragSession.from_seed(G64, 2)
        s.set_mask(editable)
        list(s.drag([[20, 20]], [[32, 30]], DragConfig(max_steps=4, mask_term=term, lr=0.05, r1=24, r2=64,
                                                                    feature_block=4, precision="fp32", hold=False)))
        latents[term] = s.latent
    assert not torch.equal(latents["features"], latents["image"])


def test_composite_term_is_a_mean_over_each_area_the_outside_weighted():
    img0, img1 = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    fixed = torch.ones(1, 1, 8, 8)
    fixed[..., :2, :2] = 0                                # 4 editable pixels, 60 fixed
    assert composite_loss(img0, img0, img1, fixed).item() == pytest.approx(1.0)   # the inside is all wrong
    assert composite_loss(img1, img0, img1, fixed).item() == pytest.approx(1.0)   # the outside is all wrong
    assert composite_loss(img1, img0, img1, fixed, 3.0).item() == pytest.approx(3.0)
    half = img0.clone()
    half[..., 4:, :] = 1.0                                # half of the fixed area changed, the inside not
    assert composite_loss(half, img0, img0, fixed).item() == pytest.approx(32 / 60)


def _settled(G, lambda_mask: float | None, seed: int) -> tuple[float, list]:
    """Outside change and the frames of a drag on the tiny model: masked (lambda) or not (None)."""
    editable = np.zeros((64, 64), bool)
    editable[10:34, 10:34] = True
    s = DragSession.from_seed(G, seed)
    start = s.image().astype(np.float64)
    if lambda_mask is not None:
        s.set_mask(editable)
    cfg = DragConfig(max_steps=200, lambda_mask=10.0 if lambda_mask is None else lambda_mask, lr=0.05, r1=24, r2=64,
                     feature_block=4, precision="fp32", mask_term="composite", hold=False)
    frames = list(s.drag([[20, 20]], [[26, 24]], cfg))
    return float(np.abs(s.image() - start)[~editable].mean()), frames


@pytest.mark.parametrize("seed", [4, 6])
def test_composite_settle_keeps_the_outside_while_the_handle_stays_arrived(seed):
    """Seeds whose drag arrives in a few steps (7 and 1) and leaves the settle most of the step budget. (Seed 2, used
    before, drags for 133 of its 200 steps with tracking jumps and ends exactly at the 2-px bound: whether its settle
    finds a state that stays arrived turned on float rounding: 0.41 of the free change, or none, for the same code
    rendering its composite's pictures through another, equal-to-rounding path.)"""
    G64 = tiny_generator(64, 32)
    free, free_frames = _settled(G64, None, seed)
    held, frames = _settled(G64, 10.0, seed)
    assert frames[-1].reason == free_frames[-1].reason == "reached"
    assert max(frames[-1].distances) <= stop_distance(64)      # the settle keeps only states where it arrived
    assert frames[-1].step > free_frames[-1].step               # it went on after the drag arrived
    assert held < 0.6 * free, (held, free)                      # measured 0.44 (seed 4) and 0.20 (seed 6) of free
    unweighted, _ = _settled(G64, 0.0, seed)                    # λ 0: nothing pulls the outside back
    assert unweighted == pytest.approx(free, rel=0.05)


@pytest.mark.skipif(not MODEL.is_file(), reason="models/toyfaces-64.safetensors is not there")
@pytest.mark.parametrize("mask_term", ["hold", "image", "composite"])
def test_masks_on_the_toy_model_keep_the_outside(mask_term):
    """Four oracle pairs that move the nose over 5 px (the box around it + 8 px painted), the model's defaults:
    the hold with no mask term (the default) keeps the outside exactly and the nose lands where it lands without a
    mask; without the hold, the image term holds the latent's outside (measured 0.37 of the unmasked change)
    though the nose may end about 1 px further; the composite holds less (0.55-0.7) but the nose arrives as
    without a mask."""
    bench = load_bench(BenchSpec("toyfaces-64", "cpu", "toy", None))
    defaults = DragConfig.for_model("toyfaces-64")
    assert defaults.mask_term == "none" and defaults.hold  # the default (see docs/mask.md)
    terms = {"hold": dict(mask_term="none", hold=True)}.get(mask_term, dict(mask_term=mask_term, hold=False))
    cfg = DragConfig.for_model("toyfaces-64", max_steps=300, precision="fp32", **terms)
    change, miss = {False: [], True: []}, {False: [], True: []}
    for pair in [p for p in landmark_pairs(bench.G, bench.detector, 12, 1, 0, 0.7) if p.md_before() > 5][:4]:
        box = landmark_box(pair, 8, 64)
        for masked in (False, True):
            s = DragSession.from_seed(bench.G, pair.seed_a, psi=0.7)
            start = s.image().astype(np.float64)
            if masked:
                s.set_mask(box)
            list(s.drag(pair.handles_xy, pair.targets_xy, cfg))
            change[masked].append(np.abs(s.image() - start)[~box].mean())
            found = bench.detector.detect(s.image(), 1)
            miss[masked].append(float(np.linalg.norm(found - np.asarray(pair.targets_xy), axis=1).mean()))
    ratio = sum(change[True]) / sum(change[False])
    if mask_term == "hold":
        assert sum(change[True]) == 0.0 and sum(change[False]) > 0, change
        assert np.mean(miss[True]) < np.mean(miss[False]) + 0.25, miss  # the ramp may soften the box's edge only
    elif mask_term == "image":
        assert ratio < 0.55, (ratio, change)  # measured 0.37; the paper's term at the old default over 100 pairs: 0.82
    else:
        assert ratio < 0.7, (ratio, change)
        assert np.mean(miss[True]) < np.mean(miss[False]) + 0.5, miss  # the image term ended 1 px further


# -- the hold (mask_term 'hold', the default) ------------------------------------------------------------

def test_the_ramp_is_zero_outside_the_painted_area_and_full_from_its_width_in():
    editable = np.zeros((64, 64), bool)
    editable[10:40, 20:50] = True
    width = ramp_width(64)
    assert width == 2 and ramp_width(512) == 16
    alpha = edge_ramp(editable, width)
    assert (alpha[~editable] == 0).all()
    assert alpha[25, 35] == 255 and alpha[10 + width, 35] == 255       # width + 1 px in: the latent's own
    assert 0 < alpha[10, 35] < alpha[11, 35] < 255                     # the edge row and the next fade in


def test_a_hold_shows_the_old_picture_outside_exactly_and_the_new_one_inside():
    rng = np.random.default_rng(0)
    before, after = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    editable = np.zeros((64, 64), bool)
    editable[8:40, 8:40] = True
    shown = Hold(before, editable).apply(after)
    assert (shown[~editable] == before[~editable]).all()
    assert (shown[12:36, 12:36] == after[12:36, 12:36]).all()
    edge = shown[8, 20].astype(int)                                    # between the two on the ramp
    assert ((np.minimum(before[8, 20], after[8, 20]) <= edge) & (edge <= np.maximum(before[8, 20], after[8, 20]))).all()


def test_the_blend_is_the_rounded_mix_on_every_ramp_pixel():
    rng = np.random.default_rng(1)
    before, after = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    editable = np.zeros((64, 64), bool)
    editable[8:40, 8:40] = True
    alpha = edge_ramp(editable, ramp_width(64)).astype(np.int64)[..., None]
    expected = (alpha * after + (255 - alpha) * before.astype(np.int64) + 127) // 255   # round half up, in int64
    assert np.array_equal(Hold(before, editable).apply(after), expected)
    # Every (alpha, picture, before) triple, through the blend's own arithmetic (Layers as Hold.layers makes them).
    a, p, b = (v.astype(np.uint16) for v in np.meshgrid(*[np.arange(256)] * 3, indexing="ij"))
    shown = Layers(a, (255 - a) * b + 127).blend(p)
    exact = (a.astype(np.int64) * p + (255 - a.astype(np.int64)) * b + 127) // 255
    assert np.array_equal(shown, exact)


def _drag(G, editable, cfg, undo_first=False):
    s = DragSession.from_seed(G, 2)
    if editable is not None:
        s.set_mask(editable)
    start = s.image().copy()
    frames = list(s.drag([[20, 20]], [[26, 24]], cfg))
    return s, start, frames


def test_a_held_drag_moves_as_without_a_mask_and_keeps_the_unpainted_pixels():
    G64 = tiny_generator(64, 32)
    editable = np.zeros((64, 64), bool)
    editable[8:36, 8:36] = True
    cfg = DragConfig(max_steps=30, lr=0.05, r1=24, r2=64, feature_block=4, precision="fp32")
    assert cfg.hold and cfg.mask_term == "none"
    free, start, free_frames = _drag(G64, None, cfg)
    s, start2, frames = _drag(G64, editable, cfg)
    assert (start == start2).all()
    assert torch.equal(s.latent, free.latent)                          # the same optimization, step for step
    assert [f.handles_xy for f in frames] == [f.handles_xy for f in free_frames]
    assert np.abs(free.image().astype(int) - start)[~editable].mean() > 1   # without the hold the outside moves
    for frame in frames:                                               # every frame shown keeps the outside
        if frame.image is not None:
            assert (frame.image[~editable] == start[~editable]).all()
    assert (s.image()[~editable] == start[~editable]).all()
    assert (s.image()[12:32, 12:32] == free.image()[12:32, 12:32]).all()
    s._image = None                                                    # drawn again from the latent: the same
    assert (s.image() == frames[-1].image).all()


def test_undo_brings_back_the_picture_and_a_drag_without_a_mask_releases_the_hold():
    G64 = tiny_generator(64, 32)
    editable = np.zeros((64, 64), bool)
    editable[8:36, 8:36] = True
    cfg = DragConfig(max_steps=6, lr=0.05, r1=24, r2=64, feature_block=4, precision="fp32")
    s, start, _ = _drag(G64, editable, cfg)
    first = s.image().copy()
    list(s.drag([[24, 24]], [[28, 26]], cfg))                          # a second held drag keeps the first's outside
    assert (s.image()[~editable] == start[~editable]).all()
    assert s.undo() and (s.image() == first).all()
    s.set_mask(None)
    list(s.drag([[24, 24]], [[28, 26]], cfg))                          # no mask: the whole picture follows the latent
    assert s.hold is None and np.abs(s.image().astype(int) - start)[~editable].mean() > 1
    assert s.undo() and (s.image() == first).all() and s.hold is not None


def test_the_video_of_a_held_drag_keeps_the_unpainted_pixels(monkeypatch):
    G64 = tiny_generator(64, 32)
    editable = np.zeros((64, 64), bool)
    editable[8:36, 8:36] = True
    s, start, frames = _drag(G64, editable, DragConfig(max_steps=8, lr=0.05, r1=24, r2=64, feature_block=4,
                                                       precision="fp32"))
    written = []
    monkeypatch.setattr(editor_module, "export_records", lambda records, path, **kw: written.extend(records) or path)
    s.export_video("drag.mp4", overlay=False)
    assert len(written) == frames[-1].step + 1
    for image, _, _ in written:
        assert (image[~editable] == start[~editable]).all()


def test_the_undo_history_keeps_held_pictures_within_its_byte_bound(monkeypatch):
    G64 = tiny_generator(64, 32)
    editable = np.zeros((64, 64), bool)
    editable[8:36, 8:36] = True
    cfg = DragConfig(max_steps=2, lr=0.05, r1=24, r2=64, feature_block=4, precision="fp32")
    s, _, _ = _drag(G64, editable, cfg)
    size = s.hold.nbytes
    monkeypatch.setattr(editor_module, "MAX_HOLD_BYTES", 3 * size + size // 2)
    for _ in range(6):
        list(s.drag([[20, 20]], [[24, 22]], cfg))
    held = [snap for snap in s.history if snap.hold is not None]
    assert 1 <= len(held) <= 3 and sum(snap.hold.nbytes for snap in held) <= editor_module.MAX_HOLD_BYTES
    assert isinstance(s.history[-1], _Snapshot) and s.history[-1].hold is not None   # the newest stay


def test_the_hold_goes_with_a_mask_term_and_can_be_turned_off():
    """The hold shows the start picture outside the mask whatever term the drag uses; hold=False shows the
    latent's own picture (the paper's behaviour with mask_term 'features')."""
    G64 = tiny_generator(64, 32)
    editable = np.zeros((64, 64), bool)
    editable[8:36, 8:36] = True
    for hold in (True, False):
        cfg = DragConfig(max_steps=6, lr=0.05, r1=24, r2=64, feature_block=4, precision="fp32", mask_term="image",
                         hold=hold)
        s, start, frames = _drag(G64, editable, cfg)
        kept = (s.image()[~editable] == start[~editable]).all()
        assert kept == hold and (s.hold is not None) == hold
