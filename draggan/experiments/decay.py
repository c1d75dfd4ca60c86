"""Mean Distance Decay (Auto DragGAN): MD(t) / MD(0) against wall-clock time, per method.

Every frame of a drag is rendered (frame_every, default 1), its landmarks detected and its
MD to the targets taken; t is the drag's wall time up to that frame, rendering included
(the same for every method) and detection excluded. Shows how fast a method converges,
not only where it ends. Numbers always; a PNG plot when matplotlib is installed.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .detectors import INSTALL_HINT
from .landmarks import EditJob, LandmarkSettings
from .pairs import Pair
from .ray_runner import map_jobs
from .report import ExperimentResult, Progress, mean
from .workbench import Bench, check_methods, edit, seed_latent, start_picture


@dataclasses.dataclass
class DecaySettings(LandmarkSettings):
    frame_every: int = 1         # render and measure every n-th step


def decay_record(bench: Bench, job: EditJob) -> dict[str, Any]:
    """One drag's curve: seconds and MD(t)/MD(0) at every rendered frame, starting at (0, 1)."""
    G, pair = bench.G, job.pair
    goal = np.asarray(pair.targets_xy)
    md0 = pair.md_before()
    curve: list[tuple[float, float]] = [(0.0, 1.0)]

    def measure(frame, seconds: float) -> None:
        if frame.image is None:
            return
        found = bench.detector.detect(frame.image, job.points)
        if np.isfinite(found).all():
            curve.append((seconds, float(np.linalg.norm(found - goal, axis=1).mean()) / md0))

    w = seed_latent(G, pair.seed_a, job.psi)
    result = edit(bench, job.method, w, pair.handles_xy, pair.targets_xy, job.config, image=start_picture(bench, w),
                  on_frame=measure)
    ratios = [r for _, r in curve]
    half = next((t for t, r in curve if r <= 0.5), float("nan"))
    return {"method": job.label, "pair": pair.index, "seed_a": pair.seed_a, "seed_b": pair.seed_b,
            "md_before": md0, "md_ratio_final": ratios[-1], "seconds_to_half": half, "steps": result.steps,
            "seconds": result.seconds, "curve": [[round(t, 4), round(r, 4)] for t, r in curve]}


def run_decay(bench: Bench, methods: Sequence[str], settings: DecaySettings, pairs: Sequence[Pair],
              progress: Progress | None = None, ray: str | None = None) -> ExperimentResult:
    """Curves of MD(t)/MD(0) for every method on the same (one or a few) pairs."""
    assert bench.detector is not None, "the decay protocol measures landmarks: it needs a detector"
    check_methods(list(methods), bench)
    cfg = settings.drag_config(bench.model, frame_every=settings.frame_every)
    jobs = [EditJob(m, m, cfg, p, settings.points, settings.psi, False) for m in methods for p in pairs]
    records = map_jobs(decay_record, jobs, bench, ray, progress, label=lambda j: f"{j.label} pair {j.pair.index}")
    summary = {}
    for m in methods:
        mine = [r for r in records if r["method"] == m]
        summary[m] = {"pairs": len(mine), "md_before": mean(r["md_before"] for r in mine),
                      "md_ratio_final": mean(r["md_ratio_final"] for r in mine),
                      "seconds_to_half": mean(r["seconds_to_half"] for r in mine),
                      "steps": mean(r["steps"] for r in mine), "seconds_per_edit": mean(r["seconds"] for r in mine)}
    info = {**dataclasses.asdict(settings), "model": bench.model, "detector": bench.detector.name,
            "pair_count": len(pairs), "drag_config": dataclasses.asdict(cfg)}
    return ExperimentResult("decay", info, summary, records)


def plot_decay(result: ExperimentResult, path: str | Path) -> str | None:
    """Write the curves as a PNG (one colour per method, one line per pair); None, or a note why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no decay plot: matplotlib is not installed ({INSTALL_HINT})"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, method in enumerate(result.methods):
        for j, r in enumerate(p for p in result.pairs if p["method"] == method):
            t, ratio = zip(*r["curve"])
            ax.plot(t, ratio, color=f"C{i}", alpha=0.8, label=method if j == 0 else None)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("MD(t) / MD(0)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Mean distance decay, {result.settings.get('model') or 'generator'}, "
                 f"{result.settings.get('points')} point(s)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
