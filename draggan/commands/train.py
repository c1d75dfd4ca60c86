"""`python -m draggan train`: train a small StyleGAN2 on procedural toy faces (see docs/training.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a small StyleGAN2 on procedural toy faces (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run directory (checkpoint, log.txt, sample grids)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--kimg", type=float, default=5000, help="stop after this many thousand real images")
    parser.add_argument("--resolution", type=int, default=64, help="image side (new runs only)")
    parser.add_argument("--batch", type=int, default=16, help="images per step, a multiple of 4 (new runs only)")
    parser.add_argument("--channel-base", type=int, default=1024,
                        help="G and D channels at resolution r: min(base // r, --channel-max) (new runs only)")
    parser.add_argument("--channel-max", type=int, default=128, help="(new runs only)")
    parser.add_argument("--z-dim", type=int, default=128, help="size of z and w (new runs only)")
    parser.add_argument("--gamma", type=float, default=0.1, help="R1 weight (new runs only)")
    parser.add_argument("--export", default=None,
                        help="where to write the EMA generator at each snapshot (default models/toyfaces-RES.safetensors)")
    parser.add_argument("--snapshot-minutes", type=float, default=5.0, help="checkpoint, grid and export interval")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    import torch

    from draggan.toyfaces import face_batch
    from stylegan2.training import CHECKPOINT_NAME, TrainConfig, train

    torch.set_num_threads(args.threads)
    ckpt = Path(args.out) / CHECKPOINT_NAME
    if args.resume and not ckpt.exists():
        print(f"error: no {ckpt} to resume; drop --resume to start a new run")
        return 2
    if not args.resume and ckpt.exists():
        print(f"error: {ckpt} exists; pass --resume to continue that run, or choose another --out")
        return 2
    if args.batch % 4:
        print("error: --batch must be a multiple of 4 (the discriminator's minibatch-std group)")
        return 2
    cfg = TrainConfig(resolution=args.resolution, z_dim=args.z_dim, batch=args.batch, r1_gamma=args.gamma,
                      g_channel_base=args.channel_base, g_channel_max=args.channel_max,
                      d_channel_base=args.channel_base, d_channel_max=args.channel_max)
    export = args.export or f"models/toyfaces-{args.resolution}.safetensors"
    train(cfg, args.out, total_kimg=args.kimg, reals=face_batch, resume=args.resume, export_path=export,
          report=landmark_report, snapshot_minutes=args.snapshot_minutes, device=args.device)
    return 0


def landmark_report(imgs) -> str:
    """How often all five colour-coded landmarks are found in the samples (psi 1 and psi 0.7 halves), and how
    much the psi-1 landmarks move from sample to sample, against the training faces (a collapse shows here first)."""
    import numpy as np

    from draggan.toyfaces import detect_landmarks, render_face

    half = len(imgs) // 2
    found = np.array([detect_landmarks(img) for img in imgs])  # [n, 5, 2]
    complete = ~np.isnan(found).any(axis=(1, 2))
    real = np.array([render_face(seed, imgs.shape[1])[1] for seed in range(half)])  # [half, 5, 2]
    spread = np.nanstd(found[:half][complete[:half]], axis=0).mean() if complete[:half].sum() > 1 else float("nan")
    return (f"all landmarks found in {complete[:half].mean():.0%} of samples at psi 1, {complete[half:].mean():.0%} "
            f"at psi 0.7; landmark spread {spread:.2f} px (training faces {real.std(axis=0).mean():.2f} px)")
