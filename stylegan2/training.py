"""A compact StyleGAN2 training loop (after NVIDIA's StyleGAN2-ADA `training_loop.py` and `loss.py`).

Non-saturating logistic loss, lazy R1 on the discriminator, an EMA copy of the generator
(the one we export), optional style mixing, no path-length regularization and no
augmentation (the toy-face data is unlimited). Each iteration does one generator step
and one discriminator step on `batch` images.

The loop knows nothing of the data: the caller passes `reals(first, count, resolution)`, which
returns items first .. first+count-1 of an indexed stream (for our toy faces,
`draggan.toyfaces.face_batch`: the faces of those seeds). A run reads items data_seed + nimg
onwards, so the data needs no state of its own to resume.

Run state lives in one directory: `checkpoint.pt` (everything needed to resume exactly:
networks, optimizers, images seen, RNG), `log.txt`, `reals.png` and `fakes-{kimg}.png`
sample grids. The EMA generator is also exported (`checkpoints.save_generator`) at every snapshot.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoints import save_generator
from .discriminator import Discriminator, DiscriminatorConfig
from .networks import Generator, GeneratorConfig, seed_to_z

CHECKPOINT_NAME = "checkpoint.pt"


@dataclasses.dataclass
class TrainConfig:
    """Networks and hyperparameters of one run (stored in its checkpoint; fixed for the run's life)."""
    resolution: int = 64          # image side
    z_dim: int = 128              # latent sizes (z and w)
    g_channel_base: int = 1024    # generator channels at resolution r: min(base // r, max)
    g_channel_max: int = 128
    d_channel_base: int = 1024    # discriminator channels, same rule
    d_channel_max: int = 128
    mapping_layers: int = 4       # depth of the mapping MLP
    batch: int = 16               # images per G step and per D step
    g_lr: float = 0.0025          # Adam learning rates, betas (0, 0.99) as NVIDIA
    d_lr: float = 0.0025
    r1_gamma: float = 0.1         # R1 weight; NVIDIA's heuristic 0.0002 * res^2 / batch gives 0.05 at 64 px, batch 16
    r1_interval: int = 16         # lazy regularization: R1 every this many D steps, scaled up by it
    style_mixing: float = 0.5     # probability that a batch mixes two latents at a random layer
    ema_kimg: float = 10.0        # half-life of the EMA generator, in thousands of images
    ema_rampup: float = 0.05      # half-life at most this fraction of the images seen so far
    w_avg_beta: float = 0.998     # EMA of the mapping output (truncation centre), per step
    data_seed: int = 1_000_000    # the run's real image i is item data_seed + i of the stream; items 0.. stay unseen
    seed: int = 0                 # initial weights and latents

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(z_dim=self.z_dim, w_dim=self.z_dim, img_resolution=self.resolution,
                               channel_base=self.g_channel_base, channel_max=self.g_channel_max,
                               mapping_layers=self.mapping_layers)

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(img_resolution=self.resolution, channel_base=self.d_channel_base,
                                   channel_max=self.d_channel_max)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return cls(**d)


# (first, count, resolution) -> uint8 [count, resolution, resolution, 3]: items first .. first+count-1
RealImages = Callable[[int, int, int], np.ndarray]
# the snapshot's images, uint8 [64, res, res, 3] (seeds 0-31 at psi 1, then at psi 0.7) -> a note for the log
SampleReport = Callable[[np.ndarray], str]


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """uint8 [n, h, w, c] -> float [n, c, h, w] in [-1, 1]."""
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1


class Trainer:
    """Networks, optimizers and counters of one run; `step()` trains on one batch."""

    def __init__(self, cfg: TrainConfig, device: str | torch.device = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        torch.manual_seed(cfg.seed)
        self.G = Generator(cfg.generator_config()).to(self.device).train()
        self.D = Discriminator(cfg.discriminator_config()).to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=(0.0, 0.99), eps=1e-8)
        self.nimg = 0   # real images shown to D so far
        self.steps = 0  # iterations (one G step + one D step each)
        self.train_seconds = 0.0

    # -- one iteration -------------------------------------------------------------------------

    def _ws(self, batch: int) -> torch.Tensor:
        """Latents -> W+ [batch, num_ws, w_dim], with style mixing at a random layer for some batches."""
        G = self.G
        z = torch.randn([batch, G.z_dim], device=self.device)
        ws = G.mapping(z)
        if self.cfg.style_mixing > 0 and torch.rand([]).item() < self.cfg.style_mixing:
            cutoff = int(torch.randint(1, G.num_ws, []).item())
            ws2 = G.mapping(torch.randn_like(z))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def step(self, reals: torch.Tensor) -> dict[str, float]:
        """One G step, one D step, EMA update. reals: [batch, 3, res, res] in [-1, 1]."""
        cfg = self.cfg
        stats = self.g_step()
        with torch.no_grad():
            ws = self._ws(cfg.batch)
            fakes = self.G.synthesis(ws, noise_mode="random")
            self.G.mapping.w_avg.copy_(ws[:, 0].mean(dim=0).lerp(self.G.mapping.w_avg, cfg.w_avg_beta))
        stats.update(self.d_step(reals.to(self.device), fakes, r1=cfg.r1_gamma > 0 and self.steps % cfg.r1_interval == 0))
        self.nimg += cfg.batch
        self.steps += 1
        self.update_ema()
        return stats

    def g_step(self) -> dict[str, float]:
        """Make D call a batch of fakes real (non-saturating logistic loss); D's weights stay as they are."""
        self.D.requires_grad_(False)
        fakes = self.G.synthesis(self._ws(self.cfg.batch), noise_mode="random")
        loss_G = F.softplus(-self.D(fakes)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        return {"loss_G": loss_G.item()}

    def d_step(self, reals: torch.Tensor, fakes: torch.Tensor, r1: bool = False) -> dict[str, float]:
        """Tell reals from fakes (both [batch, 3, res, res]); with `r1`, also penalize D's gradient on the reals.

        Lazy R1: applied every r1_interval steps and scaled up by it, so its average weight is r1_gamma / 2.
        """
        cfg = self.cfg
        reals = reals.detach().requires_grad_(r1)
        logits_fake, logits_real = self.D(fakes.detach()), self.D(reals)  # apart: minibatch std must not mix them
        loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        stats = {"loss_D": loss_D.item(), "D_real": logits_real.mean().item(), "D_fake": logits_fake.mean().item()}
        if r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), reals, create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3]).mean()
            loss_D = loss_D + penalty * (cfg.r1_gamma / 2 * cfg.r1_interval)
            stats["r1"] = penalty.item()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp(G, G_ema, beta), half-life ema_kimg (ramped up early on); buffers copied."""
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "G": self.G.state_dict(), "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "nimg": self.nimg, "steps": self.steps, "train_seconds": self.train_seconds,
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, path: str | Path) -> None:
        """Write the resumable state atomically (a crash mid-write leaves the previous checkpoint)."""
        save_atomic(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Trainer":
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainer = cls(TrainConfig.from_dict(state["config"]), device)
        for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
            getattr(trainer, name).load_state_dict(state[name])
        trainer.nimg, trainer.steps, trainer.train_seconds = state["nimg"], state["steps"], state["train_seconds"]
        torch.set_rng_state(state["torch_rng"])
        return trainer

    # -- looking at it -------------------------------------------------------------------------

    @torch.no_grad()
    def sample_grid(self, seeds: range = range(32), columns: int = 8, psis: tuple[float, ...] = (1.0, 0.7)
                    ) -> tuple[np.ndarray, np.ndarray]:
        """G_ema's images for fixed seeds at each psi, stacked psi after psi.

        Returns (grid uint8 [rows * res, columns * res, 3], images uint8 [len(psis) * len(seeds), res, res, 3]).
        """
        z = torch.cat([seed_to_z(s, self.G_ema.z_dim) for s in seeds]).to(self.device)
        imgs = torch.cat([self.G_ema(z, truncation_psi=psi, noise_mode="const") for psi in psis])
        imgs = (imgs * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return tile(imgs, columns), imgs


def save_atomic(state: dict, path: str | Path) -> None:
    """torch.save to `path` atomically: a crash mid-write leaves the previous checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def run_logger(path: str | Path) -> tuple[Callable[[str], None], Callable[[], None]]:
    """(log, close): log(msg) prints a timestamped line and appends it to the file at `path`."""
    log_file = open(path, "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()
    return log, log_file.close


def tile(imgs: np.ndarray, columns: int) -> np.ndarray:
    """[n, h, w, 3] -> one image [rows * h, columns * w, 3] (n a multiple of columns)."""
    n, h, w, c = imgs.shape
    assert n % columns == 0, (n, columns)
    return imgs.reshape(n // columns, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(n // columns * h, columns * w, c)


def train(cfg: TrainConfig, out_dir: str | Path, total_kimg: float, reals: RealImages, resume: bool = False,
          export_path: str | Path | None = None, report: SampleReport | None = None, snapshot_minutes: float = 5.0,
          log_seconds: float = 60.0, device: str = "cpu") -> Trainer:
    """Train on `reals` until `total_kimg` thousand images have been seen, snapshotting every `snapshot_minutes`.

    With `resume`, continues from `out_dir/checkpoint.pt` (its config wins over `cfg`).
    A snapshot writes the checkpoint, a sample grid and (if given) the exported EMA generator.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    if resume:
        trainer = Trainer.load(ckpt, device)
        cfg = trainer.cfg
    else:
        trainer = Trainer(cfg, device)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        Image.fromarray(tile(reals(cfg.data_seed, 32, cfg.resolution), 8)).save(out / "reals.png")
    log, close_log = run_logger(out / "log.txt")

    def snapshot() -> None:
        trainer.save(ckpt)
        grid, imgs = trainer.sample_grid()
        grid_name = f"fakes-{trainer.nimg // 1000:06d}.png"
        Image.fromarray(grid).save(out / grid_name)
        if export_path is not None:
            save_generator(trainer.G_ema, export_path)
        log(f"snapshot kimg {trainer.nimg / 1000:.2f} ({grid_name})" + (f": {report(imgs)}" if report is not None else ""))

    n_params = sum(p.numel() for p in trainer.G.parameters()), sum(p.numel() for p in trainer.D.parameters())
    log(f"{'resume' if resume else 'start'} at kimg {trainer.nimg / 1000:.1f}; G {n_params[0]:,} params, "
        f"D {n_params[1]:,} params; threads {torch.get_num_threads()}; config {json.dumps(cfg.to_dict())}")
    if not resume:
        snapshot()
    last_snap = last_log = time.time()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    window_start, window_nimg = time.time(), trainer.nimg
    while trainer.nimg < total_kimg * 1000:
        t0 = time.time()
        stats = trainer.step(to_tensor(reals(cfg.data_seed + trainer.nimg, cfg.batch, cfg.resolution)))
        trainer.train_seconds += time.time() - t0
        if not all(math.isfinite(v) for v in stats.values()):
            log(f"non-finite loss {stats}; stopping (resume from the last snapshot with a lower learning rate)")
            break
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        now = time.time()
        if now - last_log >= log_seconds:
            rate = (trainer.nimg - window_nimg) / (now - window_start)
            means = "  ".join(f"{k} {sums[k] / counts[k]:.3f}" for k in sums)
            log(f"kimg {trainer.nimg / 1000:.2f}  step {trainer.steps}  {means}  {rate:.1f} img/s  "
                f"train {trainer.train_seconds / 3600:.2f} h")
            sums, counts = {}, {}
            last_log, window_start, window_nimg = now, now, trainer.nimg
        if now - last_snap >= snapshot_minutes * 60:
            snapshot()
            last_snap = time.time()
    snapshot()
    log(f"done at kimg {trainer.nimg / 1000:.1f}")
    close_log()
    return trainer
