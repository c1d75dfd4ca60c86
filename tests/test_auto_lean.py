"""The lean rollout (`draggan.auto.lean`): the numbers of the nn.Transformer modules, on random and trained weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from draggan.auto import AutoConfig, load_auto_model, rollout
from draggan.auto.files import generator_shape
from draggan.auto.lean import LeanRollout, encode
from draggan.auto.networks import AutoDragModel, LatentPredictor
from stylegan2.testing import tiny_generator

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "models" / "toyfaces-64.safetensors"
TOY_PREDICTORS = [ROOT / "models" / name for name in ("toyfaces-64-auto-light.safetensors",    # the catalog's
                                                      "toyfaces-64-auto-n3.safetensors")]      # the fast variant
TOL = 1e-5  # float32 rounding: |lean - modules| <= TOL * max(1, max |modules|)


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return bool((got - want).abs().max() <= TOL * max(1.0, float(want.abs().max())))


def random_model(num_ws: int = 8, w_dim: int = 32, G=None, **sizes) -> AutoDragModel:
    """A model with every weight random (the zero-initialised heads too, so that every step moves) and W
    statistics that are not the identity; sized for G when given."""
    cfg = AutoConfig(**dict(dict(d_model=32, heads=4, ff_mult=2, reg_enc_layers=2, reg_dec_layers=2,
                                 pred_enc_layers=1, pred_dec_layers=3, feature_block=3, patch_channels=4, patch=3,
                                 n_steps=4, rows=min(6, num_ws)), **sizes))
    torch.manual_seed(0)
    shape = generator_shape(G, cfg.feature_block) if G is not None else dict(
        num_ws=num_ws, w_dim=w_dim, feat_channels=8, feat_size=16, image_size=32)
    model = AutoDragModel(cfg, **shape)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
        model.w_mean.copy_(torch.randn(w_dim))
        model.w_std.copy_(torch.rand(w_dim) + 0.5)
    return model.eval().requires_grad_(False)


def memory_of(model: AutoDragModel, points: int, padded: int = 0):
    """The predictor's memory for a random F0 and `points` pairs, the last `padded` of them padding."""
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 8, 16, 16, generator=g)
    h, t = 32 * torch.rand(1, points, 2, generator=g), 32 * torch.rand(1, points, 2, generator=g)
    mask = torch.ones(1, points, dtype=torch.bool)
    mask[:, points - padded:] = False
    return model.predictor.encode(feat, h, t, mask)


def assert_steps_match(model: AutoDragModel, memory, pad, w0: torch.Tensor) -> None:
    """Each step of the lean rollout against the modules: the prediction from the whole prefix, and the
    regularizer of it, both within TOL; the latents really move (a step that did nothing would pass)."""
    lean = LeanRollout(model, memory, pad, w0)
    seq = [w0]
    for _ in range(model.cfg.n_steps):
        want = model.predict(memory, pad, torch.stack(seq, dim=1))[:, -1]
        got = lean.predict(seq[-1])
        assert close(got, want)
        assert (want - seq[-1]).abs().max() > 1e-2
        want_reg, got_reg = model.regularize(want), lean.regularize(want)
        assert close(got_reg, want_reg)
        assert (want_reg - want).abs().max() > 1e-2
        seq.append(want_reg)


@pytest.mark.parametrize("points,padded", [(1, 0), (5, 0), (5, 2)])
@torch.no_grad()
def test_lean_steps_equal_the_modules_on_random_weights(points, padded):
    model = random_model()
    memory, pad = memory_of(model, points, padded)
    w0 = model.w_mean + model.w_std * torch.randn(1, model.num_ws, model.w_dim, generator=torch.Generator().manual_seed(2))
    assert_steps_match(model, memory, pad, w0)


@pytest.mark.parametrize("sizes", [dict(reg_enc_layers=0, pred_enc_layers=0),   # encoders are nn.Identity
                                   dict(rows=6, heads=1, pred_dec_layers=1)])
@torch.no_grad()
def test_lean_steps_equal_the_modules_on_other_shapes(sizes):
    """No encoder layers, one head, and a generator whose every row moves (no regularizer query)."""
    num_ws = 6 if sizes.get("rows") == 6 else 8
    model = random_model(num_ws=num_ws, **sizes)
    assert (model.regularizer.query is None) == (num_ws == 6)
    memory, pad = memory_of(model, 3)
    assert_steps_match(model, memory, pad, torch.randn(1, num_ws, model.w_dim))


@pytest.mark.parametrize("feat_size,points,padded", [(16, 5, 0), (16, 5, 2), (18, 1, 0)])
@torch.no_grad()
def test_lean_encode_equals_the_module(feat_size, points, padded):
    """The memory and its padding mask; 18 cells do not divide by the conv's stride 4 (the conv drops the rest)."""
    cfg_sizes = dict(feat_stride=4)
    model = random_model(**cfg_sizes)
    pred = model.predictor
    if feat_size != 16:
        model = AutoDragModel(model.cfg, 8, 32, feat_channels=8, feat_size=feat_size, image_size=36)
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
        pred = model.eval().predictor
    g = torch.Generator().manual_seed(6)
    feat = torch.randn(1, 8, feat_size, feat_size, generator=g)
    h, t = 32 * torch.rand(1, points, 2, generator=g), 32 * torch.rand(1, points, 2, generator=g)
    mask = torch.ones(1, points, dtype=torch.bool)
    mask[:, points - padded:] = False
    want, want_pad = pred.encode(feat, h, t, mask)
    got, got_pad = encode(pred, feat, h, t, mask)
    assert torch.equal(got_pad, want_pad) and int(want_pad.sum()) == padded
    assert close(got[~want_pad], want[~want_pad])
    assert want.abs().max() > 0.1


def test_rollout_runs_the_lean_path_and_equals_the_modules(monkeypatch):
    """`rollout` computes its steps lean by default (the modules' encode and decode are never called) and gives the
    module path's latents; lean=False is the module path."""
    G = tiny_generator(resolution=32, channels=16, w_dim=32, seed=0)
    model = random_model(G=G)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None)
    handles, targets = [[10.0, 12.0], [20.0, 9.0]], [[14.0, 15.0], [17.0, 11.0]]
    slow = rollout(model, G, w0, handles, targets, lean=False)
    calls = []
    for name in ("encode", "decode"):
        monkeypatch.setattr(LatentPredictor, name, lambda *a, name=name, **k: calls.append(name))
    fast = rollout(model, G, w0, handles, targets)
    assert calls == []
    assert len(fast) == len(slow) == model.cfg.n_steps
    for a, b in zip(fast, slow):
        assert close(a, b)
        assert torch.equal(a[:, model.cfg.rows:], w0[:, model.cfg.rows:])
    assert not torch.allclose(slow[-1], w0, atol=1e-2)
    assert len(rollout(model, G, w0, handles, targets, n_steps=2)) == 2


@pytest.mark.parametrize("path", TOY_PREDICTORS, ids=lambda p: p.stem)
def test_the_shipped_toy_predictors_load_unchanged_and_roll_out_the_same_lean(path):
    from stylegan2.checkpoints import load_generator

    if not (TOY.is_file() and path.is_file()):
        pytest.skip("the toy-faces model files are not there")
    G = load_generator("toyfaces-64", "cpu")
    model = load_auto_model(path, G)
    g = torch.Generator().manual_seed(4)
    for points in (1, 5, 68):
        w0 = G.mapping(torch.randn(1, G.z_dim, generator=g), None, truncation_psi=0.7)
        handles = (8 + 48 * torch.rand(points, 2, generator=g)).tolist()
        targets = (8 + 48 * torch.rand(points, 2, generator=g)).tolist()
        for use_regularizer in (True, False):
            fast = rollout(model, G, w0, handles, targets, use_regularizer=use_regularizer)
            slow = rollout(model, G, w0, handles, targets, use_regularizer=use_regularizer, lean=False)
            assert max(float((a - b).abs().max()) for a, b in zip(fast, slow)) <= TOL
            assert not torch.allclose(slow[-1], w0, atol=1e-2)


@torch.no_grad()
def test_weights_changed_after_a_rollout_are_read_again():
    """The folded weights are kept with the model: a weight changed in place (a model being trained, a file loaded
    into it) is seen by the next edit, by the encoder and by the steps."""
    model = random_model()
    memory, pad = memory_of(model, 3)
    w0 = torch.randn(1, model.num_ws, model.w_dim, generator=torch.Generator().manual_seed(7))
    feat = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(8))
    h, t = 32 * torch.rand(1, 2, 2), 32 * torch.rand(1, 2, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    for change in range(3):
        assert_steps_match(model, memory, pad, w0)
        assert close(encode(model.predictor, feat, h, t, mask)[0], model.predictor.encode(feat, h, t, mask)[0])
        if change == 0:                        # parameters of the steps (and a buffer: the W statistics)
            model.predictor.decoder.layers[0].linear1.weight.mul_(1.7)
            model.regularizer.head.bias.add_(0.2)
            model.w_std.mul_(1.3)
        elif change == 1:                      # parameters of the encoder only
            model.predictor.point_mlp[0].weight.mul_(-1)
            model.predictor.feat_pos.add_(0.5)


def test_rollout_latents_are_ordinary_tensors():
    """The rollout runs under inference_mode; what it hands out must work anywhere: a drag optimizes from it
    (autograd) and the app edits latents in place."""
    G = tiny_generator(resolution=32, channels=16, w_dim=32, seed=0)
    model = random_model(G=G)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None)
    latents = rollout(model, G, w0, [[10.0, 12.0]], [[14.0, 15.0]])
    assert not any(w.is_inference() for w in latents)
    rows = latents[-1][:, :6].clone().requires_grad_(True)
    (torch.cat([rows, latents[-1][:, 6:]], 1) * latents[-1]).sum().backward()
    assert rows.grad is not None
    latents[-1][:, 0] += 1.0
