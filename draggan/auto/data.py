"""Training data for Auto DragGAN, made on the fly from the frozen generator.

Everything random is drawn from generators seeded by (config seed, step), so a batch is a pure
function of its step number: resuming a run needs no data-loader state.

Pseudo drags: w0 = mapping(z), w* = mapping(z') independent; w_i = w_{i-1} + λ (w* − w_{i-1}) on the
moving rows. Handles are points of I_0 tracked through I_1..I_n; the tracker is dense optical flow
(OpenCV DIS) from I_0 to each I_i with a forward-backward consistency check: sub-pixel, and measured
against the toy faces' landmark oracle as accurate as nearest neighbours in the generator's features
(docs/auto_draggan.md, "Correspondences").
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from stylegan2.networks import Generator

from .config import AutoConfig
from .networks import sample_patches


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU torch generator for (seed, step, stream): independent streams per purpose."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


@torch.no_grad()
def w_statistics(G: Generator, n: int = 4096, seed: int = 12345) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of mapping(z) at psi 1: ([w_dim], [w_dim]), on G's device."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    w = G.mapping(z.to(G.mapping.w_avg.device))[:, 0]                             # [n, w_dim]
    return w.mean(0), w.std(0).clamp(min=1e-4)


def sample_ws(G: Generator, cfg: AutoConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """n mapping samples with truncation psi uniform in [psi_min, 1] -> [n, num_ws, w_dim]."""
    device = G.mapping.w_avg.device
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    psi = (cfg.psi_min + (1 - cfg.psi_min) * torch.rand(n, 1, 1, generator=gen)).to(device)
    w = G.mapping(z)
    return G.mapping.w_avg + psi * (w - G.mapping.w_avg)


def corrupt(w: torch.Tensor, cfg: AutoConfig, w_std: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """w' = w ⊙ M + N on the moving rows (rows zeroed with probability corrupt_p, then noise)."""
    B, num_ws, w_dim = w.shape
    keep = (torch.rand(B, cfg.rows, 1, generator=gen) >= cfg.corrupt_p).to(w)
    noise = torch.randn(B, cfg.rows, w_dim, generator=gen).to(w) * cfg.noise_std * w_std
    return torch.cat([w[:, :cfg.rows] * keep + noise, w[:, cfg.rows:]], dim=1)


def drag_sequence(w0: torch.Tensor, w_star: torch.Tensor, cfg: AutoConfig) -> torch.Tensor:
    """[B, num_ws, w_dim] x 2 -> w_0..w_n [B, n+1, num_ws, w_dim], moving rows only."""
    seq = [w0]
    for _ in range(cfg.n_steps):
        prev = seq[-1]
        moved = prev[:, :cfg.rows] + cfg.step_lambda * (w_star[:, :cfg.rows] - prev[:, :cfg.rows])
        seq.append(torch.cat([moved, prev[:, cfg.rows:]], dim=1))
    return torch.stack(seq, dim=1)


def to_gray(imgs: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W] uint8 luminance."""
    u8 = (imgs * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in u8])


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def flow_track(gray0: np.ndarray, grays: list[np.ndarray], xy: np.ndarray, fb_tolerance: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Track points of one image through others with DIS flow from gray0 to each.

    gray0 [H, W] uint8; grays: n images [H, W]; xy [P, 2] integer (x, y) pixels of gray0.
    -> (positions [n, P, 2] float, consistent [P] bool: forward-backward error <= tolerance in every image).
    """
    dis = _dis()
    H, W = gray0.shape
    out, ok = np.zeros((len(grays), len(xy), 2), np.float32), np.ones(len(xy), bool)
    for i, g in enumerate(grays):
        fwd = dis.calc(gray0, g, None)                                            # [H, W, 2] (dx, dy)
        bwd = dis.calc(g, gray0, None)
        p = xy + fwd[xy[:, 1], xy[:, 0]]
        q = np.clip(np.round(p), 0, [W - 1, H - 1]).astype(int)
        back = p + bwd[q[:, 1], q[:, 0]]
        ok &= (np.linalg.norm(back - xy, axis=1) <= fb_tolerance) & (p >= 0).all(1) & (p <= [W - 1, H - 1]).all(1)
        out[i] = p
    return out, ok


@dataclasses.dataclass
class DragBatch:
    """One batch of pseudo drags (B sequences, K point slots, n steps)."""
    w_seq: torch.Tensor          # [B, n+1, num_ws, w_dim] w_0..w_n
    feat0: torch.Tensor          # [B, C, s, s] features of w_0 at the feature block
    points_xy: torch.Tensor      # [B, n+1, K, 2] each point's (x, y) in I_0..I_n; handle = [:, 0], target = [:, n]
    point_mask: torch.Tensor     # [B, K] bool: a real pair (False = padding)
    step_mask: torch.Tensor      # [B, n, K] bool: pair counts in the drag loss for step i -> i+1
    handle_patches: torch.Tensor  # [B, n, K, C, P, P] F_i at the point's step-i position (drag-loss source)
    images: torch.Tensor         # [B, 2, 3, H, W] I_0 and I_n (for sample sheets)


@torch.no_grad()
def make_batch(G: Generator, cfg: AutoConfig, step: int, batch: int | None = None) -> DragBatch:
    """The pseudo-drag batch for training step `step` (a pure function of cfg.seed and step)."""
    gen = step_generator(cfg.seed, step, 1)
    B, n, res = batch or cfg.batch, cfg.n_steps, G.img_resolution
    ws = sample_ws(G, cfg, 2 * B, gen)
    w_seq = drag_sequence(ws[:B], ws[B:], cfg)                                    # [B, n+1, num_ws, w_dim]
    flat = w_seq.flatten(0, 1)
    imgs, feats = G.synthesis(flat, noise_mode="const", return_features=True)
    imgs = imgs.view(B, n + 1, *imgs.shape[1:])
    feat = feats[cfg.feature_block - 1].view(B, n + 1, *feats[cfg.feature_block - 1].shape[1:])
    grays = to_gray(imgs.flatten(0, 1)).reshape(B, n + 1, res, res)
    scale = res / 512
    g = np.arange(cfg.grid_stride // 2, res, cfg.grid_stride)
    grid = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)          # [P, 2] (x, y)
    picks = torch.randint(1, cfg.train_points + 1, (B,), generator=gen)
    order = torch.rand(B, len(grid), generator=gen)
    K = cfg.train_points
    pts = torch.zeros(B, n + 1, K, 2)
    point_mask = torch.zeros(B, K, dtype=torch.bool)
    for b in range(B):
        tracked, ok = flow_track(grays[b, 0], list(grays[b, 1:]), grid, cfg.flow_fb_tolerance * scale)
        path = np.concatenate([grid[None].astype(np.float32), tracked])          # [n+1, P, 2]
        moved = np.linalg.norm(path[-1] - path[0], axis=1)
        good = np.flatnonzero(ok & (moved > cfg.seq_threshold * scale))
        if len(good) == 0:  # no clear drag in this pair: the most-moved consistent point (or any) stands in
            pool = np.flatnonzero(ok) if ok.any() else np.arange(len(grid))
            good = pool[[moved[pool].argmax()]]
        chosen = good[order[b, good].argsort()[:int(picks[b])].numpy()]
        pts[b, :, :len(chosen)] = torch.from_numpy(path[:, chosen])
        point_mask[b, :len(chosen)] = True
    step_moved = (pts[:, 1:] - pts[:, :-1]).norm(dim=-1)                           # [B, n, K]
    step_mask = point_mask[:, None] & (step_moved > cfg.step_threshold * scale)
    device = w_seq.device
    pts = pts.to(device)
    src = sample_patches(feat[:, :n].flatten(0, 1), pts[:, :n].flatten(0, 1), res, cfg.patch)
    return DragBatch(w_seq=w_seq, feat0=feat[:, 0], points_xy=pts, point_mask=point_mask.to(device),
                     step_mask=step_mask.to(device), handle_patches=src.view(B, n, *src.shape[1:]),
                     images=imgs[:, [0, n]])
