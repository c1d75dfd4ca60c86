"""Pairs of generated images for the landmark protocols: the same pairs for every method.

Two seeds per pair; both images must show every landmark the setting drags. The pairs
are a pure function of (generator, detector, count, points, seed, psi).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from stylegan2.networks import Generator

from .detectors import ExperimentSetupError, LandmarkDetector
from .workbench import render, seed_latent

MAX_TRIES_PER_PAIR = 50  # seed pairs drawn per wanted pair before giving up on the detector


@dataclasses.dataclass
class Pair:
    """A source image (seed_a) whose landmarks are dragged onto those of a target image (seed_b)."""
    index: int
    seed_a: int
    seed_b: int
    handles_xy: list[list[float]]   # landmarks of A (detected, sub-pixel; the drag rounds them)
    targets_xy: list[list[float]]   # landmarks of B (detected, sub-pixel)

    def md_before(self) -> float:
        """Mean distance from the handles to the targets, pixels."""
        return float(np.linalg.norm(np.subtract(self.handles_xy, self.targets_xy), axis=1).mean())


def landmark_pairs(G: Generator, detector: LandmarkDetector, count: int, points: int, seed: int = 0,
                   psi: float = 0.7) -> list[Pair]:
    """`count` pairs of seeds whose images both show all `points` landmarks, deterministic from `seed`."""
    if points not in detector.points_available:
        raise ExperimentSetupError(f"the {detector.name} detector finds {sorted(detector.points_available)} points, "
                                   f"not {points}")
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    for _ in range(MAX_TRIES_PER_PAIR * count + 1):
        if len(pairs) == count:
            return pairs
        a, b = (int(s) for s in rng.integers(0, 2 ** 31 - 1, size=2))
        la, lb = (detector.detect(render(G, seed_latent(G, s, psi)), points) for s in (a, b))
        if np.isfinite(la).all() and np.isfinite(lb).all():
            pairs.append(Pair(len(pairs), a, b, la.tolist(), lb.tolist()))
    raise ExperimentSetupError(f"the {detector.name} detector found all {points} landmarks in too few generated "
                               f"images ({len(pairs)} pairs of {count}): is this the right detector for the model?")
