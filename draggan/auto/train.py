"""Training Auto DragGAN: stage 1 (regularizer alone), then stage 2 (predictor + regularizer jointly).

One step counter runs through both stages (step < stage1_steps is stage 1). Learning rates are pure
functions of the step and every batch is a pure function of (seed, step), so the checkpoint
(weights, Adam moments, step, seconds) is all a resume needs to continue bit for bit.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from stylegan2.networks import Generator
from stylegan2.training import save_atomic

from .config import AutoConfig
from .data import DragBatch, corrupt, flow_track, make_batch, sample_ws, step_generator, to_gray, w_statistics
from .files import new_model
from .networks import sample_patches
from .rollout import rollout

CHECKPOINT_NAME = "checkpoint.pt"
EVAL_STEP = 2**40  # the fixed evaluation batch is make_batch(step=EVAL_STEP): never a training step


def lr_at(cfg: AutoConfig, step: int) -> tuple[float, float]:
    """(regularizer lr, predictor lr) at global `step`: constant in stage 1; stage 2 has a linear
    warm-up, then the predictor follows cosine annealing with restarts every cosine_period steps."""
    if step < cfg.stage1_steps:
        return cfg.lr_stage1, 0.0
    s = step - cfg.stage1_steps
    warm = min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    phase = (s % cfg.cosine_period) / cfg.cosine_period
    pred = cfg.lr_pred_min + 0.5 * (cfg.lr_pred - cfg.lr_pred_min) * (1 + math.cos(math.pi * phase))
    return cfg.lr_reg * warm, pred * warm


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [..., *rest] over the positions where mask [...] is True (0 when none is)."""
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim()))).to(x.dtype)
    return (x * m).sum() / (m.sum() * x[0].numel() / mask[0].numel()).clamp(min=1)


class AutoTrainer:
    """The model, its two Adam optimizers and the step counter for one generator."""

    def __init__(self, cfg: AutoConfig, G: Generator, spec: str = ""):
        self.cfg, self.G, self.spec = cfg, G, spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = new_model(cfg, G, spec)
        device = G.mapping.w_avg.device
        self.model.to(device).train()
        w_mean, w_std = w_statistics(G)
        self.model.w_mean.copy_(w_mean)
        self.model.w_std.copy_(w_std)
        self.opt_reg = torch.optim.Adam(self.model.regularizer.parameters(), lr=cfg.lr_stage1)
        self.opt_pred = torch.optim.Adam(self.model.predictor.parameters(), lr=cfg.lr_pred)
        self.step_count, self.train_seconds = 0, 0.0

    @property
    def total_steps(self) -> int:
        return self.cfg.stage1_steps + self.cfg.stage2_steps

    @property
    def stage(self) -> int:
        return 1 if self.step_count < self.cfg.stage1_steps else 2

    def regularizer_loss(self, step: int, n: int) -> torch.Tensor:
        """L_reg = mean |R(w ⊙ M + N) − w| over the moving rows of n fresh drag-like latents.

        The paper corrupts w = mapping(z), whose W+ rows are all equal: the best restoration of such data
        is "copy a clean row", which would undo every drag. We restore latents shaped like the pseudo-drag
        sequence instead: moving rows lerp(w_a, w_b, α), α ~ U[0, 1], other rows w_a.
        """
        gen = step_generator(self.cfg.seed, step, 2)
        with torch.no_grad():
            ws = sample_ws(self.G, self.cfg, 2 * n, gen)
            alpha = torch.rand(n, 1, 1, generator=gen).to(ws)
            rows = self.cfg.rows
            w = torch.cat([torch.lerp(ws[:n, :rows], ws[n:, :rows], alpha), ws[:n, rows:]], dim=1)
            noisy = corrupt(w, self.cfg, self.model.w_std, gen)
        rows = self.cfg.rows
        return (self.model.regularize(noisy)[:, :rows] - w[:, :rows]).abs().mean()

    def predictor_losses(self, batch: DragBatch, self_feed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_pred, L_drag) of one pass over the sequence, every prediction through the regularizer.

        Teacher forcing (the paper) feeds the true w_0..w_{n-1} as queries. The true prefix already shows
        where the sequence heads, so later steps can learn to extrapolate it and ignore the points; with
        `self_feed` the queries are the model's own detached, regularized predictions, as at inference.
        """
        cfg, n, rows = self.cfg, self.cfg.n_steps, self.cfg.rows
        memory, pad = self.model.predictor.encode(batch.feat0, batch.points_xy[:, 0], batch.points_xy[:, n],
                                                  batch.point_mask)
        prefix = batch.w_seq[:, :n]
        if self_feed:
            with torch.no_grad():
                fed = [batch.w_seq[:, 0]]
                for _ in range(n - 1):
                    fed.append(self.model.regularize(self.model.predict(memory, pad, torch.stack(fed, 1))[:, -1]))
                prefix = torch.stack(fed, 1)
        pred = self.model.regularize(self.model.predict(memory, pad, prefix))         # [B, n, num_ws, w_dim]
        l_pred = (pred[:, :, :rows] - batch.w_seq[:, 1:, :rows]).abs().mean()
        feat = self.G.synthesis.features(pred.flatten(0, 1), stop=cfg.feature_block)[-1]   # [B*n, C, s, s]
        got = sample_patches(feat, batch.points_xy[:, 1:].flatten(0, 1), self.G.img_resolution, cfg.patch)
        diff = (got.view_as(batch.handle_patches) - batch.handle_patches).abs()          # [B, n, K, C, P, P]
        return l_pred, masked_mean(diff, batch.step_mask)

    def train_step(self, batch: DragBatch | None = None) -> dict[str, float]:
        """One optimisation step of the current stage; returns its losses.

        batch: stage 2's drags (default: this step's pseudo drags; tests pass a fixed one to overfit).
        """
        cfg, step = self.cfg, self.step_count
        lr_reg, lr_pred = lr_at(cfg, step)
        for group in self.opt_reg.param_groups:
            group["lr"] = lr_reg
        for group in self.opt_pred.param_groups:
            group["lr"] = lr_pred
        self.opt_reg.zero_grad(set_to_none=True)
        self.opt_pred.zero_grad(set_to_none=True)
        if self.stage == 1:
            l_reg = self.regularizer_loss(step, 4 * cfg.batch)
            l_reg.backward()
            self.opt_reg.step()
            stats = {"reg": l_reg.item()}
        else:
            self_feed = bool(torch.rand((), generator=step_generator(cfg.seed, step, 3)) < cfg.self_feed)
            l_pred, l_drag = self.predictor_losses(batch or make_batch(self.G, cfg, step), self_feed)
            # The regularizer keeps its own objective in stage 2 so that it stays a projector onto the
            # manifold while it adapts to the predictor's outputs (the paper trains both jointly).
            l_reg = self.regularizer_loss(step, cfg.batch)
            (cfg.pred_weight * l_pred + cfg.drag_weight * l_drag + l_reg).backward()
            self.opt_reg.step()
            self.opt_pred.step()
            stats = {"pred": l_pred.item(), "drag": l_drag.item(), "reg": l_reg.item()}
        self.step_count += 1
        return stats

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.cfg.to_json(), "spec": self.spec, "model": self.model.state_dict(),
                "opt_reg": self.opt_reg.state_dict(), "opt_pred": self.opt_pred.state_dict(),
                "step": self.step_count, "train_seconds": self.train_seconds,
                "torch_rng": torch.get_rng_state()}

    def save(self, path: str | Path) -> None:
        """Write the resumable state atomically (a crash mid-write leaves the previous checkpoint)."""
        save_atomic(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, G: Generator) -> "AutoTrainer":
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainer = cls(AutoConfig.from_json(state["config"]), G, state["spec"])
        trainer.model.load_state_dict(state["model"])
        trainer.opt_reg.load_state_dict(state["opt_reg"])
        trainer.opt_pred.load_state_dict(state["opt_pred"])
        trainer.step_count, trainer.train_seconds = state["step"], state["train_seconds"]
        torch.set_rng_state(state["torch_rng"])
        return trainer

    # -- looking at it -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, batch: DragBatch) -> tuple[dict[str, float], np.ndarray]:
        """Roll out each drag of `batch` (the user's view: one sample at a time, regularized) and track the
        handles from I_0 into the predicted image by optical flow.

        Returns ({"md_before", "md_after" (px, mean over pairs), "w_l1" (to w_n)}, sheet uint8 [H, W, 3]).
        """
        self.model.eval()
        n = self.cfg.n_steps
        before, after, w_l1, rows = [], [], [], []
        for b in range(len(batch.w_seq)):
            k = int(batch.point_mask[b].sum())
            h, t = batch.points_xy[b, 0, :k], batch.points_xy[b, n, :k]
            w_hat = rollout(self.model, self.G, batch.w_seq[b, :1], h, t)[-1]
            img = self.G.synthesis(w_hat, noise_mode="const")
            g0, g1 = to_gray(batch.images[b, :1]), to_gray(img)
            tracked, _ = flow_track(g0[0], [g1[0]], h.round().long().cpu().numpy(), fb_tolerance=1e9)
            before.append((h - t).norm(dim=-1).cpu())
            after.append((torch.from_numpy(tracked[0]) - t.cpu()).norm(dim=-1))
            w_l1.append((w_hat - batch.w_seq[b, n]).abs().mean().item())
            rows.append(sheet_row(batch.images[b, 0], img[0], batch.images[b, 1], h, t, tracked[0]))
        self.model.train()
        stats = {"md_before": torch.cat(before).mean().item(), "md_after": torch.cat(after).mean().item(),
                 "w_l1": float(np.mean(w_l1))}
        return stats, np.concatenate(rows[:8], axis=0)


def _u8(img: torch.Tensor, scale: int) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H*scale, W*scale, 3] uint8 (nearest upscaling, so pixels stay visible)."""
    u8 = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(cv2.resize(u8, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))


def sheet_row(src: torch.Tensor, pred: torch.Tensor, true: torch.Tensor, handles: torch.Tensor,
              targets: torch.Tensor, tracked: np.ndarray, scale: int = 2) -> np.ndarray:
    """One sample-sheet row: source with handles (red) -> targets (blue); prediction with the tracked
    handles (red) and the targets (blue); the true I_n. -> [H*scale, 3*W*scale, 3] uint8."""
    panels = [_u8(src, scale), _u8(pred, scale), _u8(true, scale)]
    pt = lambda xy: (int((xy[0] + 0.5) * scale), int((xy[1] + 0.5) * scale))  # noqa: E731
    for h, t, tr in zip(handles.tolist(), targets.tolist(), tracked.tolist()):
        cv2.arrowedLine(panels[0], pt(h), pt(t), (255, 255, 255), 1, tipLength=0.2)
        cv2.circle(panels[0], pt(h), 2, (255, 0, 0), -1)
        cv2.circle(panels[0], pt(t), 2, (0, 0, 255), -1)
        cv2.circle(panels[1], pt(t), 2, (0, 0, 255), -1)
        cv2.circle(panels[1], pt(tr), 2, (255, 0, 0), -1)
    return np.concatenate(panels, axis=1)


def train_auto(trainer: AutoTrainer, stop_at: Callable[[AutoTrainer, float], bool],
               snapshot: Callable[[AutoTrainer], None], log: Callable[[str], None], log_seconds: float = 60.0,
               snapshot_minutes: float = 5.0) -> None:
    """Step until `stop_at(trainer, seconds this run)` or the schedule ends; log means every `log_seconds`
    (steps/s, sequences/s, ETA) and call `snapshot` every `snapshot_minutes` and at the end."""
    start = last_log = last_snap = time.time()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    window_start, window_step = time.time(), trainer.step_count
    while trainer.step_count < trainer.total_steps and not stop_at(trainer, time.time() - start):
        t0, stage = time.time(), trainer.stage
        stats = trainer.train_step()
        trainer.train_seconds += time.time() - t0
        if not all(math.isfinite(v) for v in stats.values()):
            log(f"non-finite loss {stats} at step {trainer.step_count}; stopping (resume from the last snapshot "
                f"with a lower learning rate)")
            break
        for k, v in stats.items():
            sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
        now = time.time()
        # A line at the stage boundary too, so that no window mixes the two stages' rates and losses.
        if now - last_log >= log_seconds or trainer.step_count == trainer.cfg.stage1_steps:
            rate = (trainer.step_count - window_step) / (now - window_start)
            per = trainer.cfg.batch * (4 if stage == 1 else 1)
            eta = _eta(trainer, rate, stage)
            means = "  ".join(f"{k} {sums[k] / counts[k]:.4f}" for k in sums)
            lr_reg, lr_pred = lr_at(trainer.cfg, trainer.step_count - 1)  # of the step just taken
            log(f"stage {stage} step {trainer.step_count}/{trainer.total_steps}  {means}  "
                f"{rate:.2f} steps/s ({rate * per:.1f} {'latents' if stage == 1 else 'sequences'}/s)  "
                f"lr {lr_reg:.1e}/{lr_pred:.1e}  train {trainer.train_seconds / 3600:.2f} h  ETA {eta}")
            sums, counts = {}, {}
            last_log, window_start, window_step = now, now, trainer.step_count
        if now - last_snap >= snapshot_minutes * 60:
            snapshot(trainer)
            last_snap = time.time()
    snapshot(trainer)


def _eta(trainer: AutoTrainer, rate: float, stage: int) -> str:
    """Time left at the current rate; in stage 1 only to its end (a stage-2 step costs ~30x more)."""
    if rate <= 0:
        return "?"
    end = trainer.cfg.stage1_steps if stage == 1 else trainer.total_steps
    seconds = (end - trainer.step_count) / rate
    left = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    return f"{left} (to the end of stage 1)" if stage == 1 else left
