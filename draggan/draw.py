"""Drawing points, arrows and masks over images, and writing drags as videos.

Used by the app (every streamed frame) and by the command line (`--video`), so both
look the same. Images are [H, W, 3] uint8 RGB; points are (x, y) image pixels.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from PIL import Image

HANDLE_RGB = (230, 40, 40)
TARGET_RGB = (40, 90, 235)
MASK_RGB = (255, 255, 255)


def draw_points(image: np.ndarray, handles_xy: Sequence[Sequence[float]], targets_xy: Sequence[Sequence[float]],
                scale: float | None = None) -> np.ndarray:
    """Numbered red handles, blue targets and an arrow from each handle to its target, on a copy of `image`.

    Small images are drawn on an enlarged copy (`scale`, by default so the long side is >= 512)
    so the marks stay legible; the result has the enlarged size.
    """
    h, w = image.shape[:2]
    if scale is None:
        scale = max(1, int(np.ceil(512 / max(h, w))))
    out = cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) if scale > 1 else image.copy()
    out = np.ascontiguousarray(out)
    radius = max(4, round(out.shape[1] / 90))
    thick = max(1, radius // 3)

    def px(p):
        return int(round((p[0] + 0.5) * scale - 0.5)), int(round((p[1] + 0.5) * scale - 0.5))

    for i, hp in enumerate(handles_xy):
        if i < len(targets_xy):
            cv2.arrowedLine(out, px(hp), px(targets_xy[i]), (255, 255, 255), thick + 1, cv2.LINE_AA, tipLength=0.15)
    for i, tp in enumerate(targets_xy):
        cv2.circle(out, px(tp), radius, TARGET_RGB, -1, cv2.LINE_AA)
    for i, hp in enumerate(handles_xy):
        cv2.circle(out, px(hp), radius, HANDLE_RGB, -1, cv2.LINE_AA)
        x, y = px(hp)
        cv2.putText(out, str(i + 1), (x + radius, y - radius), cv2.FONT_HERSHEY_SIMPLEX, radius / 12, (255, 255, 255),
                    thick, cv2.LINE_AA)
    return out


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


@contextlib.contextmanager
def _quiet_stderr():
    """Silence native libraries' writes to stderr (file descriptor 2) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 15.0) -> Path:
    """Write RGB frames as .mp4 (OpenCV; H.264 where available, else MPEG-4) or .gif (Pillow)."""
    path = Path(path)
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to write: run a drag first")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    if suffix != ".mp4":
        raise ValueError(f"video must end in .mp4 or .gif, not {path.name!r}")
    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2  # most codecs want even sizes
    for fourcc in ("avc1", "mp4v"):
        with _quiet_stderr():  # FFmpeg reports each encoder it tries and cannot open on stderr
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w2, h2))
        if writer.isOpened():
            break
    else:
        raise RuntimeError("OpenCV could not open an MP4 writer here; export a .gif instead")
    for f in frames:
        writer.write(cv2.cvtColor(np.ascontiguousarray(f[:h2, :w2]), cv2.COLOR_RGB2BGR))
    writer.release()
    return path
