"""`python -m draggan train-auto`: train Auto DragGAN's predictor + regularizer for one generator
(see docs/auto_draggan.md)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

HELP = "train Auto DragGAN (the learned drag) for one generator (resumable)"
KEEP_SHEETS = 4  # sample sheets kept in the run folder (older ones are deleted: the folder is committed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="generator spec (catalog name, path or Hub file)")
    parser.add_argument("--out", required=True, help="run directory (checkpoint.pt, log.txt, sample sheets)")
    parser.add_argument("--preset", choices=["small", "paper"], default="small", help="sizes (new runs only)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one AutoConfig field of the preset (new runs only; repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this many minutes of this run")
    parser.add_argument("--steps", type=int, default=None, help="stop at this global step (default: the schedule)")
    parser.add_argument("--export", default=None,
                        help="model file written at each snapshot (default models/SPEC-auto.safetensors for a "
                             "catalog model, else OUT/auto.safetensors)")
    parser.add_argument("--snapshot-minutes", type=float, default=5.0, help="checkpoint, sheet and export interval")
    parser.add_argument("--log-seconds", type=float, default=60.0, help="progress line interval")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="torch device: auto (GPU if there is one), cpu, cuda")


def _overrides(pairs: list[str]) -> dict[str, float | int]:
    from draggan.auto import AutoConfig, AutoConfigError

    types = {f.name: f.type for f in dataclasses.fields(AutoConfig)}
    out: dict[str, float | int] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise AutoConfigError(f"--set {pair}: no field {key!r}; fields: {', '.join(types)}")
        try:
            out[key] = float(value) if types[key] in (float, "float") else int(value)
        except ValueError:
            raise AutoConfigError(f"--set {pair}: {value!r} is not a {types[key]}") from None
    return out


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from draggan.auto import AutoConfig, preset, save_auto_model
    from draggan.auto.train import CHECKPOINT_NAME, EVAL_STEP, AutoTrainer, make_batch, train_auto
    from draggan.config import DragInputError
    from stylegan2.catalog import drag_defaults, model_names
    from stylegan2.checkpoints import load_generator, resolve_device
    from stylegan2.training import run_logger

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt = out / CHECKPOINT_NAME
    if args.resume and not ckpt.exists():
        raise DragInputError(f"no {ckpt} to resume; drop --resume to start a new run")
    if not args.resume and ckpt.exists():
        raise DragInputError(f"{ckpt} exists; pass --resume to continue that run, or choose another --out")
    G = load_generator(args.model, resolve_device(args.device))
    if args.resume:
        trainer = AutoTrainer.load(ckpt, G)
    else:
        overrides = _overrides(args.set)
        block = overrides.pop("feature_block", None) or drag_defaults(args.model).get("feature_block")
        # A generator with fewer than 6 blocks (< 128 px) reads its last block unless told otherwise.
        block = int(block) if block else min(AutoConfig.feature_block, len(G.synthesis.blocks))
        cfg = preset(args.preset, G.num_ws, block, **overrides)
        trainer = AutoTrainer(cfg, G, args.model)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
    export = Path(args.export or (f"models/{args.model}-auto.safetensors" if args.model in model_names()
                                  else out / "auto.safetensors"))
    eval_batch = make_batch(G, trainer.cfg, EVAL_STEP, batch=8)
    log, close_log = run_logger(out / "log.txt")

    def snapshot(t: AutoTrainer) -> None:
        t.save(ckpt)
        save_auto_model(export, t.model, G, t.spec)
        stats, sheet = t.evaluate(eval_batch)
        name = f"drags-{t.step_count:06d}.png"
        Image.fromarray(sheet).save(out / name)
        for old in sorted(out.glob("drags-*.png"))[:-KEEP_SHEETS]:
            old.unlink()
        log(f"snapshot step {t.step_count} ({name}, {export}): 8 held-out drags, handle-target distance "
            f"{stats['md_before']:.2f} px -> {stats['md_after']:.2f} px; |ŵn - wn|_1 {stats['w_l1']:.4f}")

    n_params = sum(p.numel() for p in trainer.model.parameters())
    log(f"{'resume' if args.resume else 'start'} at step {trainer.step_count}/{trainer.total_steps} on "
        f"{args.model} ({G.mapping.w_avg.device}); {n_params:,} params; threads {torch.get_num_threads()}; "
        f"config {trainer.cfg.to_json()}")
    deadline = None if args.minutes is None else args.minutes * 60
    last = args.steps if args.steps is not None else trainer.total_steps
    train_auto(trainer, lambda t, secs: t.step_count >= last or (deadline is not None and secs >= deadline),
               snapshot, log, log_seconds=args.log_seconds, snapshot_minutes=args.snapshot_minutes)
    log(f"stopped at step {trainer.step_count}/{trainer.total_steps}; train {trainer.train_seconds / 3600:.2f} h")
    close_log()
    return 0
