"""Weights modulated once per drag for the rows it keeps (stylegan2/frozen_styles.py): the same numbers."""
import numpy as np
import pytest
import torch

from draggan import DragConfig
from draggan.editor import seed_latent
from draggan.engine import features
from draggan.methods import DragJob, run_drag
from stylegan2 import ops
from stylegan2.frozen_styles import FrozenStyles, frozen_styles
from stylegan2.testing import tiny_generator

ROWS = 6


@pytest.fixture(scope="module")
def G():
    return tiny_generator(64, 16)


def _step(G, latent, frozen, low):
    """One step's feature map and the gradient on the optimized rows, and the image of the latent."""
    rows = latent[:, :ROWS].clone().requires_grad_(True)
    ws = torch.cat([rows, latent[:, ROWS:]], 1)
    with frozen_styles(frozen):
        feat = features(G, ws, 4, "const", low)[-1]
        with torch.no_grad():
            img = G.synthesis(ws.detach(), use_fp16=low)
    (feat.float() * torch.linspace(-1, 1, feat.numel()).reshape(feat.shape)).sum().backward()
    return feat.detach(), rows.grad, img


@pytest.mark.parametrize("low", [False, torch.bfloat16, torch.float16])
def test_kept_rows_give_the_plain_numbers(G, low):
    """Features, the optimized rows' gradient and the image are the plain path's, bit for bit (the rows of a
    seed's latent are all equal: a kept row's value alone must not make an optimized row's layer frozen)."""
    latent = seed_latent(G, 0)
    assert torch.equal(latent[:, 0], latent[:, -1])
    frozen = FrozenStyles(G.synthesis, latent, ROWS)
    assert frozen.rows and all(r >= ROWS for r in _row_indices(G, frozen))
    plain = _step(G, latent, None, low)
    for _ in range(2):  # the first call computes the kept parts, the second reuses them
        cached = _step(G, latent, frozen, low)
        for a, b in zip(plain, cached):
            assert torch.equal(a, b)
    assert frozen.parts
    assert plain[1].abs().max() > 0


def _row_indices(G, frozen):
    idx, out = 0, []
    for block in G.synthesis.blocks:
        layers = [block.conv1] if block.num_conv == 1 else [block.conv0, block.conv1]
        out += [idx + i for i, layer in enumerate(layers) if layer in frozen.rows]
        idx += block.num_conv
    return out


def test_a_changed_row_or_model_is_computed_afresh(G):
    latent = seed_latent(G, 0)
    frozen = FrozenStyles(G.synthesis, latent, ROWS)
    _step(G, latent, frozen, False)
    other = latent.clone()
    other[:, ROWS:] += 0.5  # the kept rows of another latent: not what was cached
    assert all(torch.equal(a, b) for a, b in zip(_step(G, other, frozen, False), _step(G, other, None, False)))
    G2 = tiny_generator(64, 16)
    frozen2 = FrozenStyles(G2.synthesis, latent, ROWS)
    _step(G2, latent, frozen2, False)
    with torch.no_grad():  # the model changed in place (a tuned generator): a kept layer, an optimized row's
        G2.synthesis.b64.conv1.weight.mul_(1.5)
        G2.synthesis.b8.conv0.weight.mul_(0.5)
    after = _step(G2, latent, frozen2, False)
    assert all(torch.equal(a, b) for a, b in zip(after, _step(G2, latent, None, False)))
    assert not torch.equal(after[2], _step(G, latent, None, False)[2])


def test_a_drag_modulates_each_kept_layer_once(G, monkeypatch):
    """Over a whole drag (steps, frames, the last image), a kept layer's weight is modulated once for the steps,
    not once per step (the float32 frames take the layers' inference path, `SynthesisLayer._infer`, which keeps
    its own parts); the drag's frames and latent are the plain drag's."""
    calls = []
    for name in ("modulated_weight", "unfused_parts", "weight_parts"):
        real = getattr(ops, name)
        monkeypatch.setattr(f"stylegan2.frozen_styles.{name}", lambda *a, _real=real, _n=name: calls.append(_n) or _real(*a))
    cfg = DragConfig(max_steps=5, lr=0.02, r1=6, r2=12, feature_block=4, local="off", precision="fp32")
    latent = seed_latent(G, 0)
    frames = list(run_drag("draggan", DragJob(G, latent, [[20, 30]], [[34, 36]], cfg)))
    kept = len(FrozenStyles(G.synthesis, latent, cfg.rows).rows)
    in_step = sum(1 for b in G.synthesis.blocks[:4] for n in ("conv0", "conv1") if getattr(b, n, None) is not None
                  and getattr(b, n) in FrozenStyles(G.synthesis, latent, cfg.rows).rows)
    optimized = 6  # b4.conv1, b8.conv0/1, b16.conv0/1, b32.conv0: rows 0-5, their weights' parts once
    assert kept > 0 and calls.count("weight_parts") == optimized
    assert calls.count("modulated_weight") == 0 and calls.count("unfused_parts") == in_step  # the step's kept layers
    monkeypatch.setattr("draggan.engine.frozen_styles", lambda frozen: frozen_styles(None))
    plain = list(run_drag("draggan", DragJob(G, latent, [[20, 30]], [[34, 36]], cfg)))
    assert len(frames) == len(plain) > 2
    for a, b in zip(frames, plain):
        assert a.handles_xy == b.handles_xy and np.array_equal(a.image, b.image)
    assert torch.equal(frames[-1].latent, plain[-1].latent)
