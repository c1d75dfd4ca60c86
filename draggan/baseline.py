"""The straightforward drag step (method 'straightforward'), as the official renderer computes it: our yardstick.

One full synthesis with autograd (all blocks, image included), the feature map resized
to the image size, tracking by slicing windows with host-side indices, motion
supervision by `grid_sample` on the resized map, the mask term at image resolution.
The benchmark compares the DragGAN method against it, and a test checks that both
compute the same drag.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from stylegan2.networks import Generator, image_to_uint8

from . import engine
from .config import DragConfig, DragFrame, DragJob



def baseline_drag(G: Generator, w0: torch.Tensor, handles_xy, targets_xy, cfg: DragConfig,
                  fixed_mask: torch.Tensor | None = None, noise_mode: str = "const",
                  ) -> Iterator[tuple[list[list[int]], torch.Tensor, np.ndarray, float, bool]]:
    """Yield (tracked points as [[row, col]], W+ after the step's update, image before it, loss, arrived) per step.

    w0: [1, num_ws, w_dim]; fixed_mask: [H, W] with 1 where the image must stay fixed.
    Optimizes W+ rows [:cfg.rows]; runs cfg.max_steps steps or until every handle arrives
    (that last step yields its points and image with arrived=True and does not update).
    """
    h = w = G.img_resolution
    feature_idx = min(cfg.feature_block, len(G.synthesis.blocks)) - 1
    rows = cfg.rows
    r1, r2 = cfg.radius_px(cfg.r1, h), cfg.radius_px(cfg.r2, h)
    points = [[int(round(y)), int(round(x))] for x, y in handles_xy]
    targets = [[y, x] for x, y in targets_xy]
    w0 = w0.detach()
    latent = w0[:, :rows].clone().requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=cfg.lr)
    xs = torch.linspace(0, h, h, device=w0.device)
    ys = torch.linspace(0, w, w, device=w0.device)
    xx, yy = torch.meshgrid(xs, ys, indexing="ij")
    feat_refs = feat0_resize = None
    for _ in range(cfg.max_steps):
        ws = torch.cat([latent, w0[:, rows:]], dim=1)
        # The official app's generator is in eval mode, so its modulated convs run fused.
        img, feats = G.synthesis(ws, noise_mode=noise_mode, return_features=True, fused_modconv=True)
        feat_resize = F.interpolate(feats[feature_idx], [h, w], mode="bilinear")
        if feat_refs is None:
            feat0_resize = feat_resize.detach()
            feat_refs = [feat0_resize[:, :, py, px] for py, px in points]

        with torch.no_grad():
            for j, (py, px) in enumerate(points):
                up, down = max(py - r2, 0), min(py + r2 + 1, h)
                left, right = max(px - r2, 0), min(px + r2 + 1, w)
                patch = feat_resize[:, :, up:down, left:right]
                d = patch - feat_refs[j].reshape(1, -1, 1, 1)
                dist = d.abs().sum(1) if cfg.tracking == "l1" else torch.linalg.norm(d, dim=1)
                idx = int(torch.argmin(dist.view(1, -1), -1).item())
                points[j] = [idx // (right - left) + up, idx % (right - left) + left]

        loss = 0
        stop = True
        for j, (py, px) in enumerate(points):
            direction = torch.tensor([targets[j][1] - px, targets[j][0] - py], dtype=torch.float32)
            norm = torch.linalg.norm(direction)
            if norm > max(2 / 512 * h, 2):
                stop = False
            if norm > 1:
                distance = ((xx - py) ** 2 + (yy - px) ** 2) ** 0.5
                relis, reljs = torch.where(distance < r1)
                direction = direction / (norm + 1e-7)
                gridh = (relis + direction[1]) / (h - 1) * 2 - 1
                gridw = (reljs + direction[0]) / (w - 1) * 2 - 1
                grid = torch.stack([gridw, gridh], dim=-1).unsqueeze(0).unsqueeze(0)
                target = F.grid_sample(feat_resize.float(), grid, align_corners=True).squeeze(2)
                loss = loss + F.l1_loss(feat_resize[:, :, relis, reljs].detach(), target)
        if fixed_mask is not None:
            m = fixed_mask.to(feat_resize.dtype)[None, None]
            loss = loss + cfg.lambda_mask * F.l1_loss(feat_resize * m, feat0_resize * m)
        image = image_to_uint8(img)
        loss_value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
        if stop:
            yield [list(p) for p in points], torch.cat([latent, w0[:, rows:]], 1).detach().clone(), image, loss_value, True
            return
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield [list(p) for p in points], torch.cat([latent, w0[:, rows:]], 1).detach().clone(), image, loss_value, False


def straightforward(job: DragJob) -> Iterator[DragFrame]:
    """`baseline_drag` as a drag method: a frame per step (every `frame_every`-th), then a last frame."""
    cfg, G = job.config, job.G
    handles = engine.start_handles(job)
    fixed = None
    if job.editable is not None and bool(job.editable.any()) and not bool(job.editable.all()):
        fixed = ~job.editable
    latent, step, reason = job.w_start, 0, "max_steps"
    points = [[y, x] for x, y in handles]
    t_last = time.perf_counter()
    for step, (points, ws, image, loss, arrived) in enumerate(
            baseline_drag(G, job.w_start, handles, job.targets_xy, cfg, fixed, job.noise_mode)):
        now = time.perf_counter()
        ms, t_last = (now - t_last) * 1000, now
        if arrived:
            reason = "reached"
            break
        if step % cfg.frame_every == 0:
            xy = [[float(c), float(r)] for r, c in points]
            yield DragFrame(step, xy, job.targets_xy, _distances(xy, job.targets_xy), loss, ms, image,
                            latent=latent, start_xy=handles)
        latent = ws
        if job.stop.is_set():
            reason = "stopped"
            step += 1
            break
    else:
        step = cfg.max_steps
    xy = [[float(c), float(r)] for r, c in points]
    yield DragFrame(step, xy, job.targets_xy, _distances(xy, job.targets_xy), float("nan"), 0.0,
                    engine.render(G, latent, job.noise_mode), done=True, reason=reason, latent=latent,
                    start_xy=handles)


def _distances(handles_xy: list[list[float]], targets_xy: list[list[float]]) -> list[float]:
    return [float(np.hypot(t[0] - h[0], t[1] - h[1])) for h, t in zip(handles_xy, targets_xy)]
