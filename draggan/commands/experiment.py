"""`python -m draggan experiment PROTOCOL`: the papers' experiments on any model, here or on Ray.

    python -m draggan experiment landmarks --model toyfaces-64 --pairs 100 --points 5 \\
        --methods draggan,straightforward --json out.json --csv out.csv

A progress bar with ETA on stderr, the summary table on stdout; --json / --csv write the results.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "run an experiment (landmarks, reconstruction, decay, nearest) over many pairs and summarize it"
PROTOCOLS = ("landmarks", "reconstruction", "decay", "nearest")
DEFAULT_PAIRS = {"landmarks": 100, "reconstruction": 100, "decay": 1, "nearest": 100}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from draggan.commands._args import count, finite, number, positive, seed
    from draggan.commands._settings import add_setting_arguments, method_help
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("--model", default="toyfaces-64", help="catalog name, Hub 'repo_id:filename' or a file")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    parser.add_argument("--pairs", type=count, default=None,
                        help="pairs (default 100; decay 1)")
    parser.add_argument("--methods", default="draggan",
                        help="comma-separated drag methods, e.g. draggan,straightforward,auto; "
                             "'+nearest' after a name turns Nearest on (default draggan). " + method_help())
    parser.add_argument("--points", type=int, choices=[1, 5, 68], default=5,
                        help="landmarks per pair: 1 (nose tip), 5 or 68 (dlib); nearest always uses 1")
    parser.add_argument("--detector", choices=["toy", "dlib"], default="toy",
                        help="landmark detector: toy (exact, toy-faces model) or dlib (real faces)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the pair sampler (default 0)")
    parser.add_argument("--psi", type=finite, default=0.7, help="truncation of the seeds' latents (default 0.7)")
    parser.add_argument("--success-px", type=positive, default=2.0,
                        help="landmarks: an edit succeeds within this mean distance, pixels (default 2)")
    parser.add_argument("--mask-margin", type=number(0), default=None,
                        help="landmarks: masked run, only the box around each pair's landmarks (this many px wider) "
                             "may change")
    parser.add_argument("--fid", action="store_true", help="landmarks: FID of the edited to the initial images")
    parser.add_argument("--r3-values", default="10,20,30,40,60", help="nearest: the R3 grid (512-px units)")
    parser.add_argument("--vectors", type=count, default=32, help="reconstruction: flow vectors per pair")
    parser.add_argument("--strength", type=number(0), default=0.5,
                        help="reconstruction: how far w2 moves towards another seed's latent (default 0.5)")
    parser.add_argument("--no-lpips", action="store_true", help="reconstruction: skip LPIPS")
    parser.add_argument("--frame-every", type=count, default=1, help="decay: measure every n-th step (default 1)")
    parser.add_argument("--plot", default=None, help="decay: PNG of the curves (default: beside --json)")
    parser.add_argument("--predictor", default=None, help="Auto DragGAN model file for the 'auto' methods")
    parser.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                        help="run the pairs as Ray actors: 'local' starts Ray here, 'auto' joins a running "
                             "cluster, or a cluster address")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--csv", default=None, metavar="PATH", help="write the per-method summary as CSV")
    # frame_every: --frame-every is decay's own (measure every n-th step); frames are not shown here
    add_setting_arguments(parser, exclude=("frame_every", "frame_interval_s", "frame_share"),
                          defaults={"max_steps": 300})


def run_experiment(args: argparse.Namespace, quiet: bool = False):
    """Load the model, build the pairs and run the protocol `args` names; returns the ExperimentResult."""
    from draggan.experiments import decay, landmarks, nearest, reconstruction
    from draggan.experiments.detectors import ExperimentSetupError
    from draggan.experiments.pairs import landmark_pairs
    from draggan.experiments.report import ProgressBar
    from draggan.experiments.workbench import BenchSpec, check_methods, load_bench

    from ._settings import setting_values

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    count = args.pairs or DEFAULT_PAIRS[args.protocol]
    if count < 1 or not methods:
        raise ExperimentSetupError("give at least one pair (--pairs) and one method (--methods)")
    needs_detector = args.protocol != "reconstruction"
    bench = load_bench(BenchSpec(args.model, args.device, args.detector if needs_detector else None, args.predictor))
    check_methods(["draggan"] if args.protocol == "nearest" else methods, bench)
    drag = setting_values(args)
    common = dict(max_steps=drag.pop("max_steps"), feature_block=drag.pop("feature_block", None), psi=args.psi,
                  seed=args.seed, drag=drag)
    if args.protocol == "reconstruction":
        settings = reconstruction.ReconstructionSettings(**common, vectors=args.vectors, strength=args.strength,
                                                         lpips=not args.no_lpips)
        bar = None if quiet else ProgressBar(count * len(methods))
        return reconstruction.run_reconstruction(bench, methods, settings, count, bar, args.ray)
    points = 1 if args.protocol == "nearest" else args.points
    lm = dict(common, points=points, success_px=args.success_px, fid=args.fid, mask_margin=args.mask_margin)
    if args.protocol == "decay":
        settings = decay.DecaySettings(**lm, frame_every=args.frame_every)
    else:
        settings = landmarks.LandmarkSettings(**lm)
    pairs = landmark_pairs(bench.G, bench.detector, count, points, settings.seed, settings.psi)
    if args.protocol == "nearest":
        r3 = [float(v) for v in args.r3_values.split(",") if v.strip()]
        bar = None if quiet else ProgressBar(count * (len(r3) + 1))
        return nearest.run_nearest(bench, settings, pairs, r3, bar, args.ray)
    bar = None if quiet else ProgressBar(count * len(methods))
    run = decay.run_decay if args.protocol == "decay" else landmarks.run_landmarks
    return run(bench, methods, settings, pairs, bar, args.ray)


def run(args: argparse.Namespace) -> int:
    from draggan.experiments.decay import plot_decay

    result = run_experiment(args)
    if args.protocol == "decay":
        plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
        note = plot_decay(result, plot) if plot else "no decay plot: give --plot PATH (or --json PATH)"
        result.notes.append(note or f"decay plot: {plot}")
    if args.json:
        result.write_json(args.json)
    if args.csv:
        result.write_csv(args.csv)
    print(result.table())
    sys.stdout.flush()
    return 0
