"""The experiment protocols, registered once: `python -m draggan experiment NAME` (and the app) read this registry.

A protocol has a name, a line of help, its default number of pairs, whether it needs a landmark
detector, `options(parser)` adding its own flags, and `run(bench, methods, common, args, count, bar)`
returning an `ExperimentResult`: `common` holds what every protocol shares (max_steps, feature_block,
psi, seed, and `drag`, the other drag settings given), `args` the parsed flags, `bar` a progress bar
or None. A new protocol: a module with its run function, and one `register_protocol` call.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

Options = Callable[[argparse.ArgumentParser], None]
Run = Callable[..., Any]  # (bench, methods, common, args, count, bar) -> report.ExperimentResult


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    help: str
    run: Run
    default_pairs: int = 100
    needs_detector: bool = True
    options: Options | None = None
    in_app: bool = False          # the app's Experiment tab offers it
    methods: tuple[str, ...] | None = None  # the methods it always runs (None: those the user names)
    finish: Callable[[Any, argparse.Namespace], None] | None = None  # after the run (e.g. decay's plot)


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a protocol under a new name (replacing one is refused)."""
    if not protocol.name or protocol.name in PROTOCOLS:
        raise ValueError(f"cannot register an experiment protocol named {protocol.name!r} (empty or taken)")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def unregister_protocol(name: str) -> None:
    PROTOCOLS.pop(name, None)


def _landmark_settings(common: dict, args: argparse.Namespace, points: int | None = None, **more: Any):
    from . import decay, landmarks
    lm = dict(common, points=points or args.points, success_px=args.success_px, fid=args.fid,
              mask_margin=args.mask_margin)
    return decay.DecaySettings(**lm, **more) if more else landmarks.LandmarkSettings(**lm)


def _pairs(bench, settings, count: int):
    from .pairs import landmark_pairs
    return landmark_pairs(bench.G, bench.detector, count, settings.points, settings.seed, settings.psi)


def _bar(total: int, quiet: bool):
    from .report import ProgressBar
    return None if quiet else ProgressBar(total)


def _run_landmarks(bench, methods, common, args, count, quiet):
    from .landmarks import run_landmarks
    settings = _landmark_settings(common, args)
    return run_landmarks(bench, methods, settings, _pairs(bench, settings, count), _bar(count * len(methods), quiet),
                         args.ray)


def _run_decay(bench, methods, common, args, count, quiet):
    from .decay import run_decay
    settings = _landmark_settings(common, args, frame_every=args.frame_every)
    return run_decay(bench, methods, settings, _pairs(bench, settings, count), _bar(count * len(methods), quiet),
                     args.ray)


def _run_nearest(bench, methods, common, args, count, quiet):
    from .nearest import run_nearest
    settings = _landmark_settings(common, args, points=1)
    r3 = [float(v) for v in args.r3_values.split(",") if v.strip()]
    return run_nearest(bench, settings, _pairs(bench, settings, count), r3, _bar(count * (len(r3) + 1), quiet),
                       args.ray)


def _run_reconstruction(bench, methods, common, args, count, quiet):
    from .reconstruction import ReconstructionSettings, run_reconstruction
    settings = ReconstructionSettings(**common, vectors=args.vectors, strength=args.strength, lpips=not args.no_lpips)
    return run_reconstruction(bench, methods, settings, count, _bar(count * len(methods), quiet), args.ray)


def _reconstruction_options(parser: argparse.ArgumentParser) -> None:
    from draggan.commands._args import count, number
    parser.add_argument("--vectors", type=count, default=32, help="reconstruction: flow vectors per pair")
    parser.add_argument("--strength", type=number(0), default=0.5,
                        help="reconstruction: how far w2 moves towards another seed's latent (default 0.5)")
    parser.add_argument("--no-lpips", action="store_true", help="reconstruction: skip LPIPS")


def _decay_options(parser: argparse.ArgumentParser) -> None:
    from draggan.commands._args import count
    parser.add_argument("--frame-every", type=count, default=1, help="decay: measure every n-th step (default 1)")
    parser.add_argument("--plot", default=None, help="decay: PNG of the curves (default: beside --json)")


def _plot_decay(result, args: argparse.Namespace) -> None:
    from pathlib import Path

    from .decay import plot_decay
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    note = plot_decay(result, plot) if plot else "no decay plot: give --plot PATH (or --json PATH)"
    result.notes.append(note or f"decay plot: {plot}")


def _nearest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--r3-values", default="10,20,30,40,60", help="nearest: the R3 grid (512-px units)")


for _protocol in (
        Protocol("landmarks", "face-landmark manipulation: MD before/after, success, steps, time (FID)",
                 _run_landmarks, in_app=True),
        Protocol("reconstruction", "paired image reconstruction from optical flow: MSE, LPIPS", _run_reconstruction,
                 needs_detector=False, options=_reconstruction_options),
        Protocol("decay", "mean distance decay MD(t)/MD(0) against wall time", _run_decay, default_pairs=1,
                 options=_decay_options, finish=_plot_decay),
        Protocol("nearest", "the Nearest radius R3 ablation (1 point)", _run_nearest, options=_nearest_options,
                 methods=("draggan",))):
    register_protocol(_protocol)
