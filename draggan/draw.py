"""Drawing points, arrows and masks over images.

Used by the app (every streamed frame) and by video export, so both look the same.
Images are [H, W, 3] uint8 RGB; points are (x, y) image pixels.

Every mark is drawn in three layers, widest first: a light halo, a dark outline, then the
colour. Whatever the background (a red pupil, blue sky, black fur, a white wall) either the
halo or the outline contrasts with it, so the point never vanishes into the image.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

HANDLE_RGB = (230, 40, 40)    # handles: filled red discs
TARGET_RGB = (40, 90, 235)    # targets: filled blue squares (a different shape, not only a different colour)
OUTLINE_RGB = (15, 15, 15)    # dark outline around every mark and digit
HALO_RGB = (255, 255, 255)    # light halo outside the outline
MASK_RGB = (255, 255, 255)

VIEW_MIN_PX = 512             # draw_points' default: small images are enlarged to at least this size


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """`image` [H, W, C] made `scale` times larger by repeating pixels (nearest neighbour); a copy."""
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, not {scale}")
    if scale == 1:
        return image.copy()
    return cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def marker_radius(view_h: int, view_w: int) -> int:
    """Radius in view pixels of a point's coloured centre: 2% of the short side, 5..16 px."""
    return int(min(16, max(5, round(min(view_h, view_w) / 50))))


def draw_points(image: np.ndarray, handles_xy: Sequence[Sequence[float]], targets_xy: Sequence[Sequence[float]],
                scale: int | None = None) -> np.ndarray:
    """Numbered handles (red discs), targets (blue squares) and an arrow from each handle to its target.

    The image is first enlarged `scale` times (nearest neighbour; view pixels per image pixel;
    by default so the long side is >= 512) and the marks are sized for that view, so a copy
    of the enlarged size is returned. Handles without a target yet are drawn alone.
    """
    h, w = image.shape[:2]
    if scale is None:
        scale = max(1, math.ceil(VIEW_MIN_PX / max(h, w)))
    out = np.ascontiguousarray(enlarge(image, scale))
    r = marker_radius(*out.shape[:2])
    line = max(2, r // 3)   # arrow width and outline width, view pixels

    def view(p: Sequence[float]) -> tuple[int, int]:
        # Centre of image pixel (x, y) in view pixels.
        return round((p[0] + 0.5) * scale - 0.5), round((p[1] + 0.5) * scale - 0.5)

    handles = [view(p) for p in handles_xy]
    targets = [view(p) for p in targets_xy]
    for hp, tp in zip(handles, targets):
        _arrow(out, hp, tp, r, line)
    for tp in targets:
        _square(out, tp, r, line)
    for i, hp in enumerate(handles):
        _disc(out, hp, r, line)
        _number(out, str(i + 1), (hp[0] + r + line, hp[1] - r - line), r, line)
    return out


def _disc(out: np.ndarray, c: tuple[int, int], r: int, line: int) -> None:
    cv2.circle(out, c, r + 2 * line, HALO_RGB, -1, cv2.LINE_AA)
    cv2.circle(out, c, r + line, OUTLINE_RGB, -1, cv2.LINE_AA)
    cv2.circle(out, c, r, HANDLE_RGB, -1, cv2.LINE_AA)


def _square(out: np.ndarray, c: tuple[int, int], r: int, line: int) -> None:
    for half, rgb in ((r + 2 * line, HALO_RGB), (r + line, OUTLINE_RGB), (r, TARGET_RGB)):
        cv2.rectangle(out, (c[0] - half, c[1] - half), (c[0] + half, c[1] + half), rgb, -1)


def _arrow(out: np.ndarray, start: tuple[int, int], end: tuple[int, int], r: int, line: int) -> None:
    """A light arrow with a dark outline, from the edge of the handle's mark to the edge of the target's."""
    d = np.subtract(end, start, dtype=float)
    length = float(np.hypot(*d))
    gap = r + 2 * line                      # the marks' outer radius: the arrow runs between them
    if length <= 2 * gap + 2 * line:
        return                              # the marks touch; an arrow would be hidden under them
    u = d / length
    a = tuple(int(v) for v in np.round(start + u * gap))
    b = tuple(int(v) for v in np.round(end - u * gap))
    tip = min(0.5, 2.5 * r / (length - 2 * gap))  # arrowhead ~2.5 marker radii long, as a fraction of the shaft
    cv2.arrowedLine(out, a, b, OUTLINE_RGB, line + 4, cv2.LINE_AA, tipLength=tip)
    cv2.arrowedLine(out, a, b, HALO_RGB, line, cv2.LINE_AA, tipLength=tip)


def _number(out: np.ndarray, text: str, corner: tuple[int, int], r: int, line: int) -> None:
    """`text` in white with a dark outline and a light halo, lower-left corner near `corner`, ~2.4r px tall."""
    font = cv2.FONT_HERSHEY_DUPLEX
    size = 2.4 * r / 22  # Hershey digits are ~22 px tall at size 1
    (tw, th), base = cv2.getTextSize(text, font, size, line)
    pad = 2 * line + 1
    # Glyph mask in a small tile, grown into the outline and halo rings (thick strokes of
    # Hershey fonts do not grow evenly, so the rings are made by dilation).
    tile = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(tile, text, (pad, pad + th), font, size, 255, line, cv2.LINE_AA)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * line + 1, 2 * line + 1))
    outline = cv2.dilate(tile, disc)
    halo = cv2.dilate(outline, disc)
    x0 = min(max(corner[0] - pad, 0), out.shape[1] - tile.shape[1])   # keep the number inside the view
    y0 = min(max(corner[1] - pad - th, 0), out.shape[0] - tile.shape[0])
    if x0 < 0 or y0 < 0:
        return  # a view smaller than one digit
    roi = out[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]].astype(np.float32)
    for mask, rgb in ((halo, HALO_RGB), (outline, OUTLINE_RGB), (tile, HALO_RGB)):
        a = mask[..., None].astype(np.float32) / 255
        roi = roi * (1 - a) + np.float32(rgb) * a
    out[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]] = np.round(roi).astype(np.uint8)


def draw_mask(image: np.ndarray, editable: np.ndarray | None, alpha: float = 0.35) -> np.ndarray:
    """Dim the area outside the editable mask (the part the drag keeps fixed)."""
    if editable is None:
        return image
    if editable.shape[:2] != image.shape[:2]:
        editable = cv2.resize(editable.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    fixed = ~(editable > 0)
    out = image.astype(np.float32)
    out[fixed] = out[fixed] * (1 - alpha)
    return out.astype(np.uint8)
