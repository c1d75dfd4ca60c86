"""Edit quality on the toy-faces model: the paper's face-landmark protocol with an exact oracle.

For random pairs of generated faces (A, B), drag the landmarks of A to the landmarks of B
and measure, with the colour detector of `toyfaces`, how far A's landmarks end up from
B's. Every method gets the same pairs, points and settings.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from stylegan2.networks import Generator, image_to_uint8

from .baseline import baseline_drag
from .engine import DragConfig, DragSession
from .toyfaces import detect_landmarks


@dataclasses.dataclass
class PairResult:
    seed_a: int
    seed_b: int
    landmarks: list[int]          # which of the five landmarks were dragged
    before: float                 # mean distance of A's landmarks to B's, pixels
    after: float                  # the same after the drag (NaN if a landmark vanished)
    steps: int
    seconds: float


def _ws(G: Generator, seed: int, psi: float) -> torch.Tensor:
    return DragSession.from_seed(G, seed, psi=psi).w0


def _render(G: Generator, ws: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return image_to_uint8(G.synthesis(ws))


def valid_pairs(G: Generator, count: int, seed: int, psi: float) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """`count` pairs of seeds whose images show all five landmarks, with their landmarks [5, 2]."""
    rng = np.random.default_rng(seed)
    pairs = []
    tries = 0
    while len(pairs) < count:
        tries += 1
        if tries > 50 * count:
            raise RuntimeError("the detector finds all landmarks in too few generated faces: is this the toy-faces model?")
        a, b = (int(s) for s in rng.integers(0, 2 ** 31 - 1, size=2))
        la, lb = (detect_landmarks(_render(G, _ws(G, s, psi))) for s in (a, b))
        if np.isfinite(la).all() and np.isfinite(lb).all():
            pairs.append((a, b, la, lb))
    return pairs


def run_method(G: Generator, method: str, pair, points: list[int], cfg: DragConfig, psi: float) -> PairResult:
    """Drag A's landmarks `points` to B's with one method: 'engine', 'engine+nearest' or 'straightforward'."""
    a, b, la, lb = pair
    handles = [[float(round(x)), float(round(y))] for x, y in la[points]]
    targets = [[float(round(x)), float(round(y))] for x, y in lb[points]]
    t0 = time.perf_counter()
    if method == "straightforward":
        w0 = _ws(G, a, psi)
        steps, ws = 0, w0
        for steps, (_, ws, _) in enumerate(baseline_drag(G, w0, handles, targets, cfg), start=1):
            pass
        image = _render(G, ws)
    else:
        session = DragSession.from_seed(G, a, psi=psi)
        run_cfg = dataclasses.replace(cfg, nearest=(method == "engine+nearest"), frame_every=cfg.max_steps)
        *_, last = session.drag(handles, targets, run_cfg)
        steps, image = last.step, last.image
    seconds = time.perf_counter() - t0
    found = detect_landmarks(image)[points]
    goal = lb[points]
    before = float(np.linalg.norm(la[points] - goal, axis=1).mean())
    after = float(np.linalg.norm(found - goal, axis=1).mean()) if np.isfinite(found).all() else float("nan")
    return PairResult(a, b, points, before, after, steps, seconds)


def summarize(results: list[PairResult], success_px: float) -> dict:
    before = np.array([r.before for r in results])
    after = np.array([r.after for r in results])
    found = np.isfinite(after)
    return {
        "pairs": len(results),
        "mean_distance_before": round(float(before.mean()), 3),
        "mean_distance_after": round(float(after[found].mean()), 3) if found.any() else None,
        "landmarks_found_after": round(float(found.mean()), 3),
        "success_rate": round(float((after[found] <= success_px).sum() / len(results)), 3),
        "mean_steps": round(float(np.mean([r.steps for r in results])), 1),
        "seconds_per_edit": round(float(np.mean([r.seconds for r in results])), 3),
    }
