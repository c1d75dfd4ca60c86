"""The DragGAN engine: motion supervision + point tracking on a StyleGAN2 latent.

A `DragSession` holds one user's small state (latent, points, mask, history) over
a generator that it never modifies, so many sessions can share one generator.

Each step, as in the paper and the official code:
  1. synthesis up to the feature block, with autograd (the image tail is run
     without autograd, and only for frames that are shown);
  2. point tracking: each handle moves to the pixel within +-r2 whose feature is
     nearest to the handle's feature at the first step;
  3. motion supervision: mean |sg(F(q)) - F(q + d)| over q within r1 of each handle,
     d the unit vector towards its target, plus lambda * mean |(F - F0) * M_fixed|;
  4. one Adam step on the first `rows` rows of W+ (the rest stay at w0).

Features are read at image resolution without resizing the map (see `features.py`).
Points are (x, y) image pixels at the API; inside, tensors hold (row, col).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from stylegan2.errors import UserError
from stylegan2.networks import Generator, image_to_uint8, seed_to_z

from .features import downsample_mask, sample_resized, sample_resized_bilinear


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
    rows: int = 6                # how many W+ rows are optimized; the rest stay at w0
    tracking: str = "l1"         # 'l1' (paper) or 'l2' (official code)
    lambda_mask: float = 20.0    # weight of the term that keeps the area outside the mask fixed
    max_steps: int = 300         # stop after this many steps
    frame_every: int = 1         # render and report every n-th step (others stay on the device)
    check_every: int = 10        # between frames, read back every n-th step whether the handles arrived

    def validate(self) -> None:
        for name in ("lr", "r1", "r2", "r3", "nearest_rate", "lambda_mask"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise DragInputError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.tracking not in ("l1", "l2"):
            raise DragInputError(f"tracking must be 'l1' or 'l2', got {self.tracking!r}")
        if min(self.max_steps, self.frame_every, self.check_every, self.rows, self.feature_block) < 1:
            raise DragInputError("max_steps, frame_every, check_every, rows and feature_block must be at least 1")

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

    @property
    def mean_distance(self) -> float:
        return float(np.mean(self.distances)) if self.distances else 0.0


@dataclasses.dataclass
class _Snapshot:
    latent: torch.Tensor                   # [1, num_ws, w_dim]
    handles_xy: list[list[float]]
    targets_xy: list[list[float]]


def _as_points(points: Sequence[Sequence[float]], name: str, resolution: int) -> list[list[float]]:
    out = []
    for i, p in enumerate(points):
        if len(p) != 2:
            raise DragInputError(f"{name} {i + 1} must be an (x, y) pair, got {p!r}")
        x, y = float(p[0]), float(p[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DragInputError(f"{name} {i + 1} is not a number: {p!r}")
        if not (0 <= x <= resolution - 1 and 0 <= y <= resolution - 1):
            raise DragInputError(f"{name} {i + 1} at ({x:g}, {y:g}) is outside the {resolution}x{resolution} image")
        out.append([x, y])
    return out


def validate_points(handles_xy, targets_xy, resolution: int) -> tuple[list[list[float]], list[list[float]]]:
    """Check a drag's points; raise DragInputError with what to do."""
    if not handles_xy:
        raise DragInputError("Click a handle point (red) and then its target (blue) before pressing Drag")
    if len(targets_xy) < len(handles_xy):
        raise DragInputError(f"Handle {len(targets_xy) + 1} has no target: click a target point for it before pressing Drag")
    if len(targets_xy) > len(handles_xy):
        raise DragInputError("There are more targets than handles: give every target a handle")
    return _as_points(handles_xy, "handle", resolution), _as_points(targets_xy, "target", resolution)


def nearest_edge_points(image: np.ndarray, handles_xy: list[list[float]], radius: float, rate: float = 0.8,
                        ) -> list[list[float]]:
    """Nearest (R3): move each handle `rate` of the way to the closest Canny edge pixel within `radius`.

    Handles in flat areas track badly; this puts them on texture tracking can follow.
    A handle with no edge within `radius` stays where it is.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), 50, 150)
    ys, xs = np.nonzero(edges)
    out = []
    for x, y in handles_xy:
        d = np.hypot(xs - x, ys - y)
        ok = d <= radius
        if not ok.any():
            out.append([x, y])
            continue
        i = np.flatnonzero(ok)[np.argmin(d[ok])]
        out.append([x + rate * (xs[i] - x), y + rate * (ys[i] - y)])
    return out


class DragSession:
    """One user's drag state over a shared, frozen generator."""

    def __init__(self, G: Generator, w0: torch.Tensor, latent_space: str = "w+", noise_mode: str = "const",
                 use_fp16: bool = False):
        """w0: W+ latent [1, num_ws, w_dim] (or W [1, w_dim]) to start from."""
        if latent_space not in ("w", "w+"):
            raise DragInputError(f"latent space must be 'w' or 'w+', got {latent_space!r}")
        self.G = G
        self.device = next(G.parameters()).device
        if w0.ndim == 2:
            w0 = w0.unsqueeze(1).repeat(1, G.num_ws, 1)
        assert w0.shape == (1, G.num_ws, G.w_dim), w0.shape
        self.w0 = w0.detach().to(self.device, torch.float32).clone()
        self.latent = self.w0.clone()          # [1, num_ws, w_dim], current W+
        self.latent_space = latent_space
        self.noise_mode = noise_mode
        self.use_fp16 = use_fp16
        self.handles_xy: list[list[float]] = []
        self.targets_xy: list[list[float]] = []
        self.editable: torch.Tensor | None = None  # [H, W] bool, True where the drag may change things
        self.history: list[_Snapshot] = []
        self.last_frames: list[tuple[bytes, list[list[float]], list[list[float]]]] = []  # (jpeg, handles, targets)
        self._stop = threading.Event()
        self._image: np.ndarray | None = None

    @classmethod
    def from_seed(cls, G: Generator, seed: int, psi: float = 0.7, latent_space: str = "w+",
                  cutoff: int | None = None, **kwargs) -> "DragSession":
        """Start from a seed, mapped exactly as in the official app."""
        device = next(G.parameters()).device
        with torch.no_grad():
            w0 = G.mapping(seed_to_z(int(seed), G.z_dim).to(device), truncation_psi=psi, truncation_cutoff=cutoff)
        return cls(G, w0, latent_space=latent_space, **kwargs)

    @property
    def resolution(self) -> int:
        return self.G.img_resolution

    # -- rendering ---------------------------------------------------------

    @torch.no_grad()
    def image(self) -> np.ndarray:
        """The current latent's image, [H, W, 3] uint8."""
        if self._image is None:
            img = self.G.synthesis(self.latent, noise_mode=self.noise_mode, use_fp16=self.use_fp16)
            self._image = image_to_uint8(img)
        return self._image

    def _set_latent(self, latent: torch.Tensor, image: np.ndarray | None = None) -> None:
        self.latent = latent.detach().clone()
        self._image = image

    # -- editing state -----------------------------------------------------

    def set_mask(self, editable: np.ndarray | None) -> None:
        """The editable area ([H, W], nonzero = may change), or None for no mask term."""
        if editable is None:
            self.editable = None
            return
        editable = np.asarray(editable)
        if editable.shape[:2] != (self.resolution, self.resolution):
            raise DragInputError(f"the mask is {editable.shape[1]}x{editable.shape[0]}, the image is "
                                 f"{self.resolution}x{self.resolution}")
        if editable.ndim == 3:
            editable = editable.max(axis=2)
        self.editable = torch.from_numpy(editable > 0).to(self.device)

    def stop(self) -> None:
        """Ask a running drag to stop; it takes effect before its next step."""
        self._stop.set()

    def undo(self) -> bool:
        """Restore the latent and points from before the last drag (or reset). False if nothing to undo."""
        if not self.history:
            return False
        snap = self.history.pop()
        self._set_latent(snap.latent)
        self.handles_xy, self.targets_xy = snap.handles_xy, snap.targets_xy
        return True

    def reset(self) -> None:
        """Back to w0 (undoable), keeping the points."""
        self.history.append(_Snapshot(self.latent.clone(), copy.deepcopy(self.handles_xy), copy.deepcopy(self.targets_xy)))
        self._set_latent(self.w0)

    # -- the drag ----------------------------------------------------------

    def drag(self, handles_xy: Sequence[Sequence[float]], targets_xy: Sequence[Sequence[float]],
             config: DragConfig | None = None) -> Iterator[DragFrame]:
        """Run a drag, yielding a frame every `config.frame_every` steps and a last frame with done=True.

        The handles are updated as they are tracked; `stop()` from another thread ends the drag
        before its next step. Raises DragInputError for bad points or settings.
        """
        cfg = config or DragConfig()
        cfg.validate()
        res = self.resolution
        handles, targets = validate_points(handles_xy, targets_xy, res)
        blocks = self.G.synthesis.blocks
        feature_block = min(cfg.feature_block, len(blocks))
        rows = min(cfg.rows, self.G.num_ws)
        self._stop.clear()
        self.history.append(_Snapshot(self.latent.clone(), copy.deepcopy(self.handles_xy), copy.deepcopy(self.targets_xy)))
        self.last_frames = []

        if cfg.nearest:
            handles = nearest_edge_points(self.image(), handles, cfg.r3 * res / 512, cfg.nearest_rate)
        # Tracking works on whole pixels, as the official code does.
        handles = [[float(round(x)), float(round(y))] for x, y in handles]
        self.handles_xy, self.targets_xy = handles, targets

        dev = self.device
        points = torch.tensor([[y, x] for x, y in handles], device=dev)          # [N, 2] rowcol
        target_rc = torch.tensor([[y, x] for x, y in targets], device=dev)        # [N, 2]
        r1 = cfg.radius_px(cfg.r1, res)
        r2 = cfg.radius_px(cfg.r2, res)
        stop_dist = max(2 * res / 512, 2)
        fixed = None
        if self.editable is not None and bool(self.editable.any()) and not bool(self.editable.all()):
            fixed = downsample_mask(~self.editable, blocks[feature_block - 1].resolution)  # [1, 1, s, s]

        w0 = self.w0
        if self.latent_space == "w+":
            param = self.latent[:, :rows].clone().requires_grad_(True)          # [1, rows, w_dim]
        else:
            param = self.latent[:, 0].clone().requires_grad_(True)             # [1, w_dim]
        opt = torch.optim.Adam([param], lr=cfg.lr)

        def full_latent() -> torch.Tensor:
            head = param if param.ndim == 3 else param.unsqueeze(1).expand(-1, rows, -1)
            return torch.cat([head, w0[:, rows:]], dim=1)

        # Offsets of the tracking window and of the square holding the motion disc.
        win = torch.arange(-r2, r2 + 1, device=dev, dtype=torch.float32)
        win = torch.stack(torch.meshgrid(win, win, indexing="ij"), -1).reshape(-1, 2)   # [(2r2+1)^2, 2]
        sq = torch.arange(-r1 - 1, r1 + 2, device=dev, dtype=torch.float32)
        sq = torch.stack(torch.meshgrid(sq, sq, indexing="ij"), -1).reshape(-1, 2)      # [(2r1+3)^2, 2]
        stretch = res / (res - 1)  # the official disc measures rows/cols on linspace(0, res, res)

        feat_refs = feat0 = None
        pending: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        step = 0
        t_last = time.perf_counter()
        reason = ""
        while True:
            if self._stop.is_set():
                reason = "stopped"
                break
            if step >= cfg.max_steps:
                reason = "max_steps"
                break
            show = step % cfg.frame_every == 0
            ws = full_latent()
            with torch.enable_grad():
                feats = self.G.synthesis.features(ws, stop=feature_block, noise_mode=self.noise_mode,
                                                  use_fp16=self.use_fp16)
            feat = feats[-1].float()                                                    # [1, C, s, s]
            if feat_refs is None:
                feat0 = feat.detach()
                feat_refs = sample_resized(feat0, points, res).T                       # [N, C]

            with torch.no_grad():  # point tracking
                cand = points[:, None] + win[None]                                      # [N, K, 2]
                inside = ((cand >= 0) & (cand <= res - 1)).all(-1)
                f = sample_resized(feat.detach(), cand.clamp(0, res - 1), res)          # [C, N, K]
                diff = f - feat_refs.T[:, :, None]
                dist = diff.abs().sum(0) if cfg.tracking == "l1" else diff.square().sum(0).sqrt()
                idx = dist.masked_fill(~inside, float("inf")).argmin(dim=1)             # [N]
                points = cand[torch.arange(len(points), device=dev), idx]
                to_target = target_rc - points
                distances = to_target.norm(dim=1)                                       # [N]
                done = (distances <= stop_dist).all()

            with torch.enable_grad():  # motion supervision
                direction = to_target / (distances[:, None] + 1e-7)                       # [N, 2] rowcol
                q = points[:, None] + sq[None]                                              # [N, Q, 2]
                in_disc = ((q * stretch - points[:, None]).norm(dim=-1) < r1) & ((q >= 0) & (q <= res - 1)).all(-1)
                active = (distances > 1).to(feat.dtype)[:, None] * in_disc.to(feat.dtype)  # [N, Q]
                qc = q.clamp(0, res - 1)
                f_q = sample_resized(feat, qc, res).detach()                                # [C, N, Q]
                f_qd = sample_resized_bilinear(feat, qc + direction[:, None], res)         # [C, N, Q]
                per_handle = ((f_q - f_qd).abs() * active).sum(dim=(0, 2)) / (feat.shape[1] * in_disc.sum(1).clamp(min=1))
                loss = per_handle.sum()
                if fixed is not None:
                    loss = loss + cfg.lambda_mask * ((feat - feat0).abs() * fixed).mean()

            if show:
                with torch.no_grad():
                    img = self.G.synthesis.image_from_features(ws.detach(), [x.detach() for x in feats],
                                                               noise_mode=self.noise_mode, use_fp16=self.use_fp16)
            # One Adam step, undone without a host sync if every handle had already arrived.
            before = param.detach().clone()
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss.backward()
            opt.step()
            with torch.no_grad():
                param.copy_(torch.where(done, before, param))
            pending.append((step, points, distances, loss.detach()))
            step += 1

            if show or step >= cfg.max_steps or step % cfg.check_every == 0:
                # Sync point (a frame, the end, or a check for arrival between rare frames):
                # read back what the device computed since the last one.
                reached_at = None
                for s, p, d, l in pending:  # up to the first step at which every handle had arrived
                    d = d.cpu().numpy()
                    if (d <= stop_dist).all():
                        reached_at = s
                        break
                now = time.perf_counter()
                ms = (now - t_last) * 1000 / len(pending)
                t_last = now
                pending = []
                l = float(l)
                hxy = [[float(c), float(r)] for r, c in p.cpu().numpy()]
                self.handles_xy = hxy
                if show and reached_at is None:
                    image = image_to_uint8(img)
                    self._remember(image, hxy, targets)
                    yield DragFrame(s, hxy, targets, d.tolist(), l, ms, image)
                if reached_at is not None:
                    step = reached_at
                    reason = "reached"
                    break

        self._set_latent(full_latent())
        image = self.image()
        self._remember(image, self.handles_xy, targets)
        with torch.no_grad():
            pts = torch.tensor([[y, x] for x, y in self.handles_xy])
            dists = (torch.tensor([[y, x] for x, y in targets]) - pts).norm(dim=1).tolist()
        yield DragFrame(step, self.handles_xy, targets, dists, float("nan"), 0.0, image, done=True, reason=reason)

    def _remember(self, image: np.ndarray, handles, targets) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        self.last_frames.append((buf.tobytes(), copy.deepcopy(handles), copy.deepcopy(targets)))

    def drag_frames(self, overlay: bool = True) -> list[np.ndarray]:
        """Every frame of the last drag as RGB images, with or without the point overlay."""
        from .draw import draw_points
        out = []
        for jpeg, handles, targets in self.last_frames:
            img = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            out.append(draw_points(img, handles, targets) if overlay else img)
        return out

    def export_video(self, path, overlay: bool = True, fps: float = 15.0):
        """Write the last drag as .mp4 or .gif; returns the path."""
        from .draw import write_video
        return write_video(self.drag_frames(overlay), path, fps=fps)
