"""Paired image reconstruction (the UserControllableLT protocol; Auto DragGAN Table 2). Any generator.

For each pair: w1 from a seed; w2 = w1 moved towards another seed's latent on the rows the
drag optimizes (`perturb_latent`), so I2 is reachable by the drag. Dense optical flow I1 -> I2
(OpenCV DIS) gives, at pixels whose flow passes a forward-backward check and lands inside the
image, 32 random handle -> target drags. Drag I1 and compare the result with I2: MSE x100
(images in [0, 1]) and LPIPS x10 (when the perceptual network loads). The same drags for every method.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from draggan.config import DragConfig
from stylegan2.networks import Generator

from .ray_runner import map_jobs
from .report import ExperimentResult, Progress, mean
from .workbench import Bench, DragSettings, check_methods, edit, render, seed_latent, start_picture


@dataclasses.dataclass
class ReconstructionSettings(DragSettings):
    vectors: int = 32              # flow vectors dragged per pair
    strength: float = 0.5          # w2 = w1 + strength * (w_other - w1) on the perturbed rows
    rows: int | None = None        # rows of W+ perturbed; None: the drag's optimized rows (DragConfig.rows)
    fb_tolerance: float = 0.5      # forward-backward flow mismatch allowed, pixels
    lpips: bool = True             # LPIPS x10 when pti's perceptual network loads


@dataclasses.dataclass
class ReconstructionPair:
    """Two latents (by seed) and the drags the flow from I1 to I2 gives."""
    index: int
    seed_1: int                     # w1
    seed_other: int                 # w2 = w1 moved towards this seed's latent
    handles_xy: list[list[float]]   # pixels of I1
    targets_xy: list[list[float]]   # where the flow takes them in I2


def perturb_latent(w1: torch.Tensor, w_other: torch.Tensor, rows: int, strength: float) -> torch.Tensor:
    """w1 [1, num_ws, w_dim] with rows < `rows` moved `strength` of the way to w_other's; the rest as w1."""
    w2 = w1.clone()
    w2[:, :rows] = w1[:, :rows] + strength * (w_other[:, :rows] - w1[:, :rows])
    return w2


def flow_vectors(image_1: np.ndarray, image_2: np.ndarray, count: int, rng: np.random.Generator,
                 fb_tolerance: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (handle, target) pairs [n, 2] (x, y) from the dense flow image_1 -> image_2.

    Handles are distinct whole pixels whose flow lands inside the image and whose backward flow
    returns within `fb_tolerance` pixels. Fewer than `count` when fewer pixels are reliable.
    """
    g1, g2 = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (image_1, image_2))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    fwd = dis.calc(g1, g2, None)                                               # [H, W, 2] (dx, dy)
    bwd = dis.calc(g2, g1, None)
    h, w = g1.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = xs + fwd[..., 0], ys + fwd[..., 1]                               # where each pixel goes
    back = cv2.remap(bwd, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mismatch = np.hypot(fwd[..., 0] + back[..., 0], fwd[..., 1] + back[..., 1])
    ok = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1) & (mismatch <= fb_tolerance)
    idx = np.flatnonzero(ok)
    pick = rng.choice(idx, size=min(count, idx.size), replace=False)
    handles = np.stack([xs.flat[pick], ys.flat[pick]], axis=1).astype(np.float64)
    targets = np.stack([tx.flat[pick], ty.flat[pick]], axis=1).astype(np.float64)
    return handles, targets


def reconstruction_pairs(G: Generator, count: int, settings: ReconstructionSettings, rows: int,
                         ) -> list[ReconstructionPair]:
    """`count` pairs with their flow drags, deterministic from settings.seed."""
    rng = np.random.default_rng(settings.seed)
    pairs = []
    for i in range(count):
        s1, s2 = (int(s) for s in rng.integers(0, 2 ** 31 - 1, size=2))
        w1, w2 = _latents(G, s1, s2, settings, rows)
        handles, targets = flow_vectors(render(G, w1), render(G, w2), settings.vectors, rng, settings.fb_tolerance)
        pairs.append(ReconstructionPair(i, s1, s2, handles.tolist(), targets.tolist()))
    return pairs


def _latents(G: Generator, seed_1: int, seed_other: int, settings: ReconstructionSettings, rows: int):
    w1 = seed_latent(G, seed_1, settings.psi)
    return w1, perturb_latent(w1, seed_latent(G, seed_other, settings.psi), rows, settings.strength)


def mse_x100(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error x100 of two uint8 images [H, W, 3], as values in [0, 1]."""
    return float(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2) * 100)


@dataclasses.dataclass
class ReconstructionJob:
    method: str
    config: DragConfig
    pair: ReconstructionPair
    settings: ReconstructionSettings
    rows: int


def reconstruction_record(bench: Bench, job: ReconstructionJob) -> dict[str, Any]:
    """Drag I1 along the pair's flow vectors with one method; MSE of the result and of I1 to I2."""
    G, pair = bench.G, job.pair
    w1, w2 = _latents(G, pair.seed_1, pair.seed_other, job.settings, job.rows)
    image_1, image_2 = start_picture(bench, w1), render(G, w2)
    result = edit(bench, job.method, w1, pair.handles_xy, pair.targets_xy, job.config, image=image_1)
    return {"method": job.method, "pair": pair.index, "seed_1": pair.seed_1, "seed_other": pair.seed_other,
            "vectors": len(pair.handles_xy), "mse_before": mse_x100(image_1, image_2),
            "mse": mse_x100(result.image, image_2), "steps": result.steps, "seconds": result.seconds,
            "_image": result.image}


def _lpips_x10(records: list[dict[str, Any]], bench: Bench, pairs: Sequence[ReconstructionPair],
               settings: ReconstructionSettings, rows: int) -> str | None:
    """Add lpips and lpips_before to each record; None, or the note why LPIPS is unavailable."""
    try:
        from pti.perceptual import load_perceptual

        perceptual = load_perceptual(next(bench.G.parameters()).device)
    except Exception as e:  # missing weights offline, or a damaged file: LPIPS is optional here
        return f"lpips unavailable: {e}"
    G = bench.G
    by_index = {p.index: p for p in pairs}
    with torch.no_grad():
        for r in records:
            pair = by_index[r["pair"]]
            w1, w2 = _latents(G, pair.seed_1, pair.seed_other, settings, rows)
            x1, x2 = G.synthesis(w1, noise_mode="const"), G.synthesis(w2, noise_mode="const")   # [1, 3, H, W]
            out = torch.from_numpy(r["_image"]).permute(2, 0, 1)[None].to(x1) / 127.5 - 1
            r["lpips"] = float(perceptual(out, x2).mean()) * 10
            r["lpips_before"] = float(perceptual(x1, x2).mean()) * 10
    return None


def run_reconstruction(bench: Bench, methods: Sequence[str], settings: ReconstructionSettings, pairs_count: int,
                       progress: Progress | None = None, ray: str | None = None) -> ExperimentResult:
    """Every method on the same flow drags; MSE x100 (and LPIPS x10) of the result to I2, per method."""
    check_methods(list(methods), bench)
    cfg = settings.drag_config(bench.model)
    rows = settings.rows or cfg.rows
    pairs = reconstruction_pairs(bench.G, pairs_count, settings, rows)
    jobs = [ReconstructionJob(m, cfg, p, settings, rows) for m in methods for p in pairs]
    records = map_jobs(reconstruction_record, jobs, bench, ray, progress, label=lambda j: f"{j.method} pair {j.pair.index}")
    note = _lpips_x10(records, bench, pairs, settings, rows) if settings.lpips else None
    for r in records:
        del r["_image"]
    summary = {}
    for m in methods:
        mine = [r for r in records if r["method"] == m]
        summary[m] = {"pairs": len(mine), "mse_before": mean(r["mse_before"] for r in mine),
                      "mse": mean(r["mse"] for r in mine),
                      "steps": mean(r["steps"] for r in mine), "seconds_per_edit": mean(r["seconds"] for r in mine)}
        if settings.lpips and note is None:
            summary[m].update(lpips_before=mean(r["lpips_before"] for r in mine), lpips=mean(r["lpips"] for r in mine))
    info = {**dataclasses.asdict(settings), "rows": rows, "model": bench.model, "pair_count": pairs_count,
            "drag_config": dataclasses.asdict(cfg)}
    return ExperimentResult("reconstruction", info, summary, records, [note] if note else [])
