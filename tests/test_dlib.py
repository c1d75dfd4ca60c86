"""dlib's face landmarks on a real photo shipped by scikit-image (the astronaut Eileen Collins)."""
import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib is not installed (pip install -r requirements-experiments.txt)")
skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed (requirements-experiments.txt)")

from draggan.experiments.detectors import DlibDetector, ExperimentSetupError  # noqa: E402


@pytest.fixture(scope="module")
def detector():
    try:
        return DlibDetector()
    except ExperimentSetupError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def photo():
    return skdata.astronaut()                                 # [512, 512, 3] uint8


def _inside(xy: np.ndarray, box, margin: float = 0.15) -> bool:
    left, top, right, bottom = box
    mx, my = margin * (right - left), margin * (bottom - top)
    return bool(((xy[:, 0] >= left - mx) & (xy[:, 0] <= right + mx) &
                 (xy[:, 1] >= top - my) & (xy[:, 1] <= bottom + my)).all())


def test_68_landmarks_in_the_face_box_eyes_above_nose_above_mouth(detector, photo):
    box = detector.face_box(photo)
    assert box is not None
    left, top, right, bottom = box
    assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200, box   # her face, upper middle
    lm = detector.detect(photo, 68)
    assert lm.shape == (68, 2) and np.isfinite(lm).all() and _inside(lm, box)
    eyes_y = lm[36:48, 1].mean()
    nose_tip_y = lm[30, 1]
    mouth_y = lm[48:68, 1].mean()
    assert eyes_y < nose_tip_y < mouth_y
    right_eye_x, left_eye_x = lm[36:42, 0].mean(), lm[42:48, 0].mean()   # as seen in the image
    assert right_eye_x < lm[30, 0] < left_eye_x


def test_5_point_model_and_its_nose_tip_as_the_1_point_setting(detector, photo):
    box = detector.face_box(photo)
    five = detector.detect(photo, 5)
    assert five.shape == (5, 2) and _inside(five, box)
    assert five[:4, 1].max() < five[4, 1]                       # eye corners above the nose tip
    assert np.array_equal(detector.detect(photo, 1), five[[4]])
    lm68 = detector.detect(photo, 68)
    assert np.linalg.norm(five[4] - lm68[33]) < 8                # dlib's 5-point nose = 68-point nose bottom


def test_no_face_gives_nan_rows(detector):
    blank = np.full((128, 128, 3), 127, np.uint8)
    assert np.isnan(detector.detect(blank, 5)).all()
