"""DragGAN's optimizer (method 'draggan'): motion supervision + point tracking on a StyleGAN2 latent.

One function per equation of the paper, then a loop that only schedules them:
  - `track_points`: each handle moves to the pixel within +-r2 whose feature is nearest to
    the handle's feature at the first step (paper eq. 2);
  - `motion_loss`: mean |sg(F(q)) - F(q + d)| over q within r1 of each handle, d the unit
    vector towards its target (eq. 1), plus a mask term: the paper's `mask_loss`, lambda * mean
    |(F - F0) * M_fixed| (mask_term 'features'), or `image_mask_loss` on the image the latent draws
    (mask_term 'image': the tail then runs with autograd on every step of a masked drag);
  - with mask_term 'none' (the default) the drag adds no mask term; with 'composite' it adds none and `settle` then
    fits the image to the dragged one inside the mask and the start one outside it (`composite_loss`); either way
    `DragConfig.hold` (on by default, `hold.py`) shows the start picture outside the mask;
  - `optimize_latent`: per step, synthesis up to the feature block with autograd, tracking,
    the loss, one Adam step on the first `rows` rows of W+ (the rest stay fixed, and the layers
    they drive convolve with weights modulated once per drag: `FrozenStyles`); the image
    tail runs without autograd, only for frames that are shown (`FrameSchedule`).

Features are read at image resolution without resizing the map (see `features.py`).
Points are (x, y) image pixels at the API; inside, tensors hold (row, col).
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Iterator, TypeVar

import cv2
import numpy as np
import torch

from stylegan2.frozen_styles import FrozenStyles, frozen_styles
from stylegan2.networks import Generator, SynthesisNetwork, image_to_uint8

from .config import DragConfig, DragFrame, DragJob, DragInputError, validate_points  # noqa: F401 (re-exported)
from .features import Origin, downsample_mask, sample_resized, sample_resized_bilinear
from .window import plan_windows, windows_features


T = TypeVar("T")
STEP_MASK_TERMS = ("features", "image")  # the mask terms added to each step's loss ('none', 'composite': none)
DEFAULT_CHECK_EVERY = 10  # steps between arrival checks where reading the handles back costs a host sync (CUDA)


# ----------------------------------------------------------------------------
# The equations, as pure functions of tensors. Points are [N, 2] (row, col) image pixels.

def square_offsets(radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All integer (row, col) offsets of the square [-radius, radius]^2, [(2r+1)^2, 2] float32."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


def track_points(feat: torch.Tensor, points: torch.Tensor, refs: torch.Tensor, window: torch.Tensor,
                 metric: str, resolution: int, origin: Origin = (0, 0), size: int | None = None) -> torch.Tensor:
    """Point tracking: each point moves to the pixel of its window whose feature is nearest its reference.

    feat: [1, C, s, s]; points: [N, 2] rowcol; refs: [N, C] the handles' features at the first step;
    window: [K, 2] offsets; metric 'l1' or 'l2'. Candidates outside the image never win.
    `feat` may be a crop at `origin` of a map of side `size` (see `window.py`). Returns [N, 2] rowcol.
    """
    cand = points[:, None] + window[None]                                   # [N, K, 2]
    inside = ((cand >= 0) & (cand <= resolution - 1)).all(-1)               # [N, K]
    f = sample_resized(feat, cand.clamp(0, resolution - 1), resolution, origin, size)  # [C, N, K]
    diff = f - refs.T[:, :, None]
    dist = diff.abs().sum(0) if metric == "l1" else diff.square().sum(0).sqrt()
    idx = dist.masked_fill(~inside, float("inf")).argmin(dim=1)             # [N]
    return cand[torch.arange(len(points), device=points.device), idx]


def motion_loss(feat: torch.Tensor, points: torch.Tensor, targets: torch.Tensor, r1: int,
                resolution: int, origin: Origin = (0, 0), size: int | None = None) -> torch.Tensor:
    """Motion supervision: sum over handles of mean |sg(F(q)) - F(q + d)| over the disc q of radius r1.

    feat: [1, C, s, s] with autograd; points, targets: [N, 2] rowcol. F(q + d) is bilinear. A handle
    within 1 px of its target adds nothing, as in the official code. The disc is measured as the
    official code does, on rows/cols of linspace(0, res, res) (hence the stretch).
    """
    to_target = targets - points
    distances = to_target.norm(dim=1)                                                # [N]
    direction = to_target / (distances[:, None] + 1e-7)                              # [N, 2]
    q = points[:, None] + square_offsets(r1 + 1, feat.device)[None]                  # [N, Q, 2]
    stretch = resolution / (resolution - 1)
    in_disc = ((q * stretch - points[:, None]).norm(dim=-1) < r1) & ((q >= 0) & (q <= resolution - 1)).all(-1)
    active = (distances > 1).to(feat.dtype)[:, None] * in_disc.to(feat.dtype)        # [N, Q]
    qc = q.clamp(0, resolution - 1)
    f_q = sample_resized(feat, qc, resolution, origin, size).detach()                # [C, N, Q]
    f_qd = sample_resized_bilinear(feat, qc + direction[:, None], resolution, origin, size)  # [C, N, Q]
    per_handle = ((f_q - f_qd).abs() * active).sum(dim=(0, 2)) / (feat.shape[1] * in_disc.sum(1).clamp(min=1))
    return per_handle.sum()


def mask_loss(feat: torch.Tensor, feat0: torch.Tensor, fixed: torch.Tensor, lambda_mask: float) -> torch.Tensor:
    """lambda * mean |(F - F0) * M|: keeps the features outside the editable area as they started.

    fixed: [1, 1, s, s], the fraction of each feature cell that must stay fixed.
    """
    return lambda_mask * ((feat - feat0).abs() * fixed).mean()


def image_mask_loss(img: torch.Tensor, img0: torch.Tensor, fixed: torch.Tensor, weight: float | torch.Tensor,
                    ) -> torch.Tensor:
    """weight * mean |I - I0| over the fixed area: keeps the picture outside the editable area as it started.

    img, img0: [1, 3, H, W], the image the latent draws now and at the start; fixed: [1, 1, H, W] as in
    `mask_loss`. A mean over the fixed area alone, so it means the same at any resolution and however much
    is painted (`image_mask_weight` turns lambda into `weight`).
    """
    return weight * ((img - img0).abs() * fixed).sum() / (img.shape[1] * fixed.sum()).clamp(min=1e-8)


def image_mask_weight(lambda_mask: float, feat0: torch.Tensor, handles: int) -> torch.Tensor:
    """The image term's weight: lambda * mean |F0| * handles, so that one lambda fits every model and drag.

    The motion term it is weighed against is in the feature block's units and a sum over handles; times
    the start features' mean magnitude and the number of handles, an image change of the fixed area costs
    the same against the motion on a 64-px toy model as on a 1024-px StyleGAN2, with one handle or five.
    """
    return lambda_mask * feat0.abs().mean() * handles


def stop_distance(resolution: int) -> float:
    """A handle has arrived within this many pixels of its target (the official rule)."""
    return max(2 * resolution / 512, 2)


def drag_memory_bytes(G: Generator, cfg: DragConfig, n_points: int) -> int:
    """Rough peak bytes a step's point tracking and motion supervision add to the generator's own activations.

    Tracking compares every candidate of each handle's window with its reference: three [C, N, K] float32
    tensors (samples, differences, their magnitudes), K = (2 r2 + 1)^2. Motion supervision reads each disc and
    its four bilinear neighbours with autograd: about ten [C, N, Q], Q = (2 r1 + 3)^2. C: the feature block's
    channels. At 100 points, R2 256 on a 1024-px generator this is tens of GB: `check_drag_memory` refuses it.
    """
    res, blocks = G.img_resolution, G.synthesis.blocks
    channels = getattr(blocks[min(cfg.feature_block, len(blocks)) - 1], "out_channels", G.w_dim)
    k = (2 * cfg.radius_px(cfg.r2, res) + 1) ** 2
    q = (2 * cfg.radius_px(cfg.r1, res) + 3) ** 2
    return 4 * channels * n_points * (3 * k + 10 * q)


def default_memory_budget(device: torch.device) -> int:
    """Bytes a drag's tracking and motion terms may take: half the device's memory (CUDA) or of the RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_drag_memory(G: Generator, cfg: DragConfig, n_points: int, budget: int) -> None:
    """A DragInputError, in words, when the drag would need more than `budget` bytes (drag_memory_bytes)."""
    need = drag_memory_bytes(G, cfg, n_points)
    if need > budget:
        raise DragInputError(
            f"This drag would need about {need / 2**30:.1f} GB for point tracking ({n_points} points, R2 {cfg.r2:g}, "
            f"R1 {cfg.r1:g} on a {G.img_resolution}-px model); the bound here is {budget / 2**30:.1f} GB: "
            "use fewer points or smaller radii")


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


# ----------------------------------------------------------------------------
# Scheduling.

class FrameSchedule:
    """Which steps render a frame (image tail + a yield) and which read results back from the device.

    A frame is rendered at most every `frame_every` steps and, when `frame_interval_s` > 0, at most
    once per that many seconds, so a viewer gets a steady rate and the drag never waits for it. When
    `frame_share` > 0, frames are also spaced so that rendering them (`rendered` says how long the last
    one took) is at most that share of the time: where a frame costs as much as a step, the drag
    shows one every few steps instead of spending half its time on pictures.
    Between frames the host reads back every `check_every` steps whether the handles arrived (the setting's 0:
    every step when `reads_handles`, the local steps having read them back already; else every 10th).
    """

    def __init__(self, cfg: DragConfig, clock: Callable[[], float] = time.perf_counter, reads_handles: bool = False):
        self.cfg = cfg
        self.clock = clock
        self.check_every = cfg.check_every or (1 if reads_handles else DEFAULT_CHECK_EVERY)
        self.last_frame = -math.inf
        self.gap = 0.0  # seconds from one frame to the next that keep frames within their share

    def render(self, step: int) -> bool:
        if step % self.cfg.frame_every:
            return False
        now = self.clock()
        if now - self.last_frame < max(self.cfg.frame_interval_s, self.gap):
            return False
        self.last_frame = now
        return True

    def rendered(self, seconds: float) -> None:
        """The frame just decided on took `seconds` to render."""
        if self.cfg.frame_share > 0:
            self.gap = seconds / self.cfg.frame_share

    def timed(self, render: Callable[[], T]) -> T:
        """`render()`, its time passed to `rendered` (on a GPU only the launch: frames stay cheap there)."""
        t0 = self.clock()
        out = render()
        self.rendered(self.clock() - t0)
        return out

    def sync(self, steps_done: int, rendered: bool) -> bool:
        return rendered or steps_done >= self.cfg.max_steps or steps_done % self.check_every == 0


def rowcol(points_xy: list[list[float]], device: torch.device | str) -> torch.Tensor:
    """(x, y) points -> [N, 2] (row, col) float32 tensor."""
    return torch.tensor([[y, x] for x, y in points_xy], device=device, dtype=torch.float32).reshape(-1, 2)


def xy(points_rc: torch.Tensor) -> list[list[float]]:
    """[N, 2] (row, col) tensor -> (x, y) points on the host."""
    return [[float(c), float(r)] for r, c in points_rc.cpu().numpy()]


def features(G: Generator, ws: torch.Tensor, block: int, noise_mode: str,
             low: torch.dtype | bool = False) -> list[torch.Tensor]:
    """The feature maps of blocks 1..block (1-based), with autograd."""
    with torch.enable_grad():
        return G.synthesis.features(ws, stop=block, noise_mode=noise_mode, use_fp16=low)


Part = tuple[torch.Tensor, Origin, torch.Tensor]  # (a feature map or crop, its origin, the handles it serves)


def step_features(G: Generator, ws: torch.Tensor, block: int, noise_mode: str, low: torch.dtype | bool,
                  local: bool, points: torch.Tensor, reach_px: float) -> tuple[list[torch.Tensor], list[Part]]:
    """One step's features, with autograd: (whole maps to finish a frame from, the parts the step reads).
    A part is the block's map, or a crop of it, with its origin and the indices of the handles read there.
    `local`: crop the high-resolution blocks (`window.py`), one crop per group of nearby handles."""
    plans = plan_windows(G, block, points.tolist(), reach_px) if local else None
    if plans is None:
        feats = features(G, ws, block, noise_mode, low)
        return feats, [(feats[-1], (0, 0), torch.arange(len(points), device=points.device))]
    with torch.enable_grad():
        whole, crops = windows_features(G, ws, block, [w for w, _ in plans], noise_mode, low)
    return whole, [(c, w.origin, torch.tensor(g, device=points.device)) for c, (w, g) in zip(crops, plans)]


def track_parts(parts: list[Part], points: torch.Tensor, refs: torch.Tensor, window: torch.Tensor, metric: str,
                resolution: int, size: int) -> torch.Tensor:
    """`track_points` on each part for its handles: [N, 2] rowcol."""
    out = points.clone()
    for feat, origin, idx in parts:
        out[idx] = track_points(feat.detach(), points[idx], refs[idx], window, metric, resolution, origin, size)
    return out


def motion_parts(parts: list[Part], points: torch.Tensor, targets: torch.Tensor, r1: int, resolution: int,
                 size: int) -> torch.Tensor:
    """`motion_loss` summed over the parts, each for its handles (a sum over handles, as one call on the map)."""
    losses = [motion_loss(feat, points[idx], targets[idx], r1, resolution, origin, size) for feat, origin, idx in parts]
    return losses[0] if len(losses) == 1 else torch.stack(losses).sum()


def reference_parts(parts: list[Part], points: torch.Tensor, resolution: int, size: int) -> torch.Tensor:
    """The handles' features, each read from its part: [N, C]."""
    refs = torch.empty(len(points), parts[0][0].shape[1], device=points.device)
    for feat, origin, idx in parts:
        refs[idx] = sample_resized(feat.detach(), points[idx], resolution, origin, size).T
    return refs


def reference_features(G: Generator, ws: torch.Tensor, points_xy: list[list[float]], block: int,
                       noise_mode: str) -> torch.Tensor:
    """The handles' features on the image of `ws`: what tracking looks for. [N, C]."""
    with torch.no_grad():
        feat = G.synthesis.features(ws, stop=block, noise_mode=noise_mode)[-1].float()
    return sample_resized(feat, rowcol(points_xy, ws.device), G.img_resolution).T


def render(G: Generator, ws: torch.Tensor, noise_mode: str, low: torch.dtype | bool = False) -> np.ndarray:
    with torch.no_grad():
        return image_to_uint8(G.synthesis(ws, noise_mode=noise_mode, use_fp16=low))


# ----------------------------------------------------------------------------
# The method.

def start_handles(job: DragJob) -> list[list[float]]:
    """Where the drag starts each handle: Nearest (if asked) moves it towards an edge; then whole pixels."""
    cfg, res = job.config, job.G.img_resolution
    handles = job.handles_xy
    if cfg.nearest:
        image = job.image if job.image is not None else render(job.G, job.w_start, job.noise_mode)
        handles = nearest_edge_points(image, handles, cfg.r3 * res / 512, cfg.nearest_rate)
    # Tracking works on whole pixels, as the official code does.
    return [[float(round(x)), float(round(y))] for x, y in handles]


def partial_mask(editable: torch.Tensor | None) -> bool:
    """A mask that leaves something editable and something fixed (anything else: no mask term)."""
    return editable is not None and bool(editable.any()) and not bool(editable.all())


def optimize_latent(job: DragJob, latent: torch.Tensor, handles_xy: list[list[float]],
                    refs: torch.Tensor | None = None, start_xy: list[list[float]] | None = None,
                    ) -> Iterator[DragFrame]:
    """Optimize the first rows of `latent` until the handles reach the targets, max_steps, or `job.stop`.

    handles_xy: where the handles are on `latent`'s image; refs: [N, C] the features they are tracked by
    (None: their features on `latent`'s image, as the paper). The rows past `rows` stay as in `latent`.
    The drag loop, kept as one function (over the 80 lines aimed for): its numbered parts share the step's
    state (points, refs, the pending read-backs, the schedule, Adam), which split functions would pass around whole.
    """
    G, cfg, res, dev = job.G, job.config, job.G.img_resolution, latent.device
    # 1. Set up: points as (row, col), radii in pixels, the fixed area at feature resolution, Adam.
    block = min(cfg.feature_block, len(G.synthesis.blocks))
    rows = min(cfg.rows, G.num_ws)
    points, targets = rowcol(handles_xy, dev), rowcol(job.targets_xy, dev)
    r1 = cfg.radius_px(cfg.r1, res)
    window = square_offsets(cfg.radius_px(cfg.r2, res), dev)
    fixed = None
    if partial_mask(job.editable) and cfg.mask_term in STEP_MASK_TERMS:  # composite settles after the drag
        side = res if cfg.mask_term == "image" else G.synthesis.blocks[block - 1].resolution  # the term's map
        fixed = downsample_mask(~job.editable.to(dev), side)  # [1, 1, side, side]
    low = cfg.compute_dtype(dev)
    local = fixed is None and cfg.local_steps(dev)  # the mask term reads the whole map
    size = G.synthesis.blocks[block - 1].resolution
    reach = float(window.abs().max()) + r1 + 3  # tracking window, then the motion disc and its bilinear read
    tail = latent[:, rows:].detach()
    param = (latent[:, :rows] if job.latent_space == "w+" else latent[:, :1]).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=cfg.lr)
    # The layers driven by the kept rows: their modulated weights, once per drag (StyleGAN2 generators).
    frozen = FrozenStyles(G.synthesis, latent, rows) if isinstance(G.synthesis, SynthesisNetwork) else None

    def full_latent() -> torch.Tensor:                                          # [1, num_ws, w_dim]
        return torch.cat([param.expand(-1, rows, -1), tail], dim=1)

    schedule, feat0, img0 = FrameSchedule(cfg, reads_handles=local), None, None  # local: the host has them
    pending: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (step, points, distances, loss)
    step, reason, t_last = 0, "", time.perf_counter()
    deadline = t_last + cfg.time_limit_s if cfg.time_limit_s else math.inf
    while True:
        # 2. One step: stop first, then features, tracking, loss, an optional frame, the update.
        if job.stop.is_set() or step >= cfg.max_steps or time.perf_counter() > deadline:
            reason = "stopped" if job.stop.is_set() else "max_steps" if step >= cfg.max_steps else "time_limit"
            if pending:  # steps not yet read back: one of them may have arrived (the latent froze there)
                reached_at, (s, p, _, _) = _first_arrival(pending, res)
                if reached_at is not None:
                    step, reason = reached_at, "reached"
            break
        show = schedule.render(step)
        ws = full_latent()
        with frozen_styles(frozen):
            whole, parts = step_features(G, ws, block, job.noise_mode, low, local, points, reach)
        parts = [(f.float(), origin, idx) for f, origin, idx in parts]          # [1, C, s, s] or crops of it
        if feat0 is None:
            feat0 = parts[0][0].detach()  # the whole map where a mask term needs it (no crops then)
            if refs is None:
                refs = reference_parts(parts, points, res, size)               # [N, C]
        with torch.no_grad():
            points = track_parts(parts, points, refs, window, cfg.tracking, res, size)
            distances = (targets - points).norm(dim=1)                          # [N]
            arrived = (distances <= stop_distance(res)).all()
        if job.on_step is not None:
            job.on_step(step, ws.detach(), points)
        with torch.enable_grad(), frozen_styles(frozen):
            loss = motion_parts(parts, points, targets, r1, res, size)
            if fixed is not None:
                loss, img0 = _add_mask_term(loss, job, ws, whole, parts[0][0], feat0, img0, fixed, low)
        if show:
            with torch.no_grad(), frozen_styles(frozen):
                img = schedule.timed(lambda: G.synthesis.image_from_features(
                    ws.detach(), [x.detach() for x in whole], job.noise_mode, use_fp16=low))
        _adam_step_unless(arrived, param, opt, loss)
        pending.append((step, points, distances, loss.detach()))
        step += 1

        # 3. Sync point (a frame, the end, or a check for arrival): read back what the device computed.
        if not schedule.sync(step, show):
            continue
        reached_at, (s, p, d, l) = _first_arrival(pending, res)
        now = time.perf_counter()
        ms, t_last, pending = (now - t_last) * 1000 / len(pending), now, []
        if reached_at is not None:
            step, reason = reached_at, "reached"
            break
        if show:
            yield DragFrame(s, xy(p), job.targets_xy, d.tolist(), float(l), ms, image_to_uint8(img),
                            latent=ws.detach(), start_xy=start_xy)

    # 4. The last frame: the final latent and its image.
    final = full_latent().detach().clone()
    handles = xy(points if reason != "reached" else p)
    dists = (targets - rowcol(handles, dev)).norm(dim=1).tolist()
    with frozen_styles(frozen):
        image = render(G, final, job.noise_mode, low)
    yield DragFrame(step, handles, job.targets_xy, dists, float("nan"), 0.0, image,
                    done=True, reason=reason, latent=final, start_xy=start_xy)


def _add_mask_term(loss: torch.Tensor, job: DragJob, ws: torch.Tensor, whole: list[torch.Tensor],
                   feat: torch.Tensor, feat0: torch.Tensor, img0: torch.Tensor | None, fixed: torch.Tensor,
                   low: torch.dtype | bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`loss` plus the mask term `job.config.mask_term` names, and the start image (that term's, kept).

    'features' (the paper's): `mask_loss` on the feature block, `fixed` at its resolution. 'image': the image
    the latent draws (the rest of the generator from `whole`, with autograd) against the start's, `fixed` at
    the image's resolution, weighted by `image_mask_weight`.
    """
    cfg = job.config
    if cfg.mask_term == "features":
        return loss + mask_loss(feat, feat0, fixed, cfg.lambda_mask), img0
    img = job.G.synthesis.image_from_features(ws, whole, job.noise_mode, use_fp16=low).float()
    img0 = img.detach() if img0 is None else img0
    weight = image_mask_weight(cfg.lambda_mask, feat0, len(job.handles_xy))
    return loss + image_mask_loss(img, img0, fixed, weight), img0


def _adam_step_unless(arrived: torch.Tensor, param: torch.Tensor, opt: torch.optim.Optimizer,
                      loss: torch.Tensor) -> None:
    """One Adam step, undone without a host sync if every handle had already arrived."""
    before = param.detach().clone()
    opt.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss.backward()
    opt.step()
    with torch.no_grad():
        param.copy_(torch.where(arrived, before, param))


def _first_arrival(pending: list, resolution: int) -> tuple[int | None, tuple]:
    """The first pending step at which every handle had arrived (and that step's record), else the last step's."""
    for s, p, d, l in pending:
        d = d.cpu().numpy()
        if (d <= stop_distance(resolution)).all():
            return s, (s, p, d, l)
    s, p, d, l = pending[-1]
    return None, (s, p, d.cpu().numpy(), l)

