"""Face-landmark manipulation (DragGAN Sec. 4.2, Auto DragGAN Table 1, the Qt reproduction).

For each pair (A, B): drag A's landmarks to B's, detect the landmarks on the result and
measure the mean distance (MD) to B's. The same pairs and settings for every method.
Also: success rate (MD after <= success_px), steps, seconds per edit, and optionally the
FID between the edited images and the initial images A.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch

from draggan.config import DragConfig

from .fid import fid
from .pairs import Pair
from .ray_runner import map_jobs
from .report import ExperimentResult, Interrupted, Progress, mean
from .workbench import Bench, DragSettings, check_methods, edit, render, seed_latent, start_picture


@dataclasses.dataclass
class LandmarkSettings(DragSettings):
    points: int = 5              # landmarks per pair: 1 (nose tip), 5, or 68 (dlib)
    success_px: float = 2.0      # an edit succeeds when its MD after is within this many pixels
    fid: bool = False            # FID between the edited and the initial images (Inception weights needed)
    mask_margin: float | None = None  # masked run: only the box around the pair's landmarks, this many px wider,
                                      # may change; None: no mask. Either way `outside_change` is measured


@dataclasses.dataclass
class EditJob:
    """One edit: a pair, dragged with one method (or variant) under one config."""
    label: str                   # the method or variant name results are grouped by
    method: str                  # what run_drag runs (a METHOD_NAMES entry, optionally '+nearest')
    config: DragConfig
    pair: Pair
    points: int
    psi: float
    keep_image: bool             # return the edited image (for FID)
    mask_margin: float | None = None  # see LandmarkSettings


OUTSIDE_MARGIN = 8.0  # px around the landmarks' box: outside it, an edit should change little


def landmark_box(pair: Pair, margin: float, resolution: int) -> np.ndarray:
    """[H, W] bool: the box around the pair's handles and targets, `margin` px wider."""
    pts = np.asarray(pair.handles_xy + pair.targets_xy)
    x0, y0 = np.floor(pts.min(0) - margin).astype(int).clip(0, resolution - 1)
    x1, y1 = np.ceil(pts.max(0) + margin).astype(int).clip(0, resolution - 1)
    box = np.zeros((resolution, resolution), bool)
    box[y0:y1 + 1, x0:x1 + 1] = True
    return box


def landmark_record(bench: Bench, job: EditJob) -> dict[str, Any]:
    """Run one edit and measure it: the per-pair record."""
    G, pair = bench.G, job.pair
    w = seed_latent(G, pair.seed_a, job.psi)
    before = start_picture(bench, w)
    res = G.img_resolution
    editable = None if job.mask_margin is None else landmark_box(pair, job.mask_margin, res)
    result = edit(bench, job.method, w, pair.handles_xy, pair.targets_xy, job.config, image=before,
                  editable=None if editable is None else torch.from_numpy(editable).to(w.device))
    outside = ~landmark_box(pair, OUTSIDE_MARGIN if job.mask_margin is None else job.mask_margin, res)
    found = bench.detector.detect(result.image, job.points)                  # [points, 2]
    goal = np.asarray(pair.targets_xy)
    md_after = float(np.linalg.norm(found - goal, axis=1).mean()) if np.isfinite(found).all() else float("nan")
    def change(image: np.ndarray) -> float:
        return float(np.abs(image.astype(np.float64) - before)[outside].mean()) if outside.any() else float("nan")

    # The picture shown, and the latent's own: they differ where the hold shows the start picture outside the mask
    # (DragConfig.hold): the latent's change there is what the hold hides, the size of its seam.
    own = result.image if editable is None or not job.config.hold else render(G, result.latent)
    record = {"method": job.label, "pair": pair.index, "seed_a": pair.seed_a, "seed_b": pair.seed_b,
              "md_before": pair.md_before(), "md_after": md_after, "steps": result.steps,
              "seconds": result.seconds, "reason": result.reason,
              "outside_change": change(result.image)}
    if editable is not None:
        record["latent_outside_change"] = change(own)
    if job.keep_image:
        record["_image"] = result.image
    return record


def summarize_edits(records: list[dict[str, Any]], success_px: float) -> dict[str, Any]:
    """Per-method summary of landmark records."""
    after = np.array([r["md_after"] for r in records], dtype=np.float64)
    found = np.isfinite(after)
    summary = {"pairs": len(records), "md_before": mean(r["md_before"] for r in records),
               "md_after": mean(after), "found_after": float(found.mean()),
               "success_rate": float((after[found] <= success_px).sum() / max(len(records), 1)),
               "steps": mean(r["steps"] for r in records), "seconds_per_edit": mean(r["seconds"] for r in records),
               "outside_change": mean(r["outside_change"] for r in records)}
    if any("latent_outside_change" in r for r in records):   # a masked run
        summary["latent_outside_change"] = mean(r["latent_outside_change"] for r in records)
    return summary


def run_edits(bench: Bench, variants: dict[str, tuple[str, DragConfig]], settings: LandmarkSettings,
              pairs: Sequence[Pair], protocol: str, progress: Progress | None = None,
              ray: str | None = None) -> ExperimentResult:
    """Every pair under every variant {label: (method, DragConfig)}; summaries per variant."""
    assert bench.detector is not None, "the landmark protocols need a detector"
    check_methods(sorted({m for m, _ in variants.values()}), bench)
    jobs = [EditJob(label, method, cfg, pair, settings.points, settings.psi, settings.fid, settings.mask_margin)
            for label, (method, cfg) in variants.items() for pair in pairs]
    try:
        records = map_jobs(landmark_record, jobs, bench, ray, progress,
                           label=lambda j: f"{j.label} pair {j.pair.index}")
    except Interrupted as stop:  # stopped between two edits: the summary of what was finished goes along
        stop.result = _summarize(bench, variants, settings, pairs, protocol, stop.records)
        stop.result.notes.append(f"stopped after {len(stop.records)} of {len(jobs)} edits")
        raise
    return _summarize(bench, variants, settings, pairs, protocol, records)


def _summarize(bench: Bench, variants: dict[str, tuple[str, DragConfig]], settings: LandmarkSettings,
               pairs: Sequence[Pair], protocol: str, records: list[dict[str, Any]]) -> ExperimentResult:
    """Summaries per variant of the records there are (FID too, when asked); the protocol's result."""
    notes: list[str] = []
    methods = {}
    initial = [render(bench.G, seed_latent(bench.G, p.seed_a, settings.psi)) for p in pairs] if settings.fid else []
    for label in variants:
        mine = [r for r in records if r["method"] == label]
        if not mine:
            continue
        methods[label] = summarize_edits(mine, settings.success_px)
        if settings.fid:
            result = fid([r.pop("_image") for r in mine], initial, device=next(bench.G.parameters()).device)
            methods[label]["fid"] = result.value
            if result.reason and result.reason not in notes:
                notes.append(result.reason)
    configs = {label: dataclasses.asdict(cfg) for label, (_, cfg) in variants.items()}
    info = {**dataclasses.asdict(settings), "model": bench.model, "detector": bench.detector.name,
            "pair_count": len(pairs), "drag_configs": configs}
    return ExperimentResult(protocol, info, methods, records, notes)


def run_landmarks(bench: Bench, methods: Sequence[str], settings: LandmarkSettings, pairs: Sequence[Pair],
                  progress: Progress | None = None, ray: str | None = None) -> ExperimentResult:
    """The landmark protocol: every method on the same pairs, one DragConfig from the model and settings."""
    cfg = settings.drag_config(bench.model)
    return run_edits(bench, {m: (m, cfg) for m in methods}, settings, pairs, "landmarks", progress, ray)
