"""The synthesis layers' inference path: one float32 image, no gradient wanted, in few operations.

A render of the 64-px toy model runs about 540 small tensor operations, each costing microseconds of
dispatch whatever its size; at 64 px they took more time than the convolutions themselves. Most of them
recompute, every render, what depends on the parameters alone: the affine layer's scaled weight, the
weight's squared sums for demodulation, the noise times its strength, the bias in broadcast shape, the
FIR filter as a convolution weight. Here a layer keeps those (`ops.derived`: made again when a parameter
changes in place or is replaced) and a render only does what depends on the latent:

    styles = A w + b                                   one matrix product
    demod  = rsqrt(styles^2 @ sum_k W^2 + eps)         the demodulation without forming W * styles first
    conv(x, W * outer(demod, styles)) + noise + bias   then leaky ReLU and clamp, in place

with the leaky ReLU's gain folded into demod, noise and bias (a positive factor commutes with it), and the
toRGB 1x1 convolution as one matrix product with its bias. The same function as the fused path
(`ops.modulated_conv2d`) to float rounding; `SynthesisLayer.forward` and `ToRGBLayer.forward` take it when
`inferring` says so: the drag step (which needs gradients) and half precision never do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ops import LRELU_ALPHA, LRELU_GAIN, derived, fir_conv, fir_weight, resample_pads

# Weights up to this many numbers are kept as a channels-last copy (a 128 x 128 3x3 conv: 147k; 4 MB at most each,
# so a 1024-px generator's 512-channel layers, 2.4M each, add no copy of themselves).
KEEP_CHANNELS_LAST = 1 << 20


def inferring(layer: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether a layer may take the inference path: one float32 image, and no gradient wanted (none enabled, or
    nothing it reads requires one)."""
    if x.shape[0] != 1 or w.shape[0] != 1 or x.dtype != torch.float32:
        return False
    return not torch.is_grad_enabled() or not (x.requires_grad or w.requires_grad
                                               or any(p.requires_grad for p in layer.parameters()))


def _affine_parts(aff: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor, gain: float = 1.0) -> tuple:
    """A `FullyConnectedLayer` (linear) as `torch.addmm(b, w, a_w)` reads it, its output times `gain`:
    (a_w [in_features, out_features], contiguous: MKL's small products prefer it; b [1, out_features])."""
    b = (bias * aff.bias_gain if aff.bias_gain != 1 else bias).unsqueeze(0)
    return (weight * (aff.weight_gain * gain)).t().contiguous(), b * gain if gain != 1 else b


def _layer_parts(layer: torch.nn.Module, affine_weight: torch.Tensor, affine_bias: torch.Tensor,
                 weight: torch.Tensor, bias: torch.Tensor, resample_filter: torch.Tensor, *noise: torch.Tensor) -> tuple:
    """What `synthesis_layer` reads from a layer's parameters: the affine layer's scaled weight and bias; the
    weight's squares summed over the kernel, [in, out], for demodulation, and its eps; the weight as the
    (transposed, for up = 2) conv reads it; the noise times its strength; the bias; the FIR weight. The
    activation's gain is in the demodulation (squares and eps divided by its square), the noise and the bias."""
    g = LRELU_GAIN
    a_w, a_b = _affine_parts(layer.affine, affine_weight, affine_bias)
    squares = (weight.square().sum(dim=[2, 3]) / g ** 2).t().contiguous()
    eps = torch.full([1, 1], 1e-8 / g ** 2, dtype=weight.dtype, device=weight.device)
    noise = noise[0] * noise[1] * g if noise else None
    fir = fir_weight(resample_filter, layer.up ** 2, layer.out_channels, weight.dtype).contiguous() \
        if layer.up > 1 else None
    laid = weight if layer.up == 1 else weight.transpose(0, 1)                     # a view, as the conv reads it
    if weight.numel() <= KEEP_CHANNELS_LAST:  # a channels-last copy: oneDNN's small convolutions run faster from it
        laid = laid.contiguous(memory_format=torch.channels_last)
    return a_w, a_b, squares, eps, laid, noise, (bias * g).reshape(1, -1, 1, 1), fir


def synthesis_layer(layer: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, noise_mode: str,
                    origin: tuple[int, int] | None) -> torch.Tensor:
    """`SynthesisLayer.forward(x, w, noise_mode, origin=origin)` on the inference path (see the module's docstring)."""
    params, buffers, affine = layer._parameters, layer._buffers, layer._modules["affine"]._parameters  # (no
    # nn.Module.__getattr__ per tensor: a render reads these for every layer)
    sources = (affine["weight"], affine["bias"], params["weight"], params["bias"], buffers["resample_filter"])
    if layer.use_noise:
        sources += (buffers["noise_const"], params["noise_strength"])
    a_w, a_b, squares, eps, weight, noise, bias, fir = derived(layer, "infer", sources,
                                                               lambda *t: _layer_parts(layer, *t))
    styles = torch.addmm(a_b, w, a_w)                                              # [1, in]
    demod = torch.addmm(eps, styles.square(), squares).rsqrt_()                    # [1, out], times the gain
    x = x.contiguous(memory_format=torch.channels_last)                            # a no-op after the first layer
    if layer.up == 1:                                                              # weight [out, in, k, k]
        x = F.conv2d(x, weight * (demod.t() * styles).view(*weight.shape[:2], 1, 1), padding=layer.padding)
    else:                                                                          # weight [in, out, k, k]
        x = F.conv_transpose2d(x, weight * (styles.t() * demod).view(*weight.shape[:2], 1, 1), stride=layer.up)
        p0, p1 = resample_pads(weight.shape[-1], fir.shape[-1], layer.up, layer.padding)
        x = fir_conv(x, fir, (p0, p1, p0, p1))
    if layer.use_noise and noise_mode == "const":
        x = x.add_(noise if origin is None else noise[origin[0]:origin[0] + x.shape[2], origin[1]:origin[1] + x.shape[3]])
    elif layer.use_noise and noise_mode == "random":
        x = x.add_(torch.randn([1, 1, *x.shape[2:]], device=x.device) * (params["noise_strength"] * LRELU_GAIN))
    elif noise_mode not in ("random", "const", "none"):
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', not {noise_mode!r}")
    x = F.leaky_relu(x.add_(bias), LRELU_ALPHA, inplace=True)
    clamp = layer.conv_clamp
    return x.clamp_(-clamp, clamp) if clamp is not None and clamp >= 0 else x


def _rgb_parts(layer: torch.nn.Module, affine_weight: torch.Tensor, affine_bias: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor) -> tuple:
    """The toRGB layer's affine weight and bias with its weight gain in them, its weight [out, in], its bias [1, out]."""
    return (*_affine_parts(layer.affine, affine_weight, affine_bias, layer.weight_gain), weight.flatten(1),
            bias.reshape(1, -1))


def to_rgb(layer: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`ToRGBLayer.forward(x, w)` on the inference path: the 1x1 convolution as one matrix product with the bias."""
    params, affine = layer._parameters, layer._modules["affine"]._parameters
    a_w, a_b, weight, bias = derived(layer, "infer", (affine["weight"], affine["bias"], params["weight"], params["bias"]),
                                     lambda *t: _rgb_parts(layer, *t))
    styles = torch.addmm(a_b, w, a_w)                                              # [1, in]
    h, w_ = x.shape[2:]
    pixels = x.permute(0, 2, 3, 1).reshape(h * w_, x.shape[1])                     # a view of a channels-last map
    y = torch.addmm(bias, pixels, (weight * styles).t()).view(1, h, w_, -1).permute(0, 3, 1, 2)
    clamp = layer.conv_clamp
    return y.clamp_(-clamp, clamp) if clamp is not None and clamp >= 0 else y
