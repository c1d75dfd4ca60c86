"""The composite mask (mask_term 'composite', an option; the default is 'image'): drag freely, then settle the latent onto a composite image.

The per-step mask terms (`engine.mask_loss`, `engine.image_mask_loss`) hold the area outside the mask while the
motion term pushes the feature map; under a firm hold the map moves without the picture, tracking follows the
map and the drag stops before the handles have arrived (docs/mask.md). Here the drag runs as without a mask;
`settle` then fits the image to the dragged one inside the mask and the start one outside it (`composite_loss`),
with tracking only watching: a state is kept only while every handle still tracks as arrived.
"""
from __future__ import annotations

import math
import time
from typing import Iterator

import torch

from stylegan2.networks import image_to_uint8

from . import engine
from .config import DragFrame, DragJob
from .engine import (FrameSchedule, features, partial_mask, reference_features, render, rowcol,
                     square_offsets, start_handles, stop_distance, track_points, xy)
from .features import downsample_mask

def draggan(job: DragJob) -> Iterator[DragFrame]:
    """The DragGAN optimizer from `job.w_start`: frames as scheduled, then a last frame (done=True)."""
    handles = start_handles(job)
    yield from drag_latent(job, job.w_start, handles, start_xy=handles)


def drag_latent(job: DragJob, latent: torch.Tensor, handles_xy: list[list[float]],
                refs: torch.Tensor | None = None, start_xy: list[list[float]] | None = None,
                ) -> Iterator[DragFrame]:
    """`optimize_latent`, then, with a mask and mask_term 'composite', `settle`: the drag runs without a mask
    term and the latent is then fitted to the dragged image inside the mask and the start image outside it."""
    if not (job.config.mask_term == "composite" and partial_mask(job.editable)):
        yield from engine.optimize_latent(job, latent, handles_xy, refs=refs, start_xy=start_xy)
        return
    if refs is None:
        refs = reference_features(job.G, latent, handles_xy, min(job.config.feature_block, len(job.G.synthesis.blocks)),
                                  job.noise_mode)
    for frame in engine.optimize_latent(job, latent, handles_xy, refs=refs, start_xy=start_xy):
        if frame.done and frame.reason in ("reached", "max_steps"):
            yield from settle(job, frame, refs, start_xy)
        else:
            yield frame


def composite_loss(img: torch.Tensor, img0: torch.Tensor, img1: torch.Tensor, fixed: torch.Tensor,
                   weight: float = 1.0) -> torch.Tensor:
    """mean over the fixed area of |I - I0| + mean over the editable area of |I - I1|.

    img0: the start image, img1: the freely dragged one; fixed: [1, 1, H, W], the fraction of each pixel that
    must stay as it started. Each a mean over its own area: the same at any resolution and however much is
    painted.
    """
    area = img.shape[1] * torch.stack([fixed.sum(), (1 - fixed).sum()]).clamp(min=1e-8)
    return weight * ((img - img0).abs() * fixed).sum() / area[0] + ((img - img1).abs() * (1 - fixed)).sum() / area[1]


SETTLE_LR = 0.1   # Adam's step on the blend weights: a tenth of the way between the start and the dragged latent
PATIENCE = 3      # checks (of check_every steps) without a 1% gain before `settle` stops


def settle(job: DragJob, dragged: DragFrame, refs: torch.Tensor, start_xy: list[list[float]] | None,
           ) -> Iterator[DragFrame]:
    """After a free drag (`dragged`, its last frame): fit the latent's image to the composite of the dragged image
    inside the mask and the start image outside it (`composite_loss`, the outside weighted lambda / 10).

    The latent is a blend, per row and channel, of the start and the dragged latent (Adam on the blend weights).
    Tracking only watches here (no motion term tempts the features away from the image), and only a state where
    every handle is still within the stop distance is kept: the last frame is the best such state (the dragged
    latent if none beats it). Stops when the best loss gained under 1% over PATIENCE checks, at max_steps
    (counted with the drag's), or on `job.stop`; the last frame keeps the drag's reason.
    """
    G, cfg, res = job.G, job.config, job.G.img_resolution
    dev = dragged.latent.device
    block = min(cfg.feature_block, len(G.synthesis.blocks))
    rows = min(cfg.rows, G.num_ws)
    low = cfg.compute_dtype(dev)
    fixed = downsample_mask(~job.editable.to(dev), res)                        # [1, 1, H, W]
    with torch.no_grad():
        img0 = G.synthesis(job.w_start, noise_mode=job.noise_mode).float()  # what the user saw before the drag
        img1 = G.synthesis(dragged.latent, noise_mode=job.noise_mode).float()
    window = square_offsets(cfg.radius_px(cfg.r2, res), dev)
    points, targets = rowcol(dragged.handles_xy, dev), rowcol(job.targets_xy, dev)
    latent = dragged.latent
    tail = latent[:, rows:].detach()
    cut = rows if job.latent_space == "w+" else 1
    base = job.w_start[:, :cut].detach()
    delta = latent[:, :cut].detach() - base
    alpha = torch.ones_like(delta, requires_grad=True)  # per row and channel: 1 = the dragged latent, 0 = the start
    opt = torch.optim.Adam([alpha], lr=SETTLE_LR)
    weight = cfg.lambda_mask / 10                       # λ 10: the outside's mean counts as much as the inside's

    def full_latent() -> torch.Tensor:
        return torch.cat([(base + alpha * delta).expand(-1, rows, -1), tail], dim=1)

    schedule, step, checks = FrameSchedule(cfg), dragged.step, [math.inf]
    best, best_loss, best_points = latent.detach().clone(), math.inf, points
    stop_px = stop_distance(res)
    t_last = time.perf_counter()
    while not job.stop.is_set() and step < cfg.max_steps:
        ws = full_latent()
        whole = features(G, ws, block, job.noise_mode, low)
        with torch.no_grad():
            points = track_points(whole[-1].detach().float(), points, refs, window, cfg.tracking, res)
        if job.on_step is not None:
            job.on_step(step, ws.detach(), points)
        with torch.enable_grad():
            img = G.synthesis.image_from_features(ws, whole, job.noise_mode, use_fp16=low).float()
            loss = composite_loss(img, img0, img1, fixed, weight)
        value = float(loss.detach())
        if value < best_loss and bool(((targets - points).norm(dim=1) <= stop_px).all()):
            best, best_loss, best_points = ws.detach().clone(), value, points
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss.backward()
        opt.step()
        step += 1
        if schedule.render(step):
            now = time.perf_counter()
            ms, t_last = (now - t_last) * 1000, now
            dists = (targets - points).norm(dim=1).tolist()
            yield DragFrame(step, xy(points), job.targets_xy, dists, value, ms, image_to_uint8(img.detach()),
                            latent=ws.detach(), start_xy=start_xy)
        if step % schedule.check_every == 0:
            checks.append(best_loss)
            if len(checks) > PATIENCE and best_loss >= 0.99 * checks[-1 - PATIENCE]:
                break

    dists = (targets - best_points).norm(dim=1).tolist()
    reason = "stopped" if job.stop.is_set() else dragged.reason
    yield DragFrame(step, xy(best_points), job.targets_xy, dists, float("nan"), 0.0,
                    render(G, best, job.noise_mode, low), done=True, reason=reason, latent=best, start_xy=start_xy)
