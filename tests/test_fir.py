"""The separable FIR resampling (`stylegan2.ops._separable_upfirdn2d`): the sums of the depthwise convolution it
replaces on CPUs, for every padding the generator uses and more, the filter's orientation included."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from stylegan2 import ops
from stylegan2.ops import setup_filter, upfirdn2d, upsample2d


def by_convolution(x: torch.Tensor, f: torch.Tensor, up: int, pad: tuple[int, int, int, int], gain: float):
    """upfirdn2d as NVIDIA defines it: zero insertion, pad, a depthwise convolution with the flipped filter."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(F.pad(x, list(pad)), weight, groups=c)


def lopsided() -> torch.Tensor:
    """A separable filter that is not symmetric: a flip the wrong way round shows."""
    g = torch.tensor([1.0, 2.0, 5.0, 1.0], dtype=torch.float64)
    f = torch.outer(g, g)
    return f / f.sum()


@pytest.fixture(params=["matrices", "axes"])
def small_maps(request, monkeypatch):
    """Both ways the separable path sums: maps up to ops.MATRIX_SIDE as two matrix products, larger ones by `_fir_axis`."""
    if request.param == "axes":
        monkeypatch.setattr(ops, "MATRIX_SIDE", 0)
    return request.param


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("f", [setup_filter([1, 3, 3, 1]).double(), lopsided()], ids=["stylegan2", "lopsided"])
def test_separable_path_computes_the_convolution(up, f, small_maps, monkeypatch):
    torch.manual_seed(0)
    calls = []
    monkeypatch.setattr(ops, "_fir_matrix", lambda *a, _real=ops._fir_matrix: calls.append(a) or _real(*a))
    taps = ops._separable_taps(f)
    assert taps is not None
    for x0, x1, y0, y1 in itertools.product(range(3), range(3), range(3), range(3)):
        for gain in (1.0, 4.0):
            x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
            want = by_convolution(x, f, up, (x0, x1, y0, y1), gain)
            if up == 2 and (want.shape[2] % 2 or want.shape[3] % 2):
                with pytest.raises(ValueError):
                    ops._separable_upfirdn2d(x, taps, up, (x0, x1, y0, y1), gain)
                continue
            got = ops._separable_upfirdn2d(x, taps, up, (x0, x1, y0, y1), gain)
            assert got.shape == want.shape
            assert (got - want).abs().max() < 1e-7 * want.abs().max(), (up, (x0, x1, y0, y1), gain)
    assert bool(calls) == (small_maps == "matrices")


def test_upfirdn2d_takes_it_for_images_in_float32_on_cpus_and_matches():
    torch.manual_seed(1)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 3, 33, 33)
    for got, want in ((upsample2d(x, f), by_convolution(x, f, 2, (2, 1, 2, 1), 4.0)),
                      (upfirdn2d(x, f, pad=(1, 1, 1, 1), gain=4), by_convolution(x, f, 1, (1, 1, 1, 1), 4.0))):
        assert got.shape == want.shape and (got - want).abs().max() <= 2e-6 * want.abs().max()
        assert not torch.equal(got, want)                    # the separable sums, not the convolution's


def test_feature_maps_keep_the_convolution():
    """With many channels oneDNN's depthwise convolution is as fast or faster: feature maps keep it, bit for bit."""
    torch.manual_seed(5)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, ops.SEPARABLE_CHANNELS + 1, 17, 17)
    assert torch.equal(upfirdn2d(x, f, pad=(1, 1, 1, 1), gain=4), by_convolution(x, f, 1, (1, 1, 1, 1), 4.0))


def test_a_filter_that_is_not_separable_keeps_the_convolution():
    torch.manual_seed(2)
    f = torch.rand(4, 4)
    assert ops._separable_taps(f) is None
    x = torch.randn(1, 3, 9, 9)
    assert torch.equal(upfirdn2d(x, f, up=2, pad=(2, 1, 2, 1), gain=4), by_convolution(x, f, 2, (2, 1, 2, 1), 4.0))


def test_a_crop_gives_the_pixels_of_the_whole_map_bit_for_bit():
    """Local steps run the generator on a crop: every output pixel is the same sum whatever the map's size."""
    torch.manual_seed(3)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 3, 40, 40)
    whole = upfirdn2d(x, f, pad=(1, 1, 1, 1), gain=4)
    crop = upfirdn2d(x[:, :, 10:30, 12:28], f, pad=(1, 1, 1, 1), gain=4)
    assert torch.equal(crop[:, :, 1:-1, 1:-1], whole[:, :, 11:28, 13:26])
    up_whole, up_crop = upsample2d(x, f), upsample2d(x[:, :, 10:30, 12:28], f)
    assert torch.equal(up_crop[:, :, 2:-2, 2:-2], up_whole[:, :, 22:58, 26:54])


def test_under_autograd_the_convolution_stays():
    """A drag's steps (gradients through the generator) keep the convolution and its numbers."""
    torch.manual_seed(4)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 3, 9, 9, requires_grad=True)
    assert torch.equal(upsample2d(x, f), by_convolution(x, f, 2, (2, 1, 2, 1), 4.0))
    with torch.no_grad():
        assert not torch.equal(upsample2d(x, f), by_convolution(x, f, 2, (2, 1, 2, 1), 4.0))  # the separable sums


def test_a_filter_changed_in_place_is_read_again():
    """The taps are worked out once per filter tensor: a checkpoint loaded into it (in place) is seen."""
    f = setup_filter([1, 3, 3, 1]).clone()
    assert ops._separable_taps(f) == [0.125, 0.375, 0.375, 0.125]
    with torch.no_grad():
        f.copy_(lopsided().float())
    assert ops._separable_taps(f) == pytest.approx([1 / 9, 2 / 9, 5 / 9, 1 / 9])
    f.copy_(torch.rand(4, 4, generator=torch.Generator().manual_seed(0)))
    assert ops._separable_taps(f) is None
