"""`python -m draggan quality`: an alias of `experiment landmarks` with the flags it always had.

Method names keep their old spelling (engine = draggan, engine+nearest = draggan+nearest,
straightforward); --json alone prints the JSON on stdout, --json PATH writes it to a file.
The JSON is `experiment`'s, each method's summary also under the old keys
(mean_distance_before, mean_distance_after, landmarks_found_after, mean_steps).
"""
from __future__ import annotations

import argparse
import json

HELP = "drag the landmarks of one generated face to another's and measure where they land (= experiment landmarks)"
METHODS = {"engine": "draggan", "engine+nearest": "draggan+nearest", "straightforward": "straightforward",
           **{m: m for m in ("draggan", "draggan+nearest", "auto", "auto-refine", "auto-noreg", "auto-n1")}}
DEFAULT_METHODS = ["engine", "engine+nearest", "straightforward"]
OLD_KEYS = {"md_before": "mean_distance_before", "md_after": "mean_distance_after",
            "found_after": "landmarks_found_after", "steps": "mean_steps"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from draggan.commands._args import seed
    from draggan.commands.drag import add_speed_arguments
    parser.add_argument("--model", default="toyfaces-64", help="a toy-faces model (default toyfaces-64)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    parser.add_argument("--pairs", type=int, default=100, help="random face pairs (default 100)")
    parser.add_argument("--points", type=int, choices=[1, 5, 68], default=5, help="landmarks dragged per pair")
    parser.add_argument("--detector", choices=["toy", "dlib"], default="toy", help="landmark detector (default toy)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the pair sampler (default 0)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS,
                        help="old names (engine = draggan) or any drag method; auto* need the model's predictor")
    parser.add_argument("--psi", type=float, default=0.7)
    # None = the model's drag_defaults in the catalog, else DragConfig's defaults; radii in 512-px units.
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--r1", type=float, default=None, help="motion radius, 512-px units")
    parser.add_argument("--r2", type=float, default=None, help="tracking radius, 512-px units")
    parser.add_argument("--r3", type=float, default=None, help="Nearest search radius, 512-px units")
    parser.add_argument("--feature-block", type=int, default=None)
    parser.add_argument("--steps", type=int, default=200, help="maximum steps per edit (default 200)")
    parser.add_argument("--success-px", type=float, default=2.0, help="an edit succeeds within this mean distance")
    parser.add_argument("--fid", action="store_true", help="FID of the edited to the initial images")
    parser.add_argument("--mask-margin", type=float, default=None,
                        help="masked run: only the box around each pair's landmarks (this many px wider) may change")
    parser.add_argument("--lambda-mask", type=float, default=None, help="weight of the mask term (default: the model's)")
    add_speed_arguments(parser)
    parser.add_argument("--ray", default=None, metavar="local|auto|ADDRESS", help="run the pairs as Ray actors")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="JSON instead of the table: on stdout, or written to PATH")
    parser.add_argument("--csv", default=None, metavar="PATH", help="write the per-method summary as CSV")


def run(args: argparse.Namespace) -> int:
    from draggan.commands.experiment import run_experiment

    exp = argparse.Namespace(
        protocol="landmarks", model=args.model, device=args.device, pairs=args.pairs,
        methods=",".join(METHODS[m] for m in args.methods), points=args.points, detector=args.detector,
        max_steps=args.steps, feature_block=args.feature_block, seed=args.seed, psi=args.psi, lr=args.lr,
        r1=args.r1, r2=args.r2, r3=args.r3, success_px=args.success_px, fid=args.fid, predictor=None, ray=args.ray,
        lambda_mask=args.lambda_mask, mask_margin=args.mask_margin, precision=args.precision, local=args.local)
    result = run_experiment(exp, quiet=args.json == "-")
    old_names = {METHODS[m]: m for m in args.methods}
    result.methods = {old_names[name]: {**s, **{old: s[new] for new, old in OLD_KEYS.items()}}
                      for name, s in result.methods.items()}
    for record in result.pairs:
        record["method"] = old_names[record["method"]]
    if args.csv:
        result.write_csv(args.csv)
    if args.json == "-":
        print(json.dumps(result.to_json(), indent=1))
    else:
        if args.json:
            result.write_json(args.json)
        print(result.table())
    return 0
