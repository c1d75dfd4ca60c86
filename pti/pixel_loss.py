"""The offline pixel loss: what inversion optimizes when the perceptual (VGG/LPIPS) weights cannot be had.

A photo can then still be inverted and edited offline, less faithfully in texture: the loss sees
pixels, not features. It is used only when `pti.load_inversion_loss` cannot get the perceptual
weights (offline, nothing cached), and every place that reports on an inversion names it
(`description`).

The distance between two images in [-1, 1], per image of the batch, over a pyramid of `levels`
scales (each a 2x2 average of the one above, down to 8 px):
    sum over levels of  mse(a, b) + ssim_weight * (1 - SSIM(a, b))
SSIM (Wang et al. 2004) on images mapped to [0, 1], with a 7-tap Gaussian window (sigma 1.5),
constants C1 = 0.01^2, C2 = 0.03^2, and reflected borders. The structural term keeps edges and local
contrast that a plain L2 blurs away; the coarse levels let the projection see where the large shapes
are before the fine detail matches. Images larger than `max_size` are area-downsampled first,
as the perceptual distance does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

C1, C2 = 0.01 ** 2, 0.03 ** 2


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).reshape(1, 1, size, size)


class PixelDistance(torch.nn.Module):
    """Multi-scale pixel L2 + structural (SSIM) distance, with the interface of `PerceptualDistance`:
    `features(img)` once for a fixed target, `distance(fa, fb)` -> [batch], or `d(a, b)`."""

    name = "pixel"
    description = "the offline pixel loss (no perceptual weights)"
    learned = False
    offline = True
    # Inversion stops tuning early when the distance falls below a threshold calibrated for LPIPS; this
    # distance has another scale, so tuning runs its whole step budget (see pti.inversion).
    stop_threshold = 0.0

    def __init__(self, max_size: int = 256, levels: int = 4, ssim_weight: float = 1.0):
        super().__init__()
        self.max_size, self.levels, self.ssim_weight = max_size, levels, ssim_weight
        self.register_buffer("window", _gaussian_window())
        self.fallback_reason = ""  # why the perceptual weights could not be had, when this stands in for them
        self.eval().requires_grad_(False)

    def features(self, img: torch.Tensor, max_size: int | None = None) -> list[torch.Tensor]:
        """img [batch, 3, H, W] in [-1, 1] -> the pyramid [batch, 3, h, w] in [0, 1], finest first."""
        size = self.max_size if max_size is None else max_size
        x = (img.float() + 1) / 2
        if x.shape[-1] > size or x.shape[-2] > size:
            x = F.interpolate(x, size=(size, size), mode="area")
        pyramid = [x]
        while len(pyramid) < self.levels and min(pyramid[-1].shape[-2:]) >= 16:
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        return pyramid

    def _ssim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean SSIM [batch] of two [batch, 3, h, w] images in [0, 1]."""
        c = a.shape[1]
        win = self.window.to(a.dtype).expand(c, 1, *self.window.shape[-2:])
        pad = self.window.shape[-1] // 2

        def blur(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), win, groups=c)

        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a.square()
        var_b = blur(b * b) - mu_b.square()
        cov = blur(a * b) - mu_a * mu_b
        ssim = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a.square() + mu_b.square() + C1) * (var_a + var_b + C2))
        return ssim.mean(dim=(1, 2, 3))

    def distance(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """Distance [batch] between two `features` outputs."""
        total = 0
        for a, b in zip(fa, fb):
            a, b = torch.broadcast_tensors(a, b)
            mse = (2 * (a - b)).square().mean(dim=(1, 2, 3))  # on the [-1, 1] scale, as inversion's pixel MSE
            total = total + mse + self.ssim_weight * (1 - self._ssim(a, b))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor, max_size: int | None = None) -> torch.Tensor:
        return self.distance(self.features(a, max_size), self.features(b, max_size))


def load_inversion_loss(device: torch.device | str = "cpu", max_size: int = 256, **perceptual_options):
    """The loss photo inversion optimizes: the perceptual distance (`load_perceptual`, with its options) when
    its weights can be had, else the offline pixel loss, whose `fallback_reason` says why.

    Falls back only when weights are missing and the Hub cannot be reached (or HF_HUB_OFFLINE is set); a
    damaged or unreadable weights file still raises PerceptualWeightsError, and so does any failure when
    the caller named a weights file (vgg_path / lpips_path): they asked for the perceptual loss.
    """
    from .perceptual import PerceptualWeightsError, load_perceptual

    if perceptual_options.get("vgg_path") or perceptual_options.get("lpips_path"):
        return load_perceptual(device, max_size=max_size, **perceptual_options)
    try:
        return load_perceptual(device, max_size=max_size, **perceptual_options)
    except PerceptualWeightsError as e:
        if not e.missing:
            raise
        loss = PixelDistance(max_size=max_size).to(device)
        loss.fallback_reason = str(e)
        return loss
