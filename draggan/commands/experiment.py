"""`python -m draggan experiment PROTOCOL`: the papers' experiments on any model, here or on Ray.

    python -m draggan experiment landmarks --model toyfaces-64 --pairs 100 --points 5 \\
        --methods draggan,straightforward --json out.json --csv out.csv

A progress bar with ETA on stderr, the summary table on stdout; --json / --csv write the results.
"""
from __future__ import annotations

import argparse
import sys

HELP = "run an experiment (landmarks, reconstruction, decay, nearest, ...) over many pairs and summarize it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from draggan.commands._args import count, finite, number, positive, seed
    from draggan.commands._settings import add_setting_arguments, method_help
    from draggan.experiments.protocols import PROTOCOLS
    parser.add_argument("protocol", choices=list(PROTOCOLS),
                        help="; ".join(f"{p.name}: {p.help}" for p in PROTOCOLS.values()))
    parser.add_argument("--model", default="toyfaces-64", help="catalog name, Hub 'repo_id:filename' or a file")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    parser.add_argument("--pairs", type=count, default=None,
                        help="pairs (default: the protocol's, " + ", ".join(
                            f"{p.name} {p.default_pairs}" for p in PROTOCOLS.values()) + ")")
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
    for protocol in PROTOCOLS.values():
        if protocol.options is not None:
            protocol.options(parser)
    parser.add_argument("--predictor", default=None, help="Auto DragGAN model file for the 'auto' methods")
    parser.add_argument("--cold-start", action="store_true",
                        help="learned edits compute the start picture's feature maps themselves, as a script that "
                             "never rendered it does (default: kept from its render, as the app keeps them)")
    parser.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                        help="run the pairs as Ray actors: 'local' starts Ray here, 'auto' joins a running "
                             "cluster, or a cluster address")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--csv", default=None, metavar="PATH", help="write the per-method summary as CSV")
    # frame_every: --frame-every is decay's own (measure every n-th step); frames are not shown here
    add_setting_arguments(parser, exclude=("frame_every", "frame_interval_s", "frame_share"),
                          defaults={"max_steps": 300})


def run_experiment(args: argparse.Namespace, quiet: bool = False):
    """Load the model and run the registered protocol `args` names; returns the ExperimentResult."""
    from draggan.experiments.detectors import ExperimentSetupError
    from draggan.experiments.protocols import PROTOCOLS
    from draggan.experiments.workbench import BenchSpec, check_methods, load_bench

    from ._settings import setting_values

    protocol = PROTOCOLS[args.protocol]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    count = args.pairs or protocol.default_pairs
    if count < 1 or not methods:
        raise ExperimentSetupError("give at least one pair (--pairs) and one method (--methods)")
    detector = args.detector if protocol.needs_detector else None
    bench = load_bench(BenchSpec(args.model, args.device, detector, args.predictor, cold_start=args.cold_start))
    check_methods(list(protocol.methods or methods), bench)
    drag = setting_values(args)
    common = dict(max_steps=drag.pop("max_steps"), feature_block=drag.pop("feature_block", None), psi=args.psi,
                  seed=args.seed, drag=drag)
    return protocol.run(bench, methods, common, args, count, quiet)


def run(args: argparse.Namespace) -> int:
    from draggan.experiments.protocols import PROTOCOLS

    result = run_experiment(args)
    finish = PROTOCOLS[args.protocol].finish
    if finish is not None:
        finish(result, args)
    if args.json:
        result.write_json(args.json)
    if args.csv:
        result.write_csv(args.csv)
    print(result.table())
    sys.stdout.flush()
    return 0
