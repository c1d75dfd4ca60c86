"""The Qt reproduction's ablation of the Nearest radius R3: 1 point, DragGAN with Nearest on, MD per R3.

Nearest moves each handle most of the way to the closest Canny edge within R3 (512-px units)
before the drag, so tracking follows texture. The table has the no-Nearest baseline first.
The Qt reproduction's MDs (FFHQ 512, dlib): R3 10: 4.72, 20: 4.23, 30: 4.71, 40: 4.18, 60: 4.69.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from .landmarks import LandmarkSettings, run_edits
from .pairs import Pair
from .report import ExperimentResult, Progress
from .workbench import Bench

R3_VALUES = (10.0, 20.0, 30.0, 40.0, 60.0)  # the Qt reproduction's grid, 512-px units
BASELINE = "draggan (no Nearest)"


def run_nearest(bench: Bench, settings: LandmarkSettings, pairs: Sequence[Pair], r3_values: Sequence[float] = R3_VALUES,
                progress: Progress | None = None, ray: str | None = None) -> ExperimentResult:
    """MD per R3 for 'draggan' with nearest=True, and the baseline without Nearest, on the same 1-point pairs."""
    assert settings.points == 1, "the Nearest ablation drags one point, as the Qt reproduction"
    cfg = settings.drag_config(bench.model)
    variants = {BASELINE: ("draggan", cfg)}
    variants.update({f"nearest r3={r:g}": ("draggan", dataclasses.replace(cfg, nearest=True, r3=float(r)))
                     for r in r3_values})
    result = run_edits(bench, variants, settings, pairs, "nearest", progress, ray)
    result.settings["r3_values"] = [float(r) for r in r3_values]
    return result
