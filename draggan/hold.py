"""The held mask (`DragConfig.hold`, on by default): what is outside the painted area stays exactly as it was.

No latent term keeps a small area of a StyleGAN image fixed while the rest moves: W+ rows act on the whole
picture, and every per-step term measured (docs/mask.md) either lets the outside change or stalls the drag.
So the drag runs with whatever mask term is chosen (by default none: as without a mask), and every picture it
shows is a blend: the latent's own picture inside the
painted area, the picture from before the drag outside it, over a short ramp just inside the painted edge

    shown = alpha * picture + (1 - alpha) * before      alpha: 0 outside the painted area, rising to 1 over
                                                        `ramp_width(res)` px inside its edge

The unpainted pixels are the start picture's, bit for bit; with no mask term the handles move as far and as fast
as without a mask. What it costs: the shown picture is not the latent's own picture any more (the editor keeps
the `Hold` beside its latent, for Undo, the next drag and the video), and a drag that moves the whole head shows
a seam at the painted edge, softened by the ramp (a mask term makes the latent move less outside, so the seam is
smaller, at the cost of the drag's reach: docs/mask.md). A drag without a mask (or with the hold off) lets the
whole picture follow the latent again.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator, NamedTuple

import cv2
import numpy as np

from .config import DragFrame
from .engine import partial_mask, render

if TYPE_CHECKING:
    from .config import DragJob


def ramp_width(resolution: int) -> int:
    """Pixels over which the latent's picture fades in inside the painted edge: 2 at 64 px, 16 at 512."""
    return max(1, resolution // 32)


def edge_ramp(editable: np.ndarray, width: int) -> np.ndarray:
    """alpha [H, W] uint8 (0-255): 0 on every unpainted pixel, k/(width+1) on the painted pixels k px from the
    nearest unpainted one, 255 from width+1 px in."""
    inside = np.ascontiguousarray(editable, dtype=np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)   # 0 on unpainted pixels, distance to one elsewhere
    return np.round(np.clip(dist / (width + 1), 0.0, 1.0) * 255).astype(np.uint8)


class Layers(NamedTuple):
    """A hold decoded for blending: alpha [H, W, 1] and (255 - alpha) * before + 127, both uint16 (at most
    255 * 255 + 127, so no sum below overflows)."""
    alpha: np.ndarray
    base: np.ndarray

    def blend(self, picture: np.ndarray) -> np.ndarray:
        """round((alpha * picture + (255 - alpha) * before) / 255) as uint8: x // 255 computed as
        (x + 1 + (x >> 8)) >> 8, which equals it for every x below 65535 (tested), without a division."""
        x = self.alpha * picture + self.base          # uint16: picture is promoted, at most 65152
        x += 1 + (x >> 8)
        return (x >> 8).astype(np.uint8)


class Hold:
    """The picture kept outside the painted area, with its alpha, stored as one lossless PNG (RGBA): a few
    kilobytes at 64 px, about 2 MB at 1024, since every undo step keeps its own."""

    def __init__(self, before: np.ndarray, editable: np.ndarray):
        """before: [H, W, 3] uint8, the picture as shown when the drag started; editable: [H, W] bool."""
        assert before.shape[:2] == editable.shape and before.dtype == np.uint8, (before.shape, editable.shape)
        alpha = edge_ramp(editable, ramp_width(editable.shape[0]))
        ok, png = cv2.imencode(".png", np.dstack([before[..., ::-1], alpha]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok
        self.png = png.tobytes()

    @property
    def nbytes(self) -> int:
        return len(self.png)

    def layers(self) -> "Layers":
        """The kept picture and its alpha, decoded: decode once and blend every frame of a drag or a video with
        them (`held`, the editor's export); a decode costs more than a blend (about 75 and 16 ms at 1024 px)."""
        bgra = cv2.imdecode(np.frombuffer(self.png, np.uint8), cv2.IMREAD_UNCHANGED)
        alpha = bgra[..., 3:].astype(np.uint16)
        return Layers(alpha, (255 - alpha) * bgra[..., 2::-1] + 127)

    def apply(self, picture: np.ndarray) -> np.ndarray:
        """The picture as shown: `picture` inside the painted area, the kept one outside (integer blend, exact
        where alpha is 0 or 255)."""
        return self.layers().blend(picture)

    def __getstate__(self) -> dict:   # a job sent to another process carries its hold as bytes
        return {"png": self.png}

    def __setstate__(self, state: dict) -> None:
        self.png = state["png"]


def job_hold(job: "DragJob") -> Hold | None:
    """The hold a drag shows its pictures through: with `config.hold` and a mask that leaves something fixed, the
    start picture (`job.image`, or the start latent's) outside the painted area; else None."""
    if not job.config.hold or not partial_mask(job.editable):
        return None
    before = job.image if job.image is not None else render(job.G, job.w_start, job.noise_mode)
    return Hold(np.asarray(before), job.editable.detach().cpu().numpy())


def held(frames: Iterator[DragFrame], hold: Hold | None) -> Iterator[DragFrame]:
    """`frames` with each picture shown through `hold` (unchanged when there is none)."""
    layers = None  # decoded at the first picture, once per drag
    for frame in frames:
        if hold is not None and frame.image is not None:
            if layers is None:
                layers = hold.layers()
            frame = dataclasses.replace(frame, image=layers.blend(frame.image))
        yield frame
