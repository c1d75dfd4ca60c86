"""Local drag steps: run the high-resolution blocks only where the step reads their features.

Without a mask, one drag step reads the feature map in two places only: the tracking window
(r2) around each handle and the motion disc (r1, plus one pixel towards the target). Convolutions
see only a few pixels around each output, so those features, and the gradients that flow back
from them, depend only on a slightly larger box of the block below, and so on down. A step can
therefore compute the low-resolution blocks whole (they are cheap and every pixel matters there)
and the high-resolution ones on crops: the same numbers where they are read, for a fraction of the
arithmetic forward and backward. Frames still render the whole image.

`plan_window` picks the boxes, `window_features` runs them. Each layer computes exactly the pixels
the layer above reads (`conv0_reads`, `conv1_reads`: a 3x3 conv reads one pixel around its output,
the 2x-up conv0 input pixel i reaches output pixels 2i-2 .. 2i+3), so every kept pixel sees the same
inputs as on the whole map; pixels near a crop's inner edges, which see zeros instead, are cut off
before the next layer reads them. A crop that reaches the map's edge is exact there too (the crop
sees the same zero padding as the whole map). Both are checked against whole-map features in the tests.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from stylegan2.networks import Generator

MARGIN = 0          # extra pixels kept around what each layer needs (0: exactly what it reads)
MAX_FRACTION = 0.5  # crop a block only where its box covers at most this fraction of its map

Box = tuple[int, int, int, int]  # row0, col0, row1, col1 (ends exclusive)


@dataclasses.dataclass(frozen=True)
class Window:
    first: int          # 0-based index of the first block computed on a crop
    boxes: tuple[Box, ...]  # boxes[k]: the part of block k's output that is kept, for k >= first - 1
    mids: tuple[Box, ...] = ()  # mids[k - first]: the part of block k's conv0 output that its conv1 reads

    def box(self, k: int) -> Box:
        return self.boxes[k - (self.first - 1)]

    def mid(self, k: int) -> Box:
        return self.mids[k - self.first]

    @property
    def origin(self) -> tuple[int, int]:
        """Where the last block's crop sits in its map."""
        return self.boxes[-1][0], self.boxes[-1][1]


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def conv1_reads(box: Box, side: int) -> Box:
    """The part of a block's conv0 output that its 3x3 conv1 reads to compute `box` (one pixel around it)."""
    m = MARGIN
    return (max(box[0] - 1 - m, 0), max(box[1] - 1 - m, 0), min(box[2] + 1 + m, side), min(box[3] + 1 + m, side))


def conv0_reads(box: Box, side: int) -> Box:
    """The part of the block below's output that a 2x-up conv0 (transposed 3x3, stride 2, then the 4-tap
    FIR filter) reads to compute `box`: input pixel i reaches output pixels 2i-2 .. 2i+3."""
    m = MARGIN
    lo = lambda a: max(-((3 - a) // 2) - m, 0)      # ceil((a - 3) / 2)
    hi = lambda b: min((b + 1) // 2 + 1 + m, side)  # floor((b - 1 + 2) / 2), exclusive
    return lo(box[0]), lo(box[1]), hi(box[2]), hi(box[3])


def plan_window(G: Generator, block: int, points_rc: list[list[float]], reach_px: float,
                first: int | None = None) -> Window | None:
    """The boxes a step needs when it reads features within `reach_px` image pixels of each point.

    block: the 1-based feature block; points_rc: (row, col) image pixels. None when cropping would not
    save anything (the points are spread over most of the map, or the map is small). first: crop from
    this (0-based) block on, whatever the boxes' sizes.
    """
    if not getattr(G.synthesis, "square", True) or not getattr(G.synthesis, "supports_local_steps", True):
        return None  # StyleGAN-Human: whole padded maps (crops would mix in the pad); StyleGAN3: filters, margins
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
    boxes, mids = [(r0, c0, r1, c1)], []
    for k in range(block - 1, 0, -1):  # the part of block k-1's output that block k's box needs
        mids.insert(0, conv1_reads(boxes[0], blocks[k].resolution))
        boxes.insert(0, conv0_reads(mids[0], blocks[k - 1].resolution))
    # boxes[k] is block k's, mids[k - 1] block k's conv0 output; crop from the first block from which every
    # box is small enough.
    if first is None:
        first = block
        while first - 1 >= 1 and _area(boxes[first - 1]) <= MAX_FRACTION * blocks[first - 1].resolution ** 2:
            first -= 1
    if first >= block:
        return None
    return Window(first, tuple(boxes[first - 1:]), tuple(mids[first - 1:]))


def plan_windows(G: Generator, block: int, points_rc: list[list[float]], reach_px: float,
                 ) -> list[tuple[Window, list[int]]] | None:
    """One window per group of points, all cropped from the same block on: [(window, its points' indices)].
    Each point starts alone; two groups merge where one box around both costs less arithmetic than two
    (their crops overlap). Two far-apart handles then cost two small crops instead of one box around both.
    None where no crop saves anything (as `plan_window`)."""
    groups = [[i] for i in range(len(points_rc))]
    alone = [plan_window(G, block, [points_rc[i] for i in g], reach_px) for g in groups]
    if not alone or any(w is None for w in alone):
        return None
    first = min(w.first for w in alone)
    plan = lambda g: plan_window(G, block, [points_rc[i] for i in g], reach_px, first)  # noqa: E731
    wins = [plan(g) for g in groups]
    while len(groups) > 1:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                merged = plan(groups[a] + groups[b])
                gain = _cost(G, wins[a]) + _cost(G, wins[b]) - _cost(G, merged)
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, a, b, merged)
        if best is None:
            break
        _, a, b, merged = best
        groups[a], wins[a] = groups[a] + groups.pop(b), merged
        wins.pop(b)
    return list(zip(wins, groups))


def _cost(G: Generator, window: Window) -> int:
    """Multiply-adds of a window's convolutions (forward; a backward costs about the same): conv0 counted on
    its input (a transposed conv), conv1 on its output."""
    total = 0
    for k in range(window.first, len(window.boxes) + window.first - 1):
        b = G.synthesis.blocks[k]
        total += _area(window.box(k - 1)) * b.in_channels * b.out_channels + _area(window.mid(k)) * b.out_channels ** 2
    return total


def window_features(G: Generator, ws: torch.Tensor, block: int, window: Window, noise_mode: str,
                    use_fp16: bool | torch.dtype = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(the whole maps of blocks 1..window.first, the crop of block `block` at window.origin), with autograd."""
    whole, (crop,) = windows_features(G, ws, block, [window], noise_mode, use_fp16)
    return whole, crop


def windows_features(G: Generator, ws: torch.Tensor, block: int, windows: list[Window], noise_mode: str,
                     use_fp16: bool | torch.dtype = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(the whole maps of blocks 1..first, the crop of block `block` at each window's origin), with autograd.
    Every window crops from the same block `first` on."""
    synthesis = G.synthesis
    block_ws = synthesis.block_ws(ws.to(torch.float32))
    first = windows[0].first
    assert all(w.first == first for w in windows)
    whole = synthesis.features(ws, stop=first, noise_mode=noise_mode, use_fp16=use_fp16)
    crops = []
    for window in windows:
        r0, c0, r1, c1 = window.box(first - 1)
        x, origin = whole[-1][:, :, r0:r1, c0:c1], (r0, c0)
        for k in range(first, block):
            b, w = synthesis.blocks[k], block_ws[k]
            x = x.to(b.dtype_for(ws.device, use_fp16))
            origin = (2 * origin[0], 2 * origin[1])
            x = b.conv0(x, w[:, 0], noise_mode, None, origin)
            x, origin = _crop(x, origin, window.mid(k))
            x = b.conv1(x, w[:, 1], noise_mode, None, origin)
            x, origin = _crop(x, origin, window.box(k))
        crops.append(x)
    return whole, crops


def _crop(x: torch.Tensor, origin: tuple[int, int], box: Box) -> tuple[torch.Tensor, tuple[int, int]]:
    """The part `box` (in map coordinates) of `x`, a crop of that map at `origin`; and its origin."""
    r0, c0, r1, c1 = box
    return x[:, :, r0 - origin[0]:r1 - origin[0], c0 - origin[1]:c1 - origin[1]], (r0, c0)
