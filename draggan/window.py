"""Local drag steps: run the high-resolution blocks only where the step reads their features.

Without a mask, one drag step reads the feature map in two places only: the tracking window
(r2) around each handle and the motion disc (r1, plus one pixel towards the target). Convolutions
see only a few pixels around each output, so those features, and the gradients that flow back
from them, depend only on a slightly larger box of the block below, and so on down. A step can
therefore compute the low-resolution blocks whole (they are cheap and every pixel matters there)
and the high-resolution ones on a crop with a halo: the same numbers where they are read, for a
fraction of the arithmetic forward and backward. Frames still render the whole image.

`plan_window` picks the boxes, `window_features` runs them. A crop that reaches the map's edge is
exact there too (the crop sees the same zero padding as the whole map). The halo is checked
against whole-map features in the tests.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from stylegan2.networks import Generator

HALO = 5            # extra pixels on each side of a box, at each block's input resolution
MAX_FRACTION = 0.5  # crop a block only where its box covers at most this fraction of its map

Box = tuple[int, int, int, int]  # row0, col0, row1, col1 (ends exclusive)


@dataclasses.dataclass(frozen=True)
class Window:
    first: int          # 0-based index of the first block computed on a crop
    boxes: tuple[Box, ...]  # boxes[k]: the part of block k's output that is kept, for k >= first - 1

    def box(self, k: int) -> Box:
        return self.boxes[k - (self.first - 1)]

    @property
    def origin(self) -> tuple[int, int]:
        """Where the last block's crop sits in its map."""
        return self.boxes[-1][0], self.boxes[-1][1]


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def plan_window(G: Generator, block: int, points_rc: list[list[float]], reach_px: float) -> Window | None:
    """The boxes a step needs when it reads features within `reach_px` image pixels of each point.

    block: the 1-based feature block; points_rc: (row, col) image pixels. None when cropping would not
    save anything (the points are spread over most of the map, or the map is small).
    """
    if not getattr(G.synthesis, "square", True) or not getattr(G.synthesis, "supports_local_steps", True):
        return None  # StyleGAN-Human: whole padded maps (crops would mix in the pad); StyleGAN3: filters, margins
        return None
    blocks = G.synthesis.blocks[:block]
    res = G.img_resolution
    size = blocks[-1].resolution
    scale = size / res
    rows = [p[0] for p in points_rc]
    cols = [p[1] for p in points_rc]

    def native(lo: float, hi: float) -> tuple[int, int]:
        # Native cells the bilinear reads of image pixels lo..hi touch, one more on each side.
        a = math.floor((lo - reach_px + 0.5) * scale - 0.5) - 1
        b = math.ceil((hi + reach_px + 0.5) * scale - 0.5) + 2
        return max(a, 0), min(b, size)

    (r0, r1), (c0, c1) = native(min(rows), max(rows)), native(min(cols), max(cols))
    boxes = [(r0, c0, r1, c1)]
    for k in range(block - 1, 0, -1):  # the part of block k-1's output that block k's box needs
        r0, c0, r1, c1 = boxes[0]
        s = blocks[k - 1].resolution
        boxes.insert(0, (max(r0 // 2 - HALO, 0), max(c0 // 2 - HALO, 0),
                         min(-(-r1 // 2) + HALO, s), min(-(-c1 // 2) + HALO, s)))
    # boxes[k] is block k's; crop from the first block from which every box is small enough.
    first = block
    while first - 1 >= 1 and _area(boxes[first - 1]) <= MAX_FRACTION * blocks[first - 1].resolution ** 2:
        first -= 1
    if first >= block:
        return None
    return Window(first, tuple(boxes[first - 1:]))


def window_features(G: Generator, ws: torch.Tensor, block: int, window: Window, noise_mode: str,
                    use_fp16: bool | torch.dtype = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(the whole maps of blocks 1..window.first, the crop of block `block` at window.origin), with autograd."""
    synthesis = G.synthesis
    block_ws = synthesis.block_ws(ws.to(torch.float32))
    whole = synthesis.features(ws, stop=window.first, noise_mode=noise_mode, use_fp16=use_fp16)
    r0, c0, r1, c1 = window.box(window.first - 1)
    x, origin = whole[-1][:, :, r0:r1, c0:c1], (r0, c0)
    for k in range(window.first, block):
        origin = (2 * origin[0], 2 * origin[1])
        x = synthesis.blocks[k].features(x, block_ws[k], noise_mode, use_fp16, origin=origin)
        r0, c0, r1, c1 = window.box(k)
        x = x[:, :, r0 - origin[0]:r1 - origin[0], c0 - origin[1]:c1 - origin[1]]
        origin = (r0, c0)
    return whole, x
