"""`python -m draggan drag`: one drag from the command line, with a trace and a video."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ._args import OutputPathError, check_output, finite, image_suffixes, positive, seed

HELP = "drag handles to targets on a generated image (or a PTI embedding) and save the result"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="catalog name, Hub 'repo_id:filename', or a local .pkl/.safetensors "
                                        "(default: the catalog's offline default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")


def add_drag_arguments(parser: argparse.ArgumentParser) -> None:
    """--method (the registry's methods) and one flag per drag setting (draggan.config.SETTINGS)."""
    from ._settings import add_method_argument, add_setting_arguments

    add_method_argument(parser)
    add_setting_arguments(parser)


def drag_config(args: argparse.Namespace, model: str | None, **fixed):
    """DragConfig for `model` with the setting flags that were given (the rest: the model's, else DragConfig's)."""
    from draggan.config import DragConfig

    from ._settings import setting_values
    return DragConfig.for_model(model, **{**setting_values(args), **fixed})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--seed", type=seed, default=0, help="seed of the generated image, 0 to 2^32-1 (default 0)")
    start.add_argument("--embedding", help="a PTI embedding from `python -m draggan invert` (real photo)")
    parser.add_argument("--psi", type=finite, default=0.7, help="truncation psi (default 0.7)")
    parser.add_argument("--latent", choices=["w", "w+"], default="w+", help="latent space optimized (default w+)")
    parser.add_argument("--handles", required=True, help='handle points as "x,y;x,y" or JSON [[x, y], ...] (image pixels)')
    parser.add_argument("--targets", required=True, help='target points, one per handle, in the same form')
    add_drag_arguments(parser)
    parser.add_argument("--mask", help="PNG of the editable area (white = may change); the rest is held fixed")
    parser.add_argument("--out", required=True, help="where to save the final image (PNG)")
    parser.add_argument("--video", help="every frame of the drag with the point overlay (.mp4, .webm or .gif)")
    parser.add_argument("--video-plain", help="every frame of the drag without the overlay (.mp4, .webm or .gif)")
    parser.add_argument("--fps", type=positive, default=15.0, help="video frames per second (default 15)")
    parser.add_argument("--trace", help="write every step's handles, distances, loss and ms as JSON")


def load_mask(path: str, resolution: int) -> np.ndarray:
    from pti import load_image
    img, _ = load_image(path, resolution)  # bounded decode, any image format; white = editable
    return img.max(axis=2) > 127


def _session(args: argparse.Namespace, device):
    from draggan.editor import DragSession
    from draggan.predictors import predictor_for
    from stylegan2.catalog import default_model
    from stylegan2.checkpoints import load_generator

    if args.embedding:
        from pti import embedding_info, load_embedding
        model = embedding_info(args.embedding).model_spec
        G, w0 = load_embedding(args.embedding, device)
        return model, DragSession(G, w0, latent_space=args.latent)
    model = args.model or default_model()
    G = load_generator(model, device)
    return model, DragSession.from_seed(G, args.seed, psi=args.psi, latent_space=args.latent,
                                        auto=predictor_for(model, G))


def check_outputs(args: argparse.Namespace) -> None:
    """Every file the drag will write, checked before the model loads: a folder that exists and can be
    written, a suffix that can be written (and PyAV for .mp4/.webm)."""
    import importlib.util

    from draggan.video import SUFFIXES

    check_output(args.out, "--out", image_suffixes(), "image")
    check_output(args.trace, "--trace")
    for flag, path in (("--video", args.video), ("--video-plain", args.video_plain)):
        check_output(path, flag, SUFFIXES, "video")
        if path and Path(path).suffix.lower() != ".gif" and importlib.util.find_spec("av") is None:
            raise OutputPathError(f"{flag}: writing .mp4 or .webm needs PyAV: pip install av (or name it .gif)")


def check_point_counts(handles: list, targets: list) -> None:
    """The points' count in the command line's words (the engine's own message speaks of clicks)."""
    from draggan.config import MAX_POINTS, DragInputError

    if not handles:
        raise DragInputError('give at least one handle: --handles "x,y" (image pixels) and a target for it in --targets')
    if len(handles) > MAX_POINTS or len(targets) > MAX_POINTS:
        raise DragInputError(f"at most {MAX_POINTS} handle/target pairs per drag, got {max(len(handles), len(targets))}")
    if len(targets) != len(handles):
        raise DragInputError(f"give one --targets point per --handles point: {len(handles)} handles, "
                             f"{len(targets)} targets")


def step_line(frame, learned: bool) -> str:
    """One step on stderr: the loss of the optimizer's steps; a learned method's predicted steps have none."""
    loss = "predicted  " if learned and not np.isfinite(frame.loss) else f"loss {frame.loss:.4f}"
    return f"step {frame.step:4d}  mean distance {frame.mean_distance:7.2f} px  {loss}  {frame.ms:7.1f} ms"


def run(args: argparse.Namespace) -> int:
    from draggan.config import parse_points
    from draggan.methods import method_spec
    from stylegan2.checkpoints import resolve_device

    handles, targets = parse_points(args.handles, "--handles"), parse_points(args.targets, "--targets")
    check_point_counts(handles, targets)
    check_outputs(args)
    device = resolve_device(args.device)
    model, session = _session(args, device)
    if args.mask:
        session.set_mask(load_mask(args.mask, session.resolution))
    cfg = drag_config(args, model)
    learned = method_spec(args.method).learned
    steps = []
    for frame in session.drag(handles, targets, cfg, method=args.method):
        if frame.done:
            break
        steps.append({"step": frame.step, "handles": frame.handles_xy, "distances": frame.distances,
                      "loss": frame.loss if np.isfinite(frame.loss) else None, "ms": round(frame.ms, 3)})
        print(step_line(frame, learned), file=sys.stderr)
    Image.fromarray(frame.image).save(args.out)
    print(f"{frame.reason} after {frame.step} steps; mean distance {frame.mean_distance:.2f} px; saved {args.out}")
    if args.trace:
        settings = dataclasses.asdict(cfg) | {"model": args.model, "seed": args.seed, "embedding": args.embedding,
                                              "psi": args.psi, "latent": args.latent, "device": str(device),
                                              "resolution": session.resolution, "method": args.method}
        Path(args.trace).write_text(json.dumps({"steps": steps, "settings": settings,
                                                "result": {"reason": frame.reason, "steps": frame.step,
                                                           "handles": frame.handles_xy,
                                                           "distances": frame.distances}}, indent=1))
    for path, overlay in ((args.video, True), (args.video_plain, False)):
        if path:
            session.export_video(path, overlay=overlay, fps=args.fps)
    return 0
