"""The mask's terms: what the image and composite terms compute, and that on the toy model the default mask keeps
the outside while the handle still arrives."""
from pathlib import Path

import numpy as np
import pytest
import torch

from draggan import DragConfig, DragSession
from draggan.composite import composite_loss
from draggan.engine import image_mask_loss, image_mask_weight, stop_distance
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
                                                                    feature_block=4, precision="fp32")))
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


def _settled(G, lambda_mask: float | None) -> tuple[float, list]:
    """Outside change and the last frame of a drag on the tiny model: masked (lambda) or not (None)."""
    editable = np.zeros((64, 64), bool)
    editable[10:34, 10:34] = True
    s = DragSession.from_seed(G, 2)
    start = s.image().astype(np.float64)
    if lambda_mask is not None:
        s.set_mask(editable)
    cfg = DragConfig(max_steps=200, lambda_mask=10.0 if lambda_mask is None else lambda_mask, lr=0.05, r1=24, r2=64,
                     feature_block=4, precision="fp32", mask_term="composite")
    frames = list(s.drag([[20, 20]], [[26, 24]], cfg))
    return float(np.abs(s.image() - start)[~editable].mean()), frames


def test_composite_settle_keeps_the_outside_while_the_handle_stays_arrived():
    G64 = tiny_generator(64, 32)
    free, free_frames = _settled(G64, None)
    held, frames = _settled(G64, 10.0)
    assert frames[-1].reason == free_frames[-1].reason == "reached"
    assert max(frames[-1].distances) <= stop_distance(64)      # the settle keeps only states where it arrived
    assert frames[-1].step > free_frames[-1].step               # it went on after the drag arrived
    assert held < 0.6 * free, (held, free)                      # measured 27.9 against 75.2
    unweighted, _ = _settled(G64, 0.0)                          # λ 0: nothing pulls the outside back
    assert unweighted == pytest.approx(free, rel=0.05)


@pytest.mark.skipif(not MODEL.is_file(), reason="models/toyfaces-64.safetensors is not there")
@pytest.mark.parametrize("mask_term", ["image", "composite"])
def test_masks_on_the_toy_model_keep_the_outside(mask_term):
    """Four oracle pairs that move the nose over 5 px (the box around it + 8 px painted), the model's defaults:
    the image term (the default) holds the outside (measured 0.37 of the unmasked change) though the nose may end
    about 1 px further; the composite holds less (0.55-0.7) but the nose arrives as without a mask."""
    bench = load_bench(BenchSpec("toyfaces-64", "cpu", "toy", None))
    cfg = DragConfig.for_model("toyfaces-64", max_steps=300, precision="fp32", mask_term=mask_term)
    assert DragConfig.for_model("toyfaces-64").mask_term == "image"  # the default: cheaper (see docs/mask.md)
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
    if mask_term == "image":
        assert ratio < 0.55, (ratio, change)  # measured 0.37; the paper's term at the old default over 100 pairs: 0.82
    else:
        assert ratio < 0.7, (ratio, change)
        assert np.mean(miss[True]) < np.mean(miss[False]) + 0.5, miss  # the image term ended 1 px further
