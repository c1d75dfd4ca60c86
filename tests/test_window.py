"""Local drag steps (draggan/window.py) and the precision setting: the same drag, less arithmetic."""
import random

import numpy as np
import pytest
import torch

from draggan import DragConfig, DragInputError, DragSession
from draggan import window as window_mod
from draggan.methods import DragJob, run_drag
from draggan.window import plan_window, window_features
from stylegan2.testing import tiny_generator


@pytest.fixture(scope="module")
def G128():
    return tiny_generator(128, 16)


def _max_error(G, points_rc, reach, block=6):
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None)
    whole = G.synthesis.features(ws, stop=block)[-1]
    win = plan_window(G, block, points_rc, reach)
    if win is None:
        return None
    assert win.first < block
    _, crop = window_features(G, ws, block, win, "const")
    r0, c0, r1, c1 = win.boxes[-1]
    assert crop.shape[-2:] == (r1 - r0, c1 - c0)
    return ((whole[:, :, r0:r1, c0:c1] - crop).abs().max() / whole.abs().max()).item()


def test_cropped_blocks_equal_the_whole_map_where_read(G128):
    """Corners, edges and the middle: the crop's numbers are the whole map's (float noise only)."""
    rng = random.Random(1)
    points = [[[0, 0]], [[127, 127]], [[0, 127]], [[64, 3]]]
    points += [[[rng.uniform(0, 127), rng.uniform(0, 127)] for _ in range(rng.choice([1, 2]))] for _ in range(8)]
    errors = [_max_error(G128, p, 9.0) for p in points]
    assert sum(e is not None for e in errors) >= 8
    assert all(e is None or e < 1e-5 for e in errors), errors


def test_a_crop_one_pixel_too_small_is_caught(G128, monkeypatch):
    """The check above can fail: one pixel less than each layer reads, and the crop's inner edges are wrong
    where they are read (the boxes are exactly what each layer needs, no more)."""
    monkeypatch.setattr(window_mod, "MARGIN", -1)
    assert _max_error(G128, [[64, 64]], 9.0) > 1e-3


def test_cropped_blocks_give_the_whole_maps_gradients(G128):
    """The loss's gradient on the optimized rows is the whole map's: nothing a kept pixel reads is cut off."""
    from draggan.engine import motion_loss

    ws0 = G128.mapping(torch.randn(1, G128.z_dim, generator=torch.Generator().manual_seed(5)), None)
    points, targets = torch.tensor([[30.0, 40.0], [90.0, 70.0]]), torch.tensor([[40.0, 52.0], [80.0, 60.0]])
    grads = []
    for local in (False, True):
        rows = ws0[:, :6].clone().requires_grad_(True)
        ws = torch.cat([rows, ws0[:, 6:]], 1)
        win = plan_window(G128, 6, points.tolist(), 9.0) if local else None
        if local:
            assert win is not None
            _, feat = window_features(G128, ws, 6, win, "const")
            origin = win.origin
        else:
            feat, origin = G128.synthesis.features(ws, stop=6)[-1], (0, 0)
        motion_loss(feat, points, targets, 3, 128, origin, 128).backward()
        grads.append(rows.grad)
    assert grads[0].abs().max() > 0
    assert ((grads[0] - grads[1]).abs().max() / grads[0].abs().max()).item() < 1e-5


def test_a_local_step_computes_a_fraction_of_the_whole_step(G128):
    """Counted arithmetic (convolutions forward and backward) of a local step against a whole-map step."""
    from torch.utils.flop_counter import FlopCounterMode

    from draggan.engine import step_features

    ws0 = G128.mapping(torch.randn(1, G128.z_dim, generator=torch.Generator().manual_seed(5)), None)
    counts = []
    for local in (False, True):
        rows = ws0[:, :6].clone().requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            _, parts = step_features(G128, torch.cat([rows, ws0[:, 6:]], 1), 6, "const", False, local,
                                     torch.tensor([[40.0, 50.0]]), 12.0)
            parts[0][0].square().sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[1] < 0.15 * counts[0], counts  # 0.08 (with a 5-pixel halo per block: 0.26)


def test_no_window_when_the_points_cover_the_map(G128):
    assert plan_window(G128, 6, [[5, 5], [120, 120]], 9.0) is None
    assert plan_window(G128, 6, [[60, 60]], 9.0).boxes[-1][2] - plan_window(G128, 6, [[60, 60]], 9.0).boxes[-1][0] < 64


def _drag(G, cfg, method="draggan", handles=((40, 50),), targets=((52, 58),)):
    w0 = DragSession.from_seed(G, 0).w0
    return list(run_drag(method, DragJob(G, w0, [list(h) for h in handles], [list(t) for t in targets], cfg)))


@pytest.mark.parametrize("handles,targets", [(((40, 50),), ((52, 58),)), (((3, 120), (20, 100)), ((10, 110), (30, 96)))])
def test_local_steps_drag_as_the_official_step(G128, handles, targets):
    """Local steps, whole-map steps and the official full-resolution step track the same points."""
    cfg = DragConfig(max_steps=8, lr=0.02, r1=12, r2=24, feature_block=6, tracking="l1", local="on",
                     precision="fp32")
    local = _drag(G128, cfg, handles=handles, targets=targets)
    whole = _drag(G128, DragConfig(**{**cfg.__dict__, "local": "off"}), handles=handles, targets=targets)
    official = _drag(G128, cfg, "straightforward", handles=handles, targets=targets)
    assert [f.handles_xy for f in local] == [f.handles_xy for f in whole] == [f.handles_xy for f in official]
    for a, b in zip(local[:-1], official[:-1]):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
    assert (local[-1].latent - official[-1].latent).abs().max().item() < 1e-5
    w0 = DragSession.from_seed(G128, 0).w0
    assert (local[-1].latent - w0).abs().max().item() > 1e-3  # the drag moved the latent
    reach = 6 + 3 + 3  # r2 and r1 in pixels at 128 px, + 3
    assert plan_window(G128, 6, [[y, x] for x, y in handles], reach) is not None  # and the steps were local


@pytest.mark.parametrize("term", ["features", "image"])
def test_a_mask_term_turns_local_steps_off_and_the_hold_keeps_them(G128, monkeypatch, term):
    calls = []
    monkeypatch.setattr("draggan.engine.plan_windows", lambda *a: calls.append(a) or None)
    cfg = DragConfig(max_steps=2, r1=12, r2=24, local="on", precision="fp32")
    _drag(G128, cfg)
    assert calls
    calls.clear()
    editable = torch.zeros(128, 128, dtype=torch.bool)
    editable[30:70, 30:70] = True
    w0 = DragSession.from_seed(G128, 0).w0
    list(run_drag("draggan", DragJob(G128, w0, [[40, 50]], [[52, 58]], cfg, editable=editable)))
    assert calls                                                   # the hold (the default) adds no term
    calls.clear()
    cfg = DragConfig(max_steps=2, r1=12, r2=24, local="on", precision="fp32", mask_term=term)
    list(run_drag("draggan", DragJob(G128, w0, [[40, 50]], [[52, 58]], cfg, editable=editable)))
    assert not calls                                               # a term reads the whole map


def test_bf16_tracks_the_same_points_in_the_first_steps():
    """Low precision in the high-resolution blocks; tracking, loss and Adam stay float32."""
    G = tiny_generator(64, 16)
    cfg = DragConfig(max_steps=4, lr=0.02, r1=24, r2=48, feature_block=4, local="off", precision="fp32")
    fp32 = _drag(G, cfg, handles=((20, 30),), targets=((34, 36),))
    bf16 = _drag(G, DragConfig(**{**cfg.__dict__, "precision": "bf16"}), handles=((20, 30),), targets=((34, 36),))
    assert [f.handles_xy for f in bf16[:3]] == [f.handles_xy for f in fp32[:3]]
    assert bf16[-1].latent.dtype == torch.float32
    assert not torch.equal(bf16[-1].latent, fp32[-1].latent)  # it did run in another precision


def test_precision_and_local_are_checked():
    with pytest.raises(DragInputError, match="precision"):
        DragConfig(precision="fp8").validate()
    with pytest.raises(DragInputError, match="local"):
        DragConfig(local="maybe").validate()
    with pytest.raises(DragInputError, match="fp16 needs CUDA"):
        DragConfig(precision="fp16").compute_dtype(torch.device("cpu"))
    assert DragConfig().compute_dtype(torch.device("cuda")) is torch.float16
    assert DragConfig(precision="fp32").compute_dtype(torch.device("cpu")) is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_on_cpus_with_native_bf16(monkeypatch, native):
    import draggan.config as config

    monkeypatch.setattr(config, "cpu_native_bf16", lambda: native)
    assert DragConfig().compute_dtype(torch.device("cpu")) is (torch.bfloat16 if native else False)
    assert DragConfig().compute_dtype(torch.device("mps")) is False
    assert DragConfig().compute_dtype(torch.device("cuda")) is torch.float16
    assert DragConfig().local_steps(torch.device("cpu")) and not DragConfig().local_steps(torch.device("cuda"))


def _two_handle_step(G, plans, points, targets):
    """The motion loss and the optimized rows' gradient of one step read from `plans` (None: whole maps)."""
    from draggan.engine import motion_parts

    ws0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5)), None)
    rows = ws0[:, :6].clone().requires_grad_(True)
    ws = torch.cat([rows, ws0[:, 6:]], 1)
    if plans is None:
        parts = [(G.synthesis.features(ws, stop=6)[-1], (0, 0), torch.arange(len(points)))]
    else:
        _, crops = window_mod.windows_features(G, ws, 6, [w for w, _ in plans], "const")
        parts = [(c, w.origin, torch.tensor(g)) for c, (w, g) in zip(crops, plans)]
    loss = motion_parts(parts, points, targets, 3, 128, 128)
    loss.backward()
    return loss.detach(), rows.grad


def test_far_apart_handles_get_a_crop_each_with_the_same_loss_and_gradient(G128):
    points, targets = torch.tensor([[20.0, 20.0], [100.0, 105.0]]), torch.tensor([[30.0, 28.0], [90.0, 96.0]])
    plans = window_mod.plan_windows(G128, 6, points.tolist(), 9.0)
    assert [g for _, g in plans] == [[0], [1]]
    assert len({w.first for w, _ in plans}) == 1
    box = plan_window(G128, 6, points.tolist(), 9.0, plans[0][0].first)
    whole_loss, whole_grad = _two_handle_step(G128, None, points, targets)
    for p in (plans, [(box, [0, 1])]):
        loss, grad = _two_handle_step(G128, p, points, targets)
        assert abs(loss - whole_loss) / whole_loss < 1e-5
        assert ((grad - whole_grad).abs().max() / whole_grad.abs().max()).item() < 1e-5


def test_nearby_handles_share_one_crop(G128):
    plans = window_mod.plan_windows(G128, 6, [[60.0, 60.0], [63.0, 66.0], [110.0, 20.0]], 9.0)
    assert sorted(g for _, g in plans) == [[0, 1], [2]]


def test_two_crops_cost_less_than_one_box_around_far_handles(G128):
    """Counted arithmetic of a step with two far-apart handles: a crop each, not one box around both."""
    from torch.utils.flop_counter import FlopCounterMode

    from draggan.engine import step_features

    ws0 = G128.mapping(torch.randn(1, G128.z_dim, generator=torch.Generator().manual_seed(5)), None)
    rows = ws0[:, :6].clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        _, parts = step_features(G128, torch.cat([rows, ws0[:, 6:]], 1), 6, "const", False, True,
                                 torch.tensor([[30.0, 30.0], [85.0, 90.0]]), 9.0)
        sum(p[0].square().sum() for p in parts).backward()
    box = plan_window(G128, 6, [[30.0, 30.0], [85.0, 90.0]], 9.0)
    with FlopCounterMode(display=False) as one_box:
        _, crop = window_features(G128, torch.cat([rows, ws0[:, 6:]], 1), 6, box, "const")
        crop.square().sum().backward()
    assert len(parts) == 2 and counter.get_total_flops() < 0.8 * one_box.get_total_flops()
