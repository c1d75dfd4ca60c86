"""What every drag method shares: its settings, the frames it yields, and how points are checked.

Points are (x, y) image pixels at every boundary (the app, the command line, scripts); the
optimizer converts them to (row, col) tensors once, inside.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from stylegan2.errors import UserError

if TYPE_CHECKING:
    from stylegan2.networks import Generator

SEED_MAX = 2**32 - 1    # numpy RandomState seeds, as the official app
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


@dataclasses.dataclass(frozen=True)
class Setting:
    """One drag setting, described once: the UI's control, the API's and the CLI's check, DragConfig.validate.

    kind: 'float', 'int', 'bool' or 'choice'. section: where the app shows it ('main', 'advanced', 'mask'),
    or '' for settings only scripts and the command line set. reset: the app offers a button back to the
    model's default (the setting is one of a catalog entry's `drag_defaults`).
    """
    name: str
    label: str
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[tuple[str, str], ...] = ()
    help: str = ""
    section: str = ""
    reset: bool = False
    below_maximum: bool = False   # the maximum itself is refused (a share that must stay below 1)

    @property
    def field(self) -> str:
        """The name messages use: the label up to its first ':' or '(' ("R1", "Step size", "λ")."""
        return self.label.split(":")[0].split("(")[0].strip()

    def check(self, value: Any, word: str | None = None) -> Any:
        """`value` coerced to this setting's kind, or a DragInputError naming the setting and its bounds.

        word: how the message names it (default: `field`, the app's word; scripts get the field's `name`)."""
        word = word or self.field
        if self.kind == "bool":
            if isinstance(value, (bool, np.bool_)) or value in (0, 1):
                return bool(value)
            raise DragInputError(f"{word} must be true or false, got {_short(value)}")
        if self.kind == "choice":
            allowed = [v for _, v in self.choices]
            if isinstance(value, str) and value in allowed:
                return value
            raise DragInputError(f"{word} must be one of {', '.join(allowed)}, got {_short(value)}")
        try:
            x = float(value) if not isinstance(value, (bool, np.bool_, str, bytes)) else float("nan")
        except (TypeError, ValueError, OverflowError):
            x = float("nan")
        if not (self.minimum <= x <= self.maximum) or (self.below_maximum and x >= self.maximum):
            got = f"{x:g}" if math.isfinite(x) else _short(value)
            bounds = (f"at least {self.minimum:g} and below {self.maximum:g}" if self.below_maximum
                      else f"between {self.minimum:g} and {self.maximum:g}")
            raise DragInputError(f"{word} must be {bounds}, got {got}")
        if self.kind == "int":
            if not x.is_integer():
                raise DragInputError(f"{word} must be a whole number, got {x:g}")
            return int(x)
        return x


def _setting(default: Any, label: str, kind: str, lo: float | None = None, hi: float | None = None,
             step: float | None = None, **more: Any) -> Any:
    """A DragConfig field with its Setting (the field's name is filled in by SETTINGS)."""
    return dataclasses.field(default=default, metadata={"setting": dict(label=label, kind=kind, minimum=lo,
                                                                        maximum=hi, step=step, **more)})


@dataclasses.dataclass
class DragConfig:
    """Settings of one drag. Radii are in 512-px units, scaled by resolution / 512 as in the official code.

    Each field's label, bounds and help live beside it (`SETTINGS`): the app's controls, the /drag
    endpoint, the command line's flags and `validate` all read them there.
    """
    lr: float = _setting(0.002, "Step size", "float", 0.0005, 0.1, 0.0005, section="main", reset=True,
                         help="Adam step size on the latent")
    r1: float = _setting(3.0, "R1: motion radius", "float", 1, 128, 1, section="main", reset=True,
                         help="motion supervision radius (radii in 512-px units)")
    r2: float = _setting(13.0, "R2: tracking radius", "float", 1, 256, 1, section="main", reset=True,
                         help="point tracking half-window")
    r3: float = _setting(40.0, "R3: Nearest search radius", "float", 1, 256, 1, section="main", reset=True,
                         help="Nearest: how far to look for an edge")
    nearest: bool = _setting(False, "Nearest: start each handle on the nearest edge", "bool", section="main",
                             help="move handles onto the nearest Canny edge before dragging")
    nearest_rate: float = _setting(0.8, "Nearest rate", "float", 0, 1, 0.05,
                                   help="Nearest: fraction of the way to the edge")
    max_steps: int = _setting(300, "Max steps", "int", 1, 10_000, 1, section="main", reset=True,
                              help="stop after this many steps")
    time_limit_s: float = _setting(0.0, "Time limit (s)", "float", 0, 86_400, 1,
                                   help="stop the drag after this many seconds (0: none); a public server sets one")
    hold: bool = _setting(True, "Keep the unpainted pixels", "bool", section="mask",
                          help="with a mask, every picture shows the start picture outside it, exactly (the "
                               "latent's own picture inside, over a short ramp at the edge)")
    mask_term: str = _setting("none", "Mask term", "choice", section="mask",
                              choices=(("none", "none"), ("features (paper)", "features"), ("image", "image"),
                                       ("composite", "composite")),
                              help="what the drag itself does to keep the area outside the mask: nothing (none), "
                                   "the feature block's map (paper) or the image (lambda per handle, in feature "
                                   "units) held on every step, or composite: drag freely, then fit the latent to "
                                   "the dragged inside and the start outside")
    # λ 10 on every model: with the image term it is scale-free (engine.image_mask_weight); with the
    # composite term the outside's mean weighs λ/10 of the inside's; the paper's 20 is for its feature term
    lambda_mask: float = _setting(10.0, "λ: the mask term's weight", "float", 0, 100, 0.5,
                                  section="mask", reset=True,
                                  help="weight of the mask term (features, image, composite) that keeps the area "
                                       "outside the mask fixed")
    feature_block: int = _setting(6, "Feature block", "int", 1, 9, 1, section="advanced", reset=True,
                                  help="1-based synthesis block whose features drive the drag (paper: 6th)")
    rows: int = _setting(6, "W+ rows optimized", "int", 1, 18, 1, section="advanced", reset=True,
                         help="how many W+ rows are optimized; the rest stay as they were")
    frame_every: int = _setting(1, "Show at most every n-th step", "int", 1, 10_000, 1, section="advanced",
                                help="render a frame at most every n-th step (others stay on the device)")
    tracking: str = _setting("l1", "Point tracking distance", "choice", section="advanced",
                             choices=(("L1 (paper)", "l1"), ("L2 (official code)", "l2")),
                             help="feature distance of point tracking: l1 (paper) or l2 (official code)")
    frame_interval_s: float = _setting(0.0, "Frame interval", "float", 0, 3600,
                                       help="at most one frame per this many seconds (0: no pacing); the app paces")
    # frames take at most this share of the drag's time (0: no bound); the app: 1/3, so a slow device
    # (a CPU at 256 px and up) shows fewer frames, not fewer steps
    frame_share: float = _setting(0.0, "Frame share", "float", 0, 1, below_maximum=True,
                                  help="frames take at most this share of the drag's time (0: no bound)")
    check_every: int = _setting(0, "Check every", "int", 0, 10_000,
                                help="between frames, read back every n-th step whether the handles arrived (0: "
                                     "every step where local steps read the handles back anyway, a CPU; else 10)")
    auto_steps: int = _setting(0, "Auto steps", "int", 0, 64,
                               help="learned methods: autoregressive steps (0: the predictor's own n)")
    # auto = fp16 on CUDA (as the official code), bf16 on CPUs with native bf16, else fp32
    # (auto_precision; README: Speed, measured)
    precision: str = _setting("auto", "Precision", "choice", choices=tuple((p, p) for p in PRECISIONS),
                              help="the high-resolution blocks' arithmetic: fp32, bf16, fp16; auto = fp16 on "
                                   "CUDA, bf16 on CPUs with native bf16, else fp32")
    local: str = _setting("auto", "Local steps", "choice", choices=tuple((v, v) for v in LOCAL),
                          help="crop the high-resolution blocks to where a step reads them: on, off; auto = on "
                               "except on CUDA. Never with the image or feature mask terms")

    # The settings a model's catalog `drag_defaults` may set (those whose Setting has reset=True).
    MODEL_KEYS: ClassVar[tuple[str, ...]] = ()

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
        """Check every field against its Setting; coerce whole floats of int fields ("3.0" steps)."""
        for name, setting in SETTINGS.items():
            setattr(self, name, setting.check(getattr(self, name), name))

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



SETTINGS: dict[str, Setting] = {f.name: Setting(name=f.name, **f.metadata["setting"])
                                for f in dataclasses.fields(DragConfig)}
DragConfig.MODEL_KEYS = tuple(name for name, s in SETTINGS.items() if s.reset)

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
    reason: str = ""                 # when done: 'reached', 'max_steps', 'stopped', 'time_limit'; learned methods:
                                     # 'predicted' (every handle arrived) or 'short' (one did not)
    latent: torch.Tensor | None = None  # [1, num_ws, w_dim] at this frame; always set when done
    start_xy: list[list[float]] | None = None  # where the handles started (after Nearest and rounding)
    queue: tuple[int, float | None] | None = None  # reason 'waiting': (place in line, rough seconds) for the device

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


def check_seed(seed: float) -> int:
    """A seed as the official app takes it: a whole number in [0, 2^32 - 1]."""
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise DragInputError(f"Seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}") from None
    if not (value == value and value.is_integer() and 0 <= value <= SEED_MAX):
        raise DragInputError(f"Seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")
    return int(value)


def check_psi(psi: float) -> float:
    """Truncation psi: a number in [0, 1] (the slider's range)."""
    try:
        value = float(psi)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value <= 1:
        raise DragInputError(f"Truncation ψ must be a number from 0 to 1, got {psi!r}")
    return value

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
    except DragInputError:
        raise
    except RecursionError:
        raise DragInputError(f"{name} must be points like {example}; got a list nested too deep") from None
    except (ValueError, TypeError, OverflowError):
        raise DragInputError(f"{name} must be points like {example}; got {_short(text)}") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclasses.dataclass
class DragJob:
    """One drag to run: what every method takes."""
    G: "Generator"                        # frozen, shared generator (stylegan2.networks)
    w_start: torch.Tensor                 # [1, num_ws, w_dim] the W+ latent the drag starts from, on G's device
    handles_xy: list[list[float]]         # (x, y) image pixels
    targets_xy: list[list[float]]         # one per handle
    config: DragConfig = dataclasses.field(default_factory=DragConfig)
    editable: torch.Tensor | None = None  # [H, W] bool: True where the drag may change the image; None: no mask
    latent_space: str = "w+"              # 'w+' optimizes rows separately, 'w' moves them together
    noise_mode: str = "const"
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)  # set: stop before the next step
    auto: Any = None                      # draggan.auto.AutoDragModel: the learned predictor for G (learned methods)
    image: np.ndarray | None = None       # the start latent's image if the caller has it (Nearest looks at it)
    # on_step(step, latent [1, num_ws, w_dim], tracked (row, col) [N, 2] or None): every step's latent as it is
    # rendered, left on the device (no host sync); the editor keeps them to render the whole drag as a video
    on_step: Callable[[int, torch.Tensor, torch.Tensor | None], None] | None = None
    hold: Any = None                      # draggan.hold.Hold: the picture kept outside the mask (config.hold);
                                          # None: `run_drag` makes it when the settings ask for one

    def __getstate__(self) -> dict:
        # A job pickled into another process (ZeroGPU's worker) cannot share a stop event with this one:
        # there the consumer stops by closing the frame generator instead.
        return {**self.__dict__, "stop": None, "on_step": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stop=threading.Event())

    def __post_init__(self) -> None:
        self.config.validate()
        res = self.G.img_resolution
        self.handles_xy, self.targets_xy = validate_points(self.handles_xy, self.targets_xy, res)
        if self.latent_space not in ("w", "w+"):
            raise DragInputError(f"latent space must be 'w' or 'w+', got {self.latent_space!r}")
        if self.w_start.ndim == 2:
            self.w_start = self.w_start.unsqueeze(1).repeat(1, self.G.num_ws, 1)
        assert self.w_start.shape == (1, self.G.num_ws, self.G.w_dim), self.w_start.shape
        if self.editable is not None:
            assert self.editable.shape == (res, res) and self.editable.dtype == torch.bool, self.editable.shape
