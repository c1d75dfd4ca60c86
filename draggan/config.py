"""What every drag method shares: its settings, the frames it yields, and how points are checked.

Points are (x, y) image pixels at every boundary (the app, the command line, scripts); the
optimizer converts them to (row, col) tensors once, inside.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, Sequence

import numpy as np
import torch

from stylegan2.errors import UserError

MAX_POINTS = 100        # handle/target pairs per drag: the 68-landmark protocol needs 68
MAX_POINTS_TEXT = 16_384  # characters of a point list (100 pairs of coordinates need ~2,500)
TRACKING = ("l1", "l2")
APP_FRAME_RATE = 15.0    # frames per second the app shows (its default); the drag never waits for the browser
APP_FRAME_SHARE = 1 / 3  # and frames take at most this share of a drag's time there (slow devices: fewer frames)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOCAL = ("auto", "on", "off")


def auto_precision(device: torch.device) -> str:
    """precision "auto": fp16 on CUDA (NVIDIA's fp16 blocks, as the official code); bf16 on a CPU that does
    bf16 arithmetic natively (measured: 1.6-1.8x faster per step at 256 px, the same oracle results as
    fp32; see README); fp32 elsewhere (MPS, and CPUs without it, where bf16 is emulated and far slower)."""
    if device.type == "cuda":
        return "fp16"
    return "bf16" if device.type == "cpu" and cpu_native_bf16() else "fp32"


@functools.lru_cache(maxsize=None)
def cpu_native_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (x86 AVX-512 BF16 or AMX, from /proc/cpuinfo) and PyTorch's
    oneDNN uses it. False where that cannot be read (other systems: their default stays fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        return bool({"avx512_bf16", "amx_bf16"} & set(flags)) and torch.backends.mkldnn.is_available() \
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (OSError, AttributeError, RuntimeError):
        return False


class DragInputError(UserError, ValueError):
    """Bad input from a user or script; the message says what to do."""


@dataclasses.dataclass
class DragConfig:
    """Settings of one drag. Radii are in 512-px units, scaled by resolution / 512 as in the official code."""
    lr: float = 0.002            # Adam step size on the latent
    r1: float = 3.0              # motion supervision radius
    r2: float = 13.0             # point tracking half-window
    r3: float = 40.0             # Nearest: how far to look for an edge
    nearest: bool = False        # move handles onto the nearest Canny edge before dragging
    nearest_rate: float = 0.8    # Nearest: fraction of the way to the edge
    feature_block: int = 6       # 1-based synthesis block whose features drive the drag (paper: 6th)
    rows: int = 6                # how many W+ rows are optimized; the rest stay as they were
    tracking: str = "l1"         # 'l1' (paper) or 'l2' (official code)
    lambda_mask: float = 20.0    # weight of the term that keeps the area outside the mask fixed
    max_steps: int = 300         # stop after this many steps
    frame_every: int = 1         # render a frame at most every n-th step (others stay on the device)
    frame_interval_s: float = 0.0  # and at most one frame per this many seconds (0: no pacing); the app paces
    frame_share: float = 0.0     # and frames take at most this share of the drag's time (0: no bound); the app:
                                 # 1/3, so a slow device (a CPU at 256 px and up) shows fewer frames, not fewer steps
    check_every: int = 10        # between frames, read back every n-th step whether the handles arrived
    auto_steps: int = 0          # learned methods: autoregressive steps (0: the predictor's own n)
    precision: str = "auto"      # the high-resolution blocks' arithmetic: fp32, bf16, fp16; auto = fp16 on CUDA
                                 # (as the official code), bf16 on CPUs with native bf16, else fp32
                                 # (auto_precision; README: Speed, measured)
    local: str = "auto"          # crop the high-resolution blocks to where a step reads them (window.py):
                                 # on, off; auto = on except on CUDA. Never with a mask.

    # The settings a model's catalog `drag_defaults` may set.
    MODEL_KEYS = ("lr", "r1", "r2", "r3", "feature_block", "max_steps")

    @classmethod
    def for_model(cls, spec: str | None, **overrides: Any) -> "DragConfig":
        """DragConfig's defaults, then the catalog model's `drag_defaults`, then `overrides` (None = not given).

        The one place where a model's settings meet the user's; the result is validated.
        """
        from stylegan2.catalog import drag_defaults

        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise DragInputError(f"unknown drag setting(s): {', '.join(sorted(unknown))}")
        cfg = cls(**(drag_defaults(spec) if spec else {}))
        cfg = dataclasses.replace(cfg, **given)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("lr", "r1", "r2", "r3", "nearest_rate", "lambda_mask", "frame_interval_s",
                     "frame_share"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise DragInputError(f"{name} must be a finite number >= 0, got {v!r}")
        if not self.frame_share < 1:
            raise DragInputError(f"frame_share must be below 1, got {self.frame_share!r}")
        if self.tracking not in TRACKING:
            raise DragInputError(f"tracking must be 'l1' or 'l2', got {self.tracking!r}")
        for name in ("max_steps", "frame_every", "check_every", "rows", "feature_block", "auto_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DragInputError(f"{name} must be a whole number, got {v!r}")
            if v < (0 if name == "auto_steps" else 1):
                raise DragInputError(f"{name} must be at least {0 if name == 'auto_steps' else 1}, got {v}")
        if self.precision not in PRECISIONS:
            raise DragInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.local not in LOCAL:
            raise DragInputError(f"local must be one of {', '.join(LOCAL)}, got {self.local!r}")
        if self.max_steps > 10_000 or self.r1 > 512 or self.r2 > 512 or self.r3 > 1024 or self.auto_steps > 64:
            raise DragInputError("max_steps is at most 10000, auto_steps 64, r1 and r2 512, r3 1024")

    def compute_dtype(self, device: torch.device) -> torch.dtype | bool:
        """What the generator's `use_fp16` gets: False (float32), or the dtype of its high-resolution blocks."""
        choice = self.precision if self.precision != "auto" else auto_precision(device)
        if choice == "fp16" and device.type == "cpu":
            raise DragInputError("precision fp16 needs CUDA or MPS; on a CPU use bf16 (fast only where the CPU "
                                 "has AVX-512 BF16 or AMX) or fp32")
        return {"fp32": False, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]

    def local_steps(self, device: torch.device) -> bool:
        """Whether steps crop the high-resolution blocks (auto: not on CUDA, where reading the handles back
        every step would cost the loop its freedom from host syncs)."""
        return self.local == "on" or (self.local == "auto" and device.type != "cuda")

    def radius_px(self, r: float, resolution: int) -> int:
        """A radius in image pixels: round(r * res / 512) as the official code does, at least 1."""
        return max(int(round(r * resolution / 512)), 1)


@dataclasses.dataclass
class DragFrame:
    """What the caller sees of one step (or of the end of the drag)."""
    step: int                        # steps done before this frame's image was rendered
    handles_xy: list[list[float]]    # tracked handle positions at this step
    targets_xy: list[list[float]]
    distances: list[float]           # each handle's distance to its target, in pixels
    loss: float
    ms: float                        # mean milliseconds per step since the previous frame
    image: np.ndarray | None         # [H, W, 3] uint8 of the latent at this step, or None
    done: bool = False               # the last frame of the drag
    reason: str = ""                 # when done: 'reached', 'max_steps' or 'stopped'
    latent: torch.Tensor | None = None  # [1, num_ws, w_dim] at this frame; always set when done
    start_xy: list[list[float]] | None = None  # where the handles started (after Nearest and rounding)

    @property
    def mean_distance(self) -> float:
        return float(np.mean(self.distances)) if self.distances else 0.0


def check_point(xy: Sequence[Any], resolution: int, name: str = "point") -> list[float]:
    """One (x, y) image pixel, checked: a pair of finite numbers inside the image."""
    try:
        if isinstance(xy, (str, bytes)) or len(xy) != 2:
            raise TypeError
        x, y = float(xy[0]), float(xy[1])
    except (TypeError, ValueError, OverflowError):
        raise DragInputError(f"{name} must be an (x, y) pair of numbers, got {_short(xy)}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise DragInputError(f"{name} is not a number: {_short(xy)}")
    if not (0 <= x <= resolution - 1 and 0 <= y <= resolution - 1):
        raise DragInputError(f"{name} at ({x:g}, {y:g}) is outside the {resolution}x{resolution} image")
    return [x, y]


def validate_points(handles_xy: Sequence, targets_xy: Sequence, resolution: int,
                    ) -> tuple[list[list[float]], list[list[float]]]:
    """Check a drag's points; raise DragInputError with what to do."""
    if not handles_xy:
        raise DragInputError("Click a handle point (red) and then its target (blue) before pressing Drag")
    if len(handles_xy) > MAX_POINTS or len(targets_xy) > MAX_POINTS:
        raise DragInputError(f"At most {MAX_POINTS} handle/target pairs per drag, got {max(len(handles_xy), len(targets_xy))}")
    if len(targets_xy) < len(handles_xy):
        raise DragInputError(f"Handle {len(targets_xy) + 1} has no target: click a target point for it before pressing Drag")
    if len(targets_xy) > len(handles_xy):
        raise DragInputError("There are more targets than handles: give every target a handle")
    return ([check_point(p, resolution, f"handle {i + 1}") for i, p in enumerate(handles_xy)],
            [check_point(p, resolution, f"target {i + 1}") for i, p in enumerate(targets_xy)])


def parse_points(text: str | None, name: str) -> list[list[float]]:
    """Points as text, in either form people type: JSON `[[x, y], ...]` or `x,y;x,y`. Empty: no points.

    Only the form is checked here (sizes bounded before parsing); `validate_points` checks the values.
    """
    if text is None or not str(text).strip():
        return []
    text = str(text).strip()
    if len(text) > MAX_POINTS_TEXT:
        raise DragInputError(f"{name}: at most {MAX_POINTS} points ({MAX_POINTS_TEXT} characters), got {len(text)} characters")
    example = "[[12, 30], [40, 8]] or 12,30;40,8"
    try:
        if text.startswith("["):
            points = json.loads(text)
            if not isinstance(points, list):
                raise ValueError
        else:
            points = [part.split(",") for part in text.split(";") if part.strip()]
        if len(points) > MAX_POINTS:
            raise DragInputError(f"{name}: at most {MAX_POINTS} points, got {len(points)}")
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
            raise ValueError
        return [[float(x), float(y)] for x, y in points]
    except (ValueError, TypeError, OverflowError):
        raise DragInputError(f"{name} must be points like {example}; got {_short(text)}") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
