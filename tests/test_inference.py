"""The synthesis layers' inference path (`stylegan2.inference`): the fused path's numbers in fewer operations, taken
only where no gradient is wanted, and never stale after the weights change."""
from __future__ import annotations

import copy

import pytest
import torch

from stylegan2 import inference, ops
from stylegan2.networks import SynthesisLayer, ToRGBLayer
from stylegan2.testing import tiny_generator

TOL = 2e-5  # float32 rounding, relative to the largest magnitude


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= TOL * max(1.0, float(b.abs().max())))


def plain(G, ws, **kw) -> torch.Tensor:
    """The image through the fused path as before the inference path existed (every layer refuses it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("stylegan2.networks.inferring", lambda *a: False)
        with torch.no_grad():
            return G.synthesis(ws, **kw)


@pytest.fixture(scope="module")
def G():
    return tiny_generator(64, 32)


@pytest.fixture()
def counted(monkeypatch):
    calls = []
    for name in ("synthesis_layer", "to_rgb"):
        real = getattr(inference, name)
        monkeypatch.setattr(f"stylegan2.networks.{name}", lambda *a, _real=real, _n=name: calls.append(_n) or _real(*a))
    return calls


@pytest.mark.parametrize("noise_mode", ["const", "none"])
@pytest.mark.parametrize("square", [True, False])
def test_a_render_takes_it_and_gives_the_fused_numbers(noise_mode, square, counted):
    """Every modulated layer and toRGB of a no-grad render takes the path (up and not, a non-square generator's
    half-width maps too) and the image and every block's map equal the fused path's."""
    G = tiny_generator(64, 32, square=square)
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)), None, truncation_psi=0.7)
    want = plain(G, ws, noise_mode=noise_mode)
    with torch.no_grad():
        got, feats = G.synthesis(ws, noise_mode=noise_mode, return_features=True)
    layers = sum(b.num_conv for b in G.synthesis.blocks)
    assert counted.count("synthesis_layer") == layers and counted.count("to_rgb") == len(G.synthesis.blocks)
    assert close(got, want) and want.abs().max() > 0.1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("stylegan2.networks.inferring", lambda *a: False)
        with torch.no_grad():
            _, plain_feats = G.synthesis(ws, noise_mode=noise_mode, return_features=True)
    assert all(close(a, b) for a, b in zip(feats, plain_feats))


def test_random_noise_is_drawn_and_scaled_as_the_fused_path_draws_it(G):
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2)), None)
    torch.manual_seed(7)
    got = G.synthesis(ws, noise_mode="random")
    torch.manual_seed(7)
    want = plain(G, ws, noise_mode="random")
    assert close(got, want)
    with pytest.raises(ValueError, match="noise_mode"):
        with torch.no_grad():
            G.synthesis(ws, noise_mode="loud")


def test_a_crop_takes_its_noise_where_the_whole_map_has_it(G):
    """Local windows render a crop of a block at `origin`: the noise is the whole map's at the same pixels."""
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), None)
    block = G.synthesis.b32
    with torch.no_grad():
        x16 = G.synthesis.features(ws, stop=3)[-1]                                 # [1, C, 16, 16]
        row_ws = G.synthesis.block_ws(ws)[3]
        whole = block.features(x16, row_ws)
        crop = block.features(x16[:, :, 4:12, 2:10], row_ws, origin=(8, 4))         # rows 8..23, cols 4..19 of 32
    assert close(crop[:, :, 3:-3, 3:-3], whole[:, :, 11:21, 7:17])                  # away from the crop's edges


def test_weights_changed_in_place_or_replaced_are_read_again(G):
    """A PTI step changes weights in place, `.to()` / `.data =` replaces them: the kept parts follow both, and a deep
    copy (a session's tuned generator) keeps its own."""
    G = copy.deepcopy(G)
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(4)), None)
    with torch.no_grad():
        before = G.synthesis(ws)
        other = copy.deepcopy(G)
        G.synthesis.b16.conv0.weight.mul_(1.5)                                     # in place
        G.synthesis.b64.torgb.affine.bias.add_(0.3)
        G.synthesis.b32.conv1.noise_strength.fill_(0.5)
        changed = G.synthesis(ws)
    assert close(changed, plain(G, ws)) and not close(changed, before)
    layer = G.synthesis.b8.conv1
    layer.weight.data = layer.weight.data * 0.5                                     # replaced
    with torch.no_grad():
        assert close(G.synthesis(ws), plain(G, ws))
        assert torch.equal(other.synthesis(ws), before)                              # the copy: its own weights


def test_autograd_half_precision_and_batches_keep_the_general_path(G, counted):
    """A drag's step needs gradients through the styles (and PTI through the weights): the path is never taken
    there, and the gradients are the general path's own; nor for a batch, nor for a block in bfloat16."""
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5)), None)
    with torch.no_grad():
        G.synthesis(ws)                                                              # batch 2
    rows = ws[:1].clone().requires_grad_(True)
    G.synthesis(rows).square().sum().backward()
    assert rows.grad is not None and rows.grad.abs().max() > 0
    tuned = copy.deepcopy(G).requires_grad_(True)
    tuned.synthesis(ws[:1]).sum().backward()
    assert tuned.synthesis.b8.conv1.weight.grad is not None
    assert counted == []
    with torch.no_grad():
        G.synthesis(ws[:1], use_fp16=torch.bfloat16)                                 # the top blocks in bfloat16
    float32 = [b for b in G.synthesis.blocks if not b.use_fp16]
    assert 0 < len(float32) < len(G.synthesis.blocks)
    assert counted.count("synthesis_layer") == sum(b.num_conv for b in float32)


def test_grad_enabled_without_anything_requiring_it_takes_the_path(G, counted):
    """Outside no_grad, a render whose latent and weights need no gradient is the same render (one path, one image)."""
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(6)), None)
    with torch.no_grad():
        a = G.synthesis(ws)
    n = len(counted)
    assert torch.equal(G.synthesis(ws), a) and len(counted) == 2 * n


def test_derived_recomputes_only_on_change():
    made = []
    m = torch.nn.Linear(3, 3)
    get = lambda: ops.derived(m, "k", (m.weight, m.bias), lambda w, b: made.append(1) or (w.sum() + b.sum()))
    first = get()
    assert get() is first and len(made) == 1
    with torch.no_grad():
        m.weight.add_(1)
    assert float(get()) == pytest.approx(float(first) + 9) and len(made) == 2
    m.bias.data = torch.zeros(3)
    get()
    assert len(made) == 3


def test_the_layers_are_the_ones_the_generator_builds():
    """The inference path reads these layers' parameters by name: a renamed one fails here, not in a render."""
    G = tiny_generator(32, 16)
    for m in G.synthesis.modules():
        if isinstance(m, SynthesisLayer):
            assert {"weight", "bias"} <= set(m._parameters) and "resample_filter" in m._buffers
            assert ("noise_const" in m._buffers) == m.use_noise == ("noise_strength" in m._parameters)
        if isinstance(m, (SynthesisLayer, ToRGBLayer)):
            assert set(m._modules["affine"]._parameters) == {"weight", "bias"}
