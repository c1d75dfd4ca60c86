"""Reading a feature map as if it had been resized to the image, without resizing it.

The official drag step resizes the block-6 feature map to the image size
(`F.interpolate(..., mode='bilinear', align_corners=False)`) and then reads a few
hundred pixels of it. Every value of that resized map is a bilinear sample of the
native map at a known position, so we sample the native map at exactly those
positions instead: the same numbers for a fraction of the memory traffic.

Coordinates here are (row, col) in image pixels, as float tensors `[..., 2]`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


Origin = tuple[int, int]


def _native_grid(rowcol: torch.Tensor, image_size: int, feat: torch.Tensor, origin: Origin = (0, 0),
                 size: int | None = None) -> torch.Tensor:
    """Image-pixel (row, col) -> grid_sample coordinates (x, y) on the native map (align_corners=True).

    PyTorch's bilinear resize (align_corners=False) reads source position
    (dst + 0.5) * in/out - 0.5, clamped at 0, for destination pixel `dst`.
    `feat` may be a crop of the native map (of side `size`) whose pixel (0, 0) is `origin` there.
    """
    size = feat.shape[-1] if size is None else size
    src = ((rowcol + 0.5) * (size / image_size) - 0.5).clamp(min=0)
    if origin != (0, 0):
        src = src - torch.tensor(origin, dtype=src.dtype, device=src.device)
    extent = torch.tensor([max(feat.shape[-2] - 1, 1), max(feat.shape[-1] - 1, 1)], dtype=src.dtype,
                          device=src.device)
    grid = src / extent * 2 - 1
    return grid.flip(-1)  # grid_sample wants (x, y)


def sample_resized(feat: torch.Tensor, rowcol: torch.Tensor, image_size: int, origin: Origin = (0, 0),
                   size: int | None = None) -> torch.Tensor:
    """Values of `feat` resized to image_size x image_size, at integer pixels `rowcol` inside the image.

    feat: [1, C, s, s], or a crop [1, C, h, w] at `origin` of a map of side `size` that holds
    every native pixel the samples read; rowcol: [..., 2] -> [C, ...].
    """
    shape = rowcol.shape[:-1]
    grid = _native_grid(rowcol.reshape(1, 1, -1, 2).to(feat.dtype), image_size, feat, origin, size)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=True)  # [1, C, 1, P]
    return out.reshape(feat.shape[1], *shape)


def sample_resized_bilinear(feat: torch.Tensor, pos: torch.Tensor, image_size: int, origin: Origin = (0, 0),
                            size: int | None = None) -> torch.Tensor:
    """Bilinear sample of the resized map at float image positions `pos` ([..., 2] row, col).

    Equals `F.grid_sample(resized, ..., align_corners=True)` with zero padding, as the
    official motion supervision reads F(q + d): the four neighbouring resized pixels,
    each itself a sample of the native map, weighted bilinearly; pixels outside count 0.
    -> [C, ...]
    """
    base = pos.floor()
    frac = pos - base                                   # [..., 2]
    corners = base.unsqueeze(-2) + torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=pos.dtype,
                                                device=pos.device)  # [..., 4, 2]
    wr = torch.stack([1 - frac[..., 0], 1 - frac[..., 0], frac[..., 0], frac[..., 0]], dim=-1)
    wc = torch.stack([1 - frac[..., 1], frac[..., 1], 1 - frac[..., 1], frac[..., 1]], dim=-1)
    inside = ((corners >= 0) & (corners <= image_size - 1)).all(-1)
    weight = wr * wc * inside                           # [..., 4]
    values = sample_resized(feat, corners.clamp(0, image_size - 1), image_size, origin, size)  # [C, ..., 4]
    return (values * weight.to(values.dtype)).sum(-1)


def downsample_mask(mask: torch.Tensor, feat_size: int) -> torch.Tensor:
    """[H, W] {0,1} mask -> [1, 1, s, s] fraction of each feature cell it covers."""
    return F.adaptive_avg_pool2d(mask[None, None].float(), feat_size)
