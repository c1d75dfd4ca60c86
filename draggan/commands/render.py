"""`python -m draggan render`: one image from a generator and a seed, saved as PNG."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

from stylegan2 import image_to_uint8, seed_to_z
from stylegan2.catalog import default_model
from stylegan2.checkpoints import CheckpointError, load_generator, resolve_device

from ._args import OutputPathError, check_output, check_suffix, finite, image_suffixes, number, seed

HELP = "Render one image from a generator and a seed, as PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="catalog name, REPO_ID:FILE[@REVISION] or a .pkl/.safetensors path "
                             "(default: the catalog's default)")
    parser.add_argument("--seed", type=seed, default=0, help="latent seed, 0 to 2^32-1 (as the official app)")
    parser.add_argument("--psi", type=finite, default=0.7, help="truncation psi; 1 = no truncation")
    parser.add_argument("--cutoff", type=number(0, whole=True), default=None, help="truncate only the first K W+ rows")
    parser.add_argument("--noise", choices=("const", "random", "none"), default="const", help="noise mode")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--out", type=Path, required=True, help="output .png (its folder is created)")


def _prepare_out(out: Path) -> None:
    """The output's suffix checked and its folder made, before the model loads."""
    check_suffix(out, "--out", image_suffixes(), "image")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"--out: cannot create the folder {out.parent} ({e.strerror or e})") from None
    check_output(out, "--out")


def run(args: argparse.Namespace) -> int:
    _prepare_out(args.out)
    model = args.model or default_model()
    try:
        device = resolve_device(args.device)
        G = load_generator(model, device)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if G.c_dim > 0:
        print(f"error: {model} is a conditional generator (needs a class label); render supports "
              "unconditional ones only", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)  # makes --noise random repeatable per seed
    z = seed_to_z(args.seed, G.z_dim).to(device)  # [1, z_dim]
    with torch.no_grad():
        img = G(z, truncation_psi=args.psi, truncation_cutoff=args.cutoff, noise_mode=args.noise)  # [1, 3, H, W]
    Image.fromarray(image_to_uint8(img)).save(args.out)
    print(f"{args.out} ({G.img_resolution}x{G.img_resolution}, {model}, seed {args.seed})")
    return 0
