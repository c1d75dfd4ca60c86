"""Landmark detectors behind one small interface: the toy-faces colour oracle and dlib.

A detector takes an RGB uint8 image [H, W, 3] and a number of points (1, 5 or 68) and
returns (x, y) image pixels [points, 2], with NaN rows for landmarks it did not find.
The 1-point setting is the nose tip, as the Qt reproduction takes it from dlib's 5-point
model. dlib is optional: `pip install -r requirements-experiments.txt`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from stylegan2.errors import UserError

INSTALL_HINT = "pip install -r requirements-experiments.txt"


class ExperimentSetupError(UserError):
    """An experiment needs something this machine lacks (a package, a file, a predictor)."""


class LandmarkDetector(Protocol):
    """What the landmark protocols need of a detector."""
    name: str                     # 'toy' or 'dlib'
    points_available: frozenset[int]  # the point counts `detect` accepts

    def detect(self, image: np.ndarray, points: int) -> np.ndarray:
        """Landmarks of `image` [H, W, 3] uint8 as (x, y) pixels [points, 2] float; NaN rows where not found."""
        ...


def _check(detector: LandmarkDetector, image: np.ndarray, points: int) -> None:
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, (image.shape, image.dtype)
    if points not in detector.points_available:
        raise ExperimentSetupError(f"the {detector.name} detector finds {sorted(detector.points_available)} points, "
                                   f"not {points}: pick --points from those or another --detector")


class ToyFacesDetector:
    """The exact colour oracle of our toy-faces model (`draggan.toyfaces.detect_landmarks`)."""
    name = "toy"
    points_available = frozenset({1, 5})
    NOSE = 2  # index of the nose in toyfaces.LANDMARK_NAMES

    def detect(self, image: np.ndarray, points: int) -> np.ndarray:
        from draggan.toyfaces import detect_landmarks

        _check(self, image, points)
        found = detect_landmarks(image)                                   # [5, 2] (x, y)
        return found[[self.NOSE]] if points == 1 else found


def _face_models_dir() -> Path:
    """Folder of the `face-recognition-models` package's .dat files, found without importing it.

    Its __init__ imports `pkg_resources`, which new setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ExperimentSetupError(f"the dlib detector needs the face-recognition-models package: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibDetector:
    """dlib's HOG face detector and shape predictors (King 2009), as the DragGAN papers measure.

    5 points: dlib's 5-point model (eye corners, nose tip); 1 point: its nose tip (index 4);
    68 points: the iBUG 68-point model. The largest face found is used.
    """
    name = "dlib"
    points_available = frozenset({1, 5, 68})
    NOSE_TIP = 4  # index of the nose tip in dlib's 5-point model

    def __init__(self, upsample: int = 1):
        """upsample: how often dlib doubles the image before looking for faces (1 finds faces >= ~40 px)."""
        try:
            import dlib
        except ImportError:
            raise ExperimentSetupError(f"the dlib detector needs dlib: {INSTALL_HINT}") from None
        models = _face_models_dir()
        self._dlib = dlib
        self._faces = dlib.get_frontal_face_detector()
        self._predictors = {n: dlib.shape_predictor(str(models / f"shape_predictor_{n}_face_landmarks.dat"))
                            for n in (5, 68)}
        self.upsample = upsample

    def face_box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face as (left, top, right, bottom) pixels, or None."""
        rects = self._faces(np.ascontiguousarray(image), self.upsample)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return r.left(), r.top(), r.right(), r.bottom()

    def detect(self, image: np.ndarray, points: int) -> np.ndarray:
        _check(self, image, points)
        box = self.face_box(image)
        if box is None:
            return np.full((points, 2), np.nan)
        shape = self._predictors[68 if points == 68 else 5](np.ascontiguousarray(image), self._dlib.rectangle(*box))
        xy = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)   # [5 or 68, 2]
        return xy[[self.NOSE_TIP]] if points == 1 else xy


DETECTORS = {"toy": ToyFacesDetector, "dlib": DlibDetector}


def get_detector(name: str) -> LandmarkDetector:
    """A detector by name: 'toy' (exact, offline, for the toy-faces model) or 'dlib' (real faces)."""
    if name not in DETECTORS:
        raise ExperimentSetupError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name]()
