"""Dragging a StyleGAN3 generator as the official app does (traces in ../shared/reference/sg3*_io)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from draggan import DragConfig
from draggan.features import sample_resized
from draggan.methods import DragJob, run_drag
from draggan.window import plan_window
from test_stylegan3 import NAMES, reference_generator, rel_err


@pytest.fixture(scope="module", params=NAMES)
def case(request, reference_dir):
    name = request.param
    G = reference_generator(reference_dir, name)
    io = load_file(str(reference_dir / f"{name}_io.safetensors"))
    meta = json.loads((reference_dir / f"{name}_io.json").read_text())["drag"]
    return name, G, io, meta


def _config(meta, **kw) -> DragConfig:
    settings = dict(lr=meta["lr"], r1=meta["r1_arg"], r2=meta["r2_arg"], tracking="l2", lambda_mask=meta["lambda_mask"],
                    mask_term="features", hold=False,  # the official (paper's) mask, no hold
                    rows=meta["optimized_ws_rows"], feature_block=meta["feature_idx"] + 1, max_steps=meta["steps"],
                    precision="fp32")  # as the official code on a CPU
    return DragConfig(**{**settings, **kw})


def _drag(method, G, io, meta, mask=True, **kw):
    handles = [[c, r] for r, c in meta["handles_rowcol"]]
    targets = [[c, r] for r, c in meta["targets_rowcol"]]
    editable = io["drag_mask"] == 0 if mask else None  # the reference's mask marks the FIXED area
    job = DragJob(G, io["drag_w0"], handles, targets, _config(meta, **kw), editable=editable)
    return list(run_drag(method, job))


def test_drag_feature_is_layer_L5_whole_resized_to_the_image(case):
    """Feature block 6 is the 6th layer (L5), margin included; the engine's reads equal resizing it whole."""
    name, G, io, _ = case
    res = G.img_resolution
    feat = G.synthesis.features(io["drag_w0"], stop=6)[-1]
    assert G.synthesis.blocks[5].geo.name.startswith("L5_") and feat.shape[-1] == 52 == G.synthesis.blocks[5].resolution
    resized = F.interpolate(feat, [res, res], mode="bilinear", align_corners=False)
    assert rel_err(resized, io["drag_feat0_resized"]) < 1e-4
    grid = torch.stack(torch.meshgrid(torch.arange(float(res)), torch.arange(float(res)), indexing="ij"), -1)
    read = sample_resized(feat, grid, res)                     # [C, res, res]: what tracking and motion read
    assert rel_err(read[None], io["drag_feat0_resized"]) < 1e-4


def _check_trace(frames, io, meta, tight: int, w_tol: float):
    steps = [f for f in frames if not f.done]
    ref_points = io["drag_points"]
    for i, f in enumerate(steps[:tight]):
        assert [[y, x] for x, y in f.handles_xy] == ref_points[i].tolist(), f"step {i}"
        assert np.abs(f.image.astype(int) - io["drag_images_uint8"][i].numpy().astype(int)).max() <= 1, f"step {i}"
        if i:  # the latent a frame shows is W+ after the previous step's update
            assert rel_err(f.latent, io["drag_ws_after_step"][i - 1:i]) < w_tol, f"step {i}"
    late = np.array([[[y, x] for x, y in f.handles_xy] for f in steps[tight:]])
    if len(late):
        assert np.abs(late - ref_points[tight:len(steps)].numpy()).mean() < 3
    assert rel_err(frames[-1].latent, io["drag_w_final"]) < w_tol * 5
    assert torch.equal(frames[-1].latent[:, meta["optimized_ws_rows"]:], io["drag_w0"][:, meta["optimized_ws_rows"]:])


@pytest.mark.parametrize("method,w_tol", [("straightforward", 1e-5), ("draggan", 5e-4)])
def test_drag_trace_matches_reference(case, method, w_tol):
    """The official step (straightforward) to float noise; the DragGAN engine within its mask approximation
    (its mask term is read on the native 52-px map, not the resized one: ~1e-4 of W+ after 10 steps)."""
    name, G, io, meta = case
    frames = _drag(method, G, io, meta)
    if name.startswith("sg3t"):  # T: both handles move (6 and 5 px) over 10 steps
        assert frames[-1].reason == "max_steps" and frames[-1].step == 10
        _check_trace(frames, io, meta, tight=6, w_tol=w_tol)
    else:  # R: every handle within 2 px at step 4; the reference skips every update after it
        assert frames[-1].reason == "reached" and frames[-1].step == 4
        assert torch.equal(io["drag_ws_after_step"][3], io["drag_w_final"][0])
        _check_trace(frames, io, meta, tight=4, w_tol=w_tol)


def test_no_local_steps_on_stylegan3(case):
    """Cropped high-resolution steps do not apply to StyleGAN3's layers: the plan is always 'whole maps'."""
    _, G, io, meta = case
    assert plan_window(G, 6, [[10.0, 10.0]], 3.0) is None
    on = _drag("draggan", G, io, meta, mask=False, local="on", max_steps=3)  # a mask alone turns crops off
    off = _drag("draggan", G, io, meta, mask=False, local="off", max_steps=3)
    assert [f.handles_xy for f in on] == [f.handles_xy for f in off]
    assert torch.equal(on[-1].latent, off[-1].latent)


# -- the rest of the drag on a small random StyleGAN3 ----------------------------

@pytest.fixture(scope="module", params=[False, True], ids=["T", "R"])
def tiny3(request):
    from stylegan2.testing import tiny_stylegan3
    return tiny_stylegan3(seed=1, radial=request.param)


def test_engine_equals_the_official_step_on_stylegan3(tiny3):
    """Our step (native L5 read as resized, unfused modulated convs) = the straightforward official step."""
    from draggan import DragSession
    cfg = DragConfig(max_steps=5, lr=0.05, r1=48, r2=96, tracking="l1", precision="fp32")
    w0 = DragSession.from_seed(tiny3, 0).w0
    runs = [list(run_drag(m, DragJob(tiny3, w0, [[12, 16], [20, 8]], [[20, 16], [24, 4]], cfg)))
            for m in ("draggan", "straightforward")]
    ours, official = runs
    assert [f.handles_xy for f in ours] == [f.handles_xy for f in official]
    assert rel_err(ours[-1].latent, official[-1].latent) < 1e-5
    assert not torch.equal(ours[-1].latent, w0)


def test_session_features_work_on_stylegan3(tiny3, tmp_path):
    """Nearest, the mask, undo and the video work as on StyleGAN2."""
    from draggan import DragSession
    s = DragSession.from_seed(tiny3, 2)
    w0, img0 = s.latent.clone(), s.image().copy()
    assert img0.shape == (32, 32, 3)
    editable = np.zeros((32, 32), bool)
    editable[:20] = True
    s.set_mask(editable)
    frames = list(s.drag([[10, 10]], [[16, 12]], DragConfig(max_steps=4, lr=0.05, r1=48, r2=96, nearest=True)))
    assert frames[-1].done and frames[-1].latent.shape == (1, 16, 32)
    assert not torch.equal(s.latent, w0)
    assert s.export_video(tmp_path / "drag.gif").stat().st_size > 0
    assert s.undo() and torch.equal(s.latent, w0) and np.array_equal(s.image(), img0)
