"""Recording a drag and writing it as a video every browser plays.

.mp4 is H.264 (yuv420p, even sizes, index at the front for streaming) and .webm is VP9,
both encoded by PyAV, whose wheels ship FFmpeg with libx264 and libvpx (OpenCV's wheels
only have MPEG-4 Part 2, which Chromium refuses). .gif is written by Pillow, kept small:
at most 100 frames, no repeated frames, one palette, about 384 px.
"""
from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Iterable, Sequence, TypeVar

import cv2
import numpy as np
from PIL import Image

from stylegan2.errors import UserError

from .draw import draw_points, enlarge

SUFFIXES = (".mp4", ".webm", ".gif")
T = TypeVar("T")


class VideoError(UserError):
    """A video that cannot be written as asked (no frames, an unknown suffix, no encoder)."""


@dataclass(frozen=True)
class VideoFormat:
    """How one container is written; sizes are the long side in pixels."""
    codec: str                 # PyAV encoder name, or "gif" for Pillow
    min_side: int              # smaller frames are enlarged (whole-number factor, nearest neighbour) to at least this
    max_side: int | None       # larger frames are scaled down to this (None: kept)
    max_frames: int | None     # more frames are subsampled evenly, keeping the first and the last (None: all)
    options: tuple[tuple[str, str], ...] = ()  # encoder options


FORMATS = {
    ".mp4": VideoFormat("libx264", min_side=256, max_side=None, max_frames=None,
                        options=(("crf", "18"), ("preset", "medium"))),
    ".webm": VideoFormat("libvpx-vp9", min_side=256, max_side=None, max_frames=None,
                         options=(("crf", "30"), ("b", "0"), ("deadline", "good"), ("cpu-used", "4"))),
    ".gif": VideoFormat("gif", min_side=256, max_side=384, max_frames=100),
}
GIF_HOLD_LAST_MS = 1000        # the last frame of a GIF stays up this long before it loops


def video_format(path: str | Path) -> VideoFormat:
    """The format for `path`'s suffix; a VideoError names the ones there are."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise VideoError(f"Name the video .mp4, .webm or .gif, not {Path(path).name!r}")
    return FORMATS[suffix]


def enlarge_factor(side: int, fmt: VideoFormat) -> int:
    """Whole-number enlargement for frames whose long side is `side` px: as large as fits
    max_side (GIF), else the least that reaches min_side."""
    at_least = max(1, math.ceil(fmt.min_side / side))
    fits = fmt.max_side // side if fmt.max_side else 0
    return max(at_least, fits)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 15.0,
                max_frames: int | None = None, max_side: int | None = None) -> Path:
    """Write RGB frames [H, W, 3] uint8 as .mp4 (H.264), .webm (VP9) or .gif; returns the path.

    Small frames are enlarged by a whole number (nearest neighbour; see enlarge_factor) and
    frames larger than `max_side` (default: GIF 384, others unlimited) scaled down; more than
    `max_frames` (default: GIF 100, others unlimited) are subsampled evenly.
    """
    path = Path(path)
    fmt = video_format(path)
    frames = list(frames)
    if not frames:
        raise VideoError("No frames to write: run a drag first")
    max_frames = max_frames or fmt.max_frames
    max_side = max_side or fmt.max_side
    if fmt.codec == "gif":
        frames = drop_repeats(frames)
    if max_frames and len(frames) > max_frames:
        frames = [frames[i] for i in even_indices(len(frames), max_frames)]
    factor = enlarge_factor(max(frames[0].shape[:2]), fmt)
    frames = [fit(f, factor, max_side) for f in frames]
    if fmt.codec == "gif":
        _write_gif(frames, path, fps)
    else:
        _encode(frames, path, fps, fmt)
    return path


def even_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), the first and the last included (all of them if k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted(set(np.round(np.linspace(0, n - 1, k)).astype(int).tolist()))


def drop_repeats(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`frames` without a frame equal to the one before it."""
    out = [frames[0]]
    for f in frames[1:]:
        if f.shape != out[-1].shape or not np.array_equal(f, out[-1]):
            out.append(f)
    return out


def fit(frame: np.ndarray, factor: int, max_side: int | None) -> np.ndarray:
    """`frame` enlarged `factor` times (nearest), then scaled down (area) if its long side passes max_side."""
    frame = enlarge(frame, factor) if factor > 1 else frame
    side = max(frame.shape[:2])
    if max_side and side > max_side:
        h, w = frame.shape[:2]
        frame = cv2.resize(frame, (round(w * max_side / side), round(h * max_side / side)),
                           interpolation=cv2.INTER_AREA)
    return frame


def _write_gif(frames: list[np.ndarray], path: Path, fps: float) -> None:
    # One palette for all frames (from the first, middle and last), no dithering: drags
    # change little between frames, so Pillow stores only each frame's changed rectangle.
    sample = np.concatenate([frames[0], frames[len(frames) // 2], frames[-1]], axis=0)
    palette = Image.fromarray(sample).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [round(1000 / fps)] * len(images)
    durations[-1] = max(durations[-1], GIF_HOLD_LAST_MS)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def _encode(frames: list[np.ndarray], path: Path, fps: float, fmt: VideoFormat) -> None:
    try:
        import av
    except ImportError:
        raise VideoError("Writing .mp4 or .webm needs PyAV: pip install av (or name the video .gif)") from None
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2  # yuv420p needs even sizes: repeat the last row/column
    options = {"movflags": "+faststart"} if path.suffix.lower() == ".mp4" else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(fmt.codec, rate=Fraction(fps).limit_denominator(1001), options=dict(fmt.options))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        for f in frames:
            f = np.pad(f, ((0, h2 - h), (0, w2 - w), (0, 0)), mode="edge") if (h2, w2) != (h, w) else f
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames


class EvenSample(Generic[T]):
    """Up to `max_items` items of a stream of unknown length, evenly spaced over all of it.

    Past `max_items`, every other kept item is dropped and from then on only every 2nd (4th, ...)
    item is kept, so the kept items stay evenly spaced however long the stream runs; the first and
    the latest item are always there.
    """

    def __init__(self, max_items: int):
        if max_items < 2:
            raise ValueError(f"max_items must be >= 2, not {max_items}")
        self.max_items = max_items
        self.clear()

    def clear(self) -> None:
        self._kept: list[T] = []
        self._latest: T | None = None  # the latest item when it is not one of the kept ones
        self._added = 0
        self._stride = 1

    def add(self, item: T) -> None:
        n, self._added = self._added, self._added + 1
        if n % self._stride:
            self._latest = item
            return
        self._latest = None
        self._kept.append(item)
        if len(self._kept) >= self.max_items:
            self._kept = self._kept[::2]  # kept items are those at multiples of the stride
            self._stride *= 2

    def items(self) -> list[T]:
        return self._kept + ([self._latest] if self._latest is not None else [])

    def __len__(self) -> int:
        return len(self._kept) + (self._latest is not None)


Record = tuple[bytes, list[list[float]], list[list[float]]]  # (JPEG, handles, targets)


class FrameRecorder:
    """The frames of one drag as they were shown, kept compactly (JPEG) and evenly spaced (`EvenSample`)."""

    def __init__(self, max_frames: int = 300, jpeg_quality: int = 95):
        self._sample: EvenSample[Record] = EvenSample(max_frames)
        self.jpeg_quality = jpeg_quality

    def clear(self) -> None:
        """Forget every frame (a new drag starts)."""
        self._sample.clear()

    def add(self, image: np.ndarray, handles_xy: Sequence[Sequence[float]],
            targets_xy: Sequence[Sequence[float]]) -> None:
        """Record one frame [H, W, 3] uint8 RGB with its points ((x, y) image pixels)."""
        self._sample.add(self._pack(image, handles_xy, targets_xy))

    def __len__(self) -> int:
        return len(self._sample)

    def records(self) -> list[tuple[np.ndarray, list[list[float]], list[list[float]]]]:
        """The recorded frames as (RGB image, handles, targets)."""
        return [(cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
                 handles, targets) for jpeg, handles, targets in self._sample.items()]

    def frames(self, overlay: bool = True, scale: int | None = None) -> list[np.ndarray]:
        """The recorded frames as RGB images; `overlay` draws the points (see draw_points),
        `scale` enlarges them (nearest; by default overlays are drawn on a >= 512-px view)."""
        return [draw_points(image, handles, targets, scale=scale) if overlay else (enlarge(image, scale) if scale else image)
                for image, handles, targets in self.records()]

    def export(self, path: str | Path, overlay: bool = True, fps: float = 15.0) -> Path:
        """Write the recorded drag as .mp4, .webm or .gif (see write_video); returns the path."""
        return export_records(self.records(), path, overlay=overlay, fps=fps)

    def _pack(self, image: np.ndarray, handles_xy, targets_xy) -> tuple[bytes, list[list[float]], list[list[float]]]:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]  # keep colour edges crisp
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        assert ok, "OpenCV failed to encode a JPEG"
        return buf.tobytes(), [list(map(float, p)) for p in handles_xy], [list(map(float, p)) for p in targets_xy]


class StepRecorder:
    """Every step of one drag as its latent (and tracked points), evenly spaced (`EvenSample`): latents are
    cheap to keep, so the video shows the whole drag whatever the app streamed; images are rendered at export.

    Latents stay where the drag computed them (no host sync per step). Handles are (row, col) tensors or
    None (a learned step that was not tracked: the video shows the last known handles there).
    """

    def __init__(self, max_steps: int = 300):
        self._sample: EvenSample[tuple[object, object | None]] = EvenSample(max_steps)
        self.targets_xy: list[list[float]] = []
        self.start_xy: list[list[float]] = []

    def clear(self, targets_xy: Sequence[Sequence[float]] = (), start_xy: Sequence[Sequence[float]] = ()) -> None:
        self._sample.clear()
        self.targets_xy = [list(map(float, p)) for p in targets_xy]
        self.start_xy = [list(map(float, p)) for p in start_xy]  # the handles before the first tracked step

    def add(self, step: int, latent, points_rc) -> None:
        """on_step's signature (see DragJob.on_step); `step` is not needed: the order is the drag's."""
        self._sample.add((latent, points_rc))

    def __len__(self) -> int:
        return len(self._sample)

    def steps(self) -> list[tuple[object, list[list[float]] | None]]:
        """(latent, handles as (x, y) pixels or None) of each kept step, in order."""
        out = []
        for latent, points in self._sample.items():
            handles = None if points is None else [[float(c), float(r)] for r, c in points.detach().cpu().tolist()]
            out.append((latent, handles))
        return out


def steady_fps(frames: int, seconds: float = 3.0, lowest: float = 6.0, highest: float = 30.0) -> float:
    """A frame rate that shows `frames` in about `seconds`, within [lowest, highest] frames a second: a short
    drag is not a flash, a long one not a slideshow."""
    return float(min(highest, max(lowest, frames / seconds)))


def export_records(records: Sequence[tuple[np.ndarray, Sequence, Sequence]], path: str | Path, overlay: bool = True,
                   fps: float = 15.0, hold_last_s: float = 0.0) -> Path:
    """Write (RGB image, handles, targets) records as .mp4, .webm or .gif; the last frame is shown
    `hold_last_s` longer (a GIF holds its own: GIF_HOLD_LAST_MS). Points are drawn on frames already at
    (about) the video's size, so they stay sharp."""
    fmt = video_format(path)
    if not records:
        raise VideoError("No frames to write: run a drag first")
    scale = enlarge_factor(max(records[0][0].shape[:2]), fmt)
    frames = [draw_points(image, handles, targets, scale=scale) if overlay else enlarge(image, scale)
              for image, handles, targets in records]
    if fmt.codec != "gif":
        frames += [frames[-1]] * int(round(hold_last_s * fps))
    return write_video(frames, path, fps=fps)
