"""`python -m draggan quality`: landmark-dragging benchmark on the toy-faces model (exact oracle)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

HELP = "drag the landmarks of one generated face to another's and measure where they land (toy-faces model)"
METHODS = ("engine", "engine+nearest", "straightforward")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="toyfaces-64", help="a toy-faces model (default toyfaces-64)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    parser.add_argument("--pairs", type=int, default=100, help="random face pairs (default 100)")
    parser.add_argument("--points", type=int, choices=[1, 5], default=5, help="landmarks dragged per pair")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sampler (default 0)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--psi", type=float, default=0.7)
    # None = the model's drag_defaults in the catalog, else DragConfig's defaults; radii in 512-px units.
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--r1", type=float, default=None, help="motion radius, 512-px units")
    parser.add_argument("--r2", type=float, default=None, help="tracking radius, 512-px units")
    parser.add_argument("--r3", type=float, default=None, help="Nearest search radius, 512-px units")
    parser.add_argument("--feature-block", type=int, default=None)
    parser.add_argument("--steps", type=int, default=200, help="maximum steps per edit (default 200)")
    parser.add_argument("--success-px", type=float, default=2.0, help="an edit succeeds within this mean distance")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from draggan.engine import DragConfig
    from draggan.quality import run_method, summarize, valid_pairs
    from stylegan2.catalog import drag_defaults
    from stylegan2.checkpoints import CheckpointError, load_generator, resolve_device

    try:
        G = load_generator(args.model, resolve_device(args.device))
        given = {"lr": args.lr, "r1": args.r1, "r2": args.r2, "r3": args.r3, "feature_block": args.feature_block}
        cfg = dataclasses.replace(DragConfig(**drag_defaults(args.model)), max_steps=args.steps,
                                  **{k: v for k, v in given.items() if v is not None})
        pairs = valid_pairs(G, args.pairs, args.seed, args.psi)
    except (CheckpointError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed + 1)
    points = [list(range(5)) if args.points == 5 else [int(rng.integers(5))] for _ in pairs]
    report = {"model": args.model, "points": args.points, "settings": dataclasses.asdict(cfg), "methods": {}}
    for method in args.methods:
        results = []
        for i, (pair, pts) in enumerate(zip(pairs, points)):
            results.append(run_method(G, method, pair, pts, cfg, args.psi))
            if not args.json and (i + 1) % 10 == 0:
                print(f"  {method}: {i + 1}/{len(pairs)}", file=sys.stderr, flush=True)
        report["methods"][method] = summarize(results, args.success_px)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{'method':<16} {'pairs':>5} {'before px':>9} {'after px':>9} {'found':>6} {'success':>8} "
              f"{'steps':>6} {'s/edit':>7}")
        for method, s in report["methods"].items():
            after = "n/a" if s["mean_distance_after"] is None else f"{s['mean_distance_after']:.2f}"
            print(f"{method:<16} {s['pairs']:>5} {s['mean_distance_before']:>9.2f} {after:>9} "
                  f"{s['landmarks_found_after']:>6.0%} {s['success_rate']:>8.0%} {s['mean_steps']:>6.1f} "
                  f"{s['seconds_per_edit']:>7.2f}")
    return 0
