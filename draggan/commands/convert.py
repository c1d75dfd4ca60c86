"""`python -m draggan convert`: an NVIDIA StyleGAN2 .pkl to this app's .safetensors, without pickle.load."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stylegan2.checkpoints import CheckpointError, locate, save_generator
from stylegan2.safe_pickle import generator_from_pickle

HELP = "Convert an NVIDIA StyleGAN2 .pkl (local path, REPO_ID:FILE or catalog name) to .safetensors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="NVIDIA .pkl: local path, REPO_ID:FILE[@REVISION] or catalog name")
    parser.add_argument("output", type=Path, help="output .safetensors")


def run(args: argparse.Namespace) -> int:
    if args.output.suffix != ".safetensors":
        print("error: the output must end in .safetensors", file=sys.stderr)
        return 2
    try:
        path = locate(args.input)
        if path.suffix.lower() != ".pkl":
            raise CheckpointError(f"{path.name} is not a .pkl; only NVIDIA pickles need converting")
        G = generator_from_pickle(path)
        save_generator(G, args.output)
    except (CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output} ({G.img_resolution}x{G.img_resolution}, {sum(p.numel() for p in G.parameters())} weights)")
    return 0
