"""The small pieces of NVIDIA's StyleGAN2 in plain PyTorch: activation, FIR resampling, modulated convolution.

No custom CUDA ops and nothing compiled. `stylegan2.networks` builds the layers from these and
re-exports them under their old names.
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2.0)  # NVIDIA's def_gain for 'lrelu' keeps the signal's magnitude
LRELU_ALPHA = 0.2


# ----------------------------------------------------------------------------
# Small pieces.

def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, inplace: bool = False) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by `gain`, clamp (NVIDIA's bias_act).

    inplace: overwrite `x` (a fresh tensor the caller owns, outside autograd), which saves
    allocating and first-touching a full-size buffer per operation at high resolutions.
    """
    if act not in ("linear", "lrelu"):
        raise ValueError(f"unsupported activation {act!r}")
    if act == "lrelu" and gain is None:
        gain = LRELU_GAIN
    if b is not None:
        b = b.reshape([1, -1] + [1] * (x.ndim - 2))
        x = x.add_(b) if inplace else x + b
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_ALPHA, inplace=inplace)
    if gain is not None and gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def setup_filter(f: list[float]) -> torch.Tensor:
    """The 2D FIR filter NVIDIA stores as `resample_filter`: outer product of `f`, normalized to sum 1."""
    f1 = torch.as_tensor(f, dtype=torch.float32)
    f2 = torch.outer(f1, f1)
    return f2 / f2.sum()


SEPARABLE_CHANNELS = 4  # upfirdn2d: inputs with at most this many channels take the separable path on CPUs


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1), convolve with the 2D filter `f` scaled by `gain`.

    The reference implementation of NVIDIA's op for the cases StyleGAN2's generator uses
    (no downsampling, non-negative padding, filter not flipped). An image (at most SEPARABLE_CHANNELS
    channels: the generator's RGB skip) in float32 on a CPU, without autograd, with a separable filter
    (StyleGAN2's [1, 3, 3, 1] outer product) runs as `_separable_upfirdn2d`: the same sums, grouped by axis.
    oneDNN's depthwise convolution vectorizes over channels, so with 3 it idles: an image's 2x upsampling at
    256 -> 512 px takes 3-4 ms that way and 0.4 ms here; with 16 channels or more the convolution is as fast or
    faster (measured up to 512 channels), so feature maps keep it. Under autograd the convolution stays too: it
    saves one input for backward where the separable path would save a tensor per tap.
    """
    if (x.shape[1] <= SEPARABLE_CHANNELS and x.device.type == "cpu" and x.dtype == torch.float32 and up in (1, 2)
            and not (x.requires_grad and torch.is_grad_enabled())):
        taps = _separable_taps(f)
        if taps is not None:
            return _separable_upfirdn2d(x, taps, up, pad, gain)
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    return fir_conv(x, fir_weight(f, gain, c, x.dtype), pad)  # true convolution, as NVIDIA's flip_filter=False


def fir_conv(x: torch.Tensor, weight: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """`upfirdn2d`'s depthwise convolution of x (zeros already inserted) with `fir_weight`'s weight, padded (x0, x1,
    y0, y1)."""
    if len(set(pad)) == 1:  # symmetric: let the conv pad, saving a copy of the activations
        return F.conv2d(x, weight, padding=pad[0], groups=x.shape[1])
    return F.conv2d(F.pad(x, list(pad)), weight, groups=x.shape[1])


_TAPS: dict[int, tuple[weakref.ref, int, list[float] | None]] = {}  # id(f) -> (f, its version, its taps)


def _separable_taps(f: torch.Tensor) -> list[float] | None:
    """The 1-D filter g of a 2-D filter f = outer(g, g) (to float32 rounding), as floats; None if f is not one.
    Worked out once per filter tensor (about 0.1 ms; a generator has a few, each used per render) and again
    only when it changes in place."""
    known = _TAPS.get(id(f))
    if known is not None and known[0]() is f and known[1] == f._version:
        return known[2]
    taps = _taps_of(f)
    if len(_TAPS) > 256:
        _TAPS.clear()
    _TAPS[id(f)] = (weakref.ref(f), f._version, taps)
    return taps


def _taps_of(f: torch.Tensor) -> list[float] | None:
    if f.ndim != 2 or f.shape[0] != f.shape[1]:
        return None
    f = f.double()
    total = float(f.sum())
    if total <= 0:
        return None
    g = f.sum(dim=1) / math.sqrt(total)                     # f = outer(a, a): row sums a * sum(a), sum(f) = sum(a)^2
    if not torch.allclose(torch.outer(g, g), f, rtol=1e-6, atol=1e-7 * float(f.abs().max())):
        return None
    return g.tolist()


def _fir_axis(x: torch.Tensor, dim: int, taps: list[float], up: int, p0: int, p1: int) -> torch.Tensor:
    """One axis of upfirdn2d: upsample `dim` by zero insertion (up 1 or 2), pad by (p0, p1) zeros, correlate with
    `taps` (already flipped and scaled). Output pixel k sums taps[j] * (upsampled, padded)[k + j]; with up 2 the
    zeros are skipped: output k = 2m + r reads x[m + (r + j - p0) / 2] for the j of matching parity."""
    n, K = x.shape[dim], len(taps)
    n_out = n * up + p0 + p1 - K + 1
    if up == 1:
        xp = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [p0, p1]) if p0 or p1 else x
        out = xp.narrow(dim, 0, n_out) * taps[0]
        for j in range(1, K):
            out = out.add_(xp.narrow(dim, j, n_out), alpha=taps[j])
        return out
    if n_out % 2:
        raise ValueError("separable upfirdn2d: odd output size with up=2")
    m = n_out // 2
    lo = max(0, -min((r + j - p0) // 2 for r in (0, 1) for j in range(K)))
    hi = max(0, max(m + (r + j - p0) // 2 for r in (0, 1) for j in range(K)) - n)
    xp = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [lo, hi])
    phases = []
    for r in (0, 1):
        out = None
        for j in range(K):
            if (r + j - p0) % 2:
                continue                                      # this tap meets an inserted zero
            part = xp.narrow(dim, lo + (r + j - p0) // 2, m)
            out = part * taps[j] if out is None else out.add_(part, alpha=taps[j])
        phases.append(out)
    return torch.stack(phases, dim=dim + 1).flatten(dim, dim + 1)


def _separable_upfirdn2d(x: torch.Tensor, taps: list[float], up: int, pad: tuple[int, int, int, int],
                         gain: float) -> torch.Tensor:
    """`upfirdn2d` for f = outer(taps, taps), one axis at a time: the products and sums of the 2-D filter's,
    grouped by axis, with no zero inserted and no multiply by one. An image's 2x upsampling at 512 -> 1024 px
    takes 5 ms here against 69 ms through oneDNN's depthwise convolution; each pixel's sum is the same whatever
    the map's size, so a crop gives the whole map's numbers."""
    g = [t * math.sqrt(gain) for t in reversed(taps)]        # a true convolution: the filter flipped
    if max(x.shape[2:]) <= MATRIX_SIDE:
        rows = _fir_matrix(x.shape[2], tuple(g), up, pad[2], pad[3], x)
        cols = _fir_matrix(x.shape[3], tuple(g), up, pad[0], pad[1], x)
        return torch.matmul(torch.matmul(rows, x), cols.t())
    x = _fir_axis(x, 2, g, up, pad[2], pad[3])
    return _fir_axis(x, 3, g, up, pad[0], pad[1])


MATRIX_SIDE = 64  # _separable_upfirdn2d: maps up to this side run as two matrix products (two calls, not twenty)
_MATRICES: dict[tuple, torch.Tensor] = {}


def _fir_matrix(n: int, taps: tuple[float, ...], up: int, p0: int, p1: int, like: torch.Tensor) -> torch.Tensor:
    """One axis of `_fir_axis` as a matrix [n_out, n] in `like`'s dtype and device: its response to each unit impulse
    (kept per size, taps and padding). Multiplying by it sums the same products as `_fir_axis` (and zeros)."""
    key = (n, taps, up, p0, p1, like.dtype, str(like.device))
    m = _MATRICES.get(key)
    if m is None:
        if len(_MATRICES) > 64:
            _MATRICES.clear()
        eye = torch.eye(n, dtype=like.dtype, device=like.device)
        m = _MATRICES[key] = _fir_axis(eye, 0, list(taps), up, p0, p1).contiguous()
    return m


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def _conv(x: torch.Tensor, w: torch.Tensor, groups: int, up: int, padding: int,
          resample_filter: torch.Tensor | None, laid_out: bool = False) -> torch.Tensor:
    """Grouped conv, or (up > 1) NVIDIA's conv2d_resample: transposed strided conv, then the FIR filter.

    laid_out: `w` is already `conv_layout(w, groups, up)`."""
    if not laid_out:
        w = conv_layout(w, groups, up)
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    assert resample_filter is not None
    p0, p1 = resample_pads(w.shape[-1], resample_filter.shape[-1], up, padding)
    x = F.conv_transpose2d(x, w, stride=up, groups=groups)
    return upfirdn2d(x, resample_filter, pad=(p0, p1, p0, p1), gain=up * up)


def resample_pads(kw: int, fw: int, up: int, padding: int) -> tuple[int, int]:
    """conv2d_resample's FIR padding (before, after) after a transposed conv of kernel kw with stride up."""
    return padding + (fw + up - 1) // 2 - (kw - 1), padding + (fw - up) // 2 - (kw - up)


def conv_layout(w: torch.Tensor, groups: int, up: int) -> torch.Tensor:
    """A conv weight [out, in, kh, kw] as `_conv` convolves with it: as it is, or (up > 1) the transposed
    conv's [groups * in, out / groups, kh, kw]."""
    if up == 1:
        return w
    out_ch, in_ch, kh, kw = w.shape  # out_ch counts all groups
    return w.reshape(groups, out_ch // groups, in_ch, kh, kw).transpose(1, 2).reshape(groups * in_ch, out_ch // groups, kh, kw)


def modulated_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """NVIDIA's per-sample weights: `weight` [out, in, kh, kw] with its input channels scaled by `styles`
    [batch, in], then (demodulate) each output channel normalized; [batch * out, in, kh, kw] in `dtype`.
    For float16 the weight and styles are pre-normalized first (demodulation cancels the scale)."""
    batch = styles.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if dtype == torch.float16 and demodulate:
        weight, styles = _prenormalized(weight), _prenormalized_styles(styles)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # [batch, out, in, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [batch, out]
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    return w.reshape(-1, in_ch, kh, kw).to(dtype)


def _prenormalized(weight: torch.Tensor) -> torch.Tensor:
    """The weight scaled to avoid float16 overflow (demodulation cancels the scale; the styles' part is
    `_prenormalized_styles`)."""
    out_ch, in_ch, kh, kw = weight.shape
    return weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))


def _prenormalized_styles(styles: torch.Tensor) -> torch.Tensor:
    return styles / styles.norm(float("inf"), dim=1, keepdim=True)


def modulated_conv2d(
    x: torch.Tensor,                    # [batch, in, h, w]
    weight: torch.Tensor,               # [out, in, kh, kw]
    styles: torch.Tensor | None,        # [batch, in] (None: given `known`)
    noise: torch.Tensor | None = None,  # broadcastable to the output
    up: int = 1,                        # 1 or 2
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool | None = None,          # None: decide by whether the styles need gradients
    known: tuple[torch.Tensor, ...] | None = None,  # what a path computes from the weight and styles, computed before
    known_weight: tuple[torch.Tensor, ...] | None = None,  # `weight_parts(...)`, computed before
) -> torch.Tensor:
    """NVIDIA's modulated convolution (styles scale the weight's input channels, then demodulation).

    Two equivalent ways to run it, chosen by what needs gradients: when the styles need
    one (a drag, or training), scale the activations around one shared-weight conv, so
    backward never forms per-sample weight gradients; otherwise fuse everything into one
    grouped conv with per-sample weights (NVIDIA's inference path).

    What is computed from the weight alone (`known_weight`) or, for styles no gradient is wanted for,
    from the weight and styles (`known`) may come from before: the same numbers. known: fused,
    (`conv_layout(modulated_weight(...))`,); not fused, `unfused_parts(...)`.
    """
    batch = x.shape[0]
    if fused is None:
        fused = not (torch.is_grad_enabled() and styles is not None and styles.requires_grad)
    if fused:
        (w,) = known if known is not None else (conv_layout(modulated_weight(weight, styles, demodulate, x.dtype), batch, up),)
        x = _conv(x.reshape(1, -1, *x.shape[2:]), w, batch, up, padding, resample_filter, laid_out=True)
        x = x.reshape(batch, -1, *x.shape[2:])  # from [1, batch*out, h, w]
    else:
        if known is None:
            known = unfused_parts(weight, styles, demodulate, x.dtype, up, known_weight)
        styles, w, dcoefs = known
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = _conv(x, w, 1, up, padding, resample_filter, laid_out=True)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
    if noise is not None:
        x = x.add_(noise.to(x.dtype)) if not x.requires_grad else x + noise.to(x.dtype)
    return x


def weight_parts(weight: torch.Tensor, demodulate: bool, dtype: torch.dtype, up: int,
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the unfused path computes from the weight alone: (the weight in `dtype` in `conv_layout`, the sum
    of its squares over the kernel for demodulation or None), pre-normalized for float16."""
    if dtype == torch.float16 and demodulate:
        weight = _prenormalized(weight)
    return conv_layout(weight.to(dtype), 1, up), weight.square().sum(dim=[2, 3]) if demodulate else None


def unfused_parts(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, dtype: torch.dtype, up: int = 1,
                  known_weight: tuple[torch.Tensor, torch.Tensor | None] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What the unfused path multiplies and convolves by: (styles, the weight as `weight_parts`, the
    demodulation coefficients [batch, out] or None), pre-normalized for float16."""
    w, squares = known_weight if known_weight is not None else weight_parts(weight, demodulate, dtype, up)
    if dtype == torch.float16 and demodulate:
        styles = _prenormalized_styles(styles)
    # sum_{i,k} (W[o,i,k] s[i])^2 without forming the per-sample weights
    return styles, w, (styles.square() @ squares.t() + 1e-8).rsqrt() if demodulate else None


# ----------------------------------------------------------------------------
# Inference: what a layer computes from its parameters alone, kept between renders.

def derived(module: torch.nn.Module, key: str, sources: tuple[torch.Tensor, ...], make) -> tuple:
    """`make(*sources)` (under no_grad), computed once per module and `key`, and again only when a source tensor
    changed in place (its version counter) or was replaced (`.data =`, `.to(...)`: another storage).

    The cache holds detached views of the sources, so a storage it compares with cannot be freed and its address
    reused by another tensor; a deep copy of the module (a per-session generator) has other storages and
    recomputes on first use."""
    cache = module.__dict__.setdefault("_derived", {})
    sig = [(s.data_ptr(), s._version) for s in sources]
    hit = cache.get(key)
    if hit is not None and hit[0] == sig:
        return hit[2]
    with torch.no_grad():
        value = make(*sources)
    cache[key] = (sig, tuple(s.detach() for s in sources), value)
    return value


def fir_weight(f: torch.Tensor, gain: float, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """The depthwise convolution weight [channels, 1, fh, fw] that `upfirdn2d` convolves with (filter flipped:
    a true convolution)."""
    f = (f * gain).to(dtype).flip([0, 1])
    return f[None, None].expand(channels, 1, *f.shape)
