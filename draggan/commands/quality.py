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
OLD_NAMES = {"engine": "draggan", "engine+nearest": "draggan+nearest"}
DEFAULT_METHODS = ["engine", "engine+nearest", "straightforward"]
# Drag settings that are not this command's: frames are not shown, so their pacing does not apply.
NOT_HERE = ("frame_every", "frame_interval_s", "frame_share")
OLD_KEYS = {"md_before": "mean_distance_before", "md_after": "mean_distance_after",
            "found_after": "landmarks_found_after", "steps": "mean_steps"}


def method_choices() -> dict[str, str]:
    """The old names, then every registered method and its '+nearest' variant: choice -> experiment method."""
    from draggan.methods import method_names
    return {**OLD_NAMES, **{f"{m}{suffix}": f"{m}{suffix}" for m in method_names() for suffix in ("", "+nearest")}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from draggan.commands._args import count, finite, number, positive, seed
    from draggan.commands._settings import add_setting_arguments, method_help
    parser.add_argument("--model", default="toyfaces-64", help="a toy-faces model (default toyfaces-64)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    parser.add_argument("--pairs", type=count, default=100, help="random face pairs (default 100)")
    parser.add_argument("--points", type=int, choices=[1, 5, 68], default=5, help="landmarks dragged per pair")
    parser.add_argument("--detector", choices=["toy", "dlib"], default="toy", help="landmark detector (default toy)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the pair sampler (default 0)")
    parser.add_argument("--methods", nargs="+", choices=list(method_choices()), default=DEFAULT_METHODS,
                        help="old names (engine = draggan) or any drag method, '+nearest' for Nearest: "
                             + method_help())
    parser.add_argument("--psi", type=finite, default=0.7)
    parser.add_argument("--success-px", type=positive, default=2.0, help="an edit succeeds within this mean distance")
    parser.add_argument("--fid", action="store_true", help="FID of the edited to the initial images")
    parser.add_argument("--mask-margin", type=number(0), default=None,
                        help="masked run: only the box around each pair's landmarks (this many px wider) may change")
    parser.add_argument("--ray", default=None, metavar="local|auto|ADDRESS", help="run the pairs as Ray actors")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="JSON instead of the table: on stdout, or written to PATH")
    parser.add_argument("--csv", default=None, metavar="PATH", help="write the per-method summary as CSV")
    add_setting_arguments(parser, exclude=NOT_HERE, defaults={"max_steps": 200})


def run(args: argparse.Namespace) -> int:
    from draggan.commands.experiment import run_experiment

    names = method_choices()
    exp = argparse.Namespace(**{**vars(args), "protocol": "landmarks", "predictor": None, "cold_start": False,
                                "methods": ",".join(names[m] for m in args.methods)})
    result = run_experiment(exp, quiet=args.json == "-")
    old_names = {names[m]: m for m in args.methods}
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
