"""The toy-face renderer is deterministic and its landmark detector finds the renderer's own coordinates."""
import dataclasses

import cv2
import numpy as np
import pytest

from draggan.toyfaces import (DETECT_TOLERANCE, LANDMARK_COLOURS, detect_landmarks, face_batch, render_face,
                              sample_params)

SEEDS = range(200)


@pytest.fixture(scope="module")
def rendered():
    return [render_face(seed) for seed in SEEDS]


def test_detector_finds_rendered_landmarks_to_subpixel(rendered):
    errors = []
    for img, lm in rendered:
        found = detect_landmarks(img)
        assert not np.isnan(found).any()
        errors.append(np.linalg.norm(found - lm, axis=1))
    errors = np.array(errors)  # [faces, 5]
    assert errors.mean(axis=0).max() < 0.25, errors.mean(axis=0)
    assert errors.max() < 1.0


def test_detector_survives_gan_like_blur_and_noise(rendered):
    rng = np.random.default_rng(0)
    errors = []
    for img, lm in rendered[:50]:
        soft = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8) + rng.normal(0, 6, img.shape)
        soft = (0.85 * soft + 0.15 * soft.mean(axis=2, keepdims=True))  # a little desaturation
        found = detect_landmarks(np.clip(soft, 0, 255).astype(np.uint8))
        assert not np.isnan(found).any()
        errors.append(np.linalg.norm(found - lm, axis=1))
    assert np.mean(errors) < 0.5, np.mean(errors, axis=0)


def test_same_seed_same_face_and_seeds_differ():
    a, lm_a = render_face(7)
    b, lm_b = render_face(7)
    c, lm_c = render_face(8)
    assert np.array_equal(a, b) and np.array_equal(lm_a, lm_b)
    assert not np.array_equal(a, c) and np.abs(lm_a - lm_c).max() > 0.5
    assert np.array_equal(face_batch(7, 2)[1], c)


def test_landmarks_inside_image_and_scale_with_resolution():
    for seed in range(100):
        params = sample_params(np.random.default_rng(seed))
        img64, lm64 = render_face(params, resolution=64)
        img128, lm128 = render_face(params, resolution=128)
        assert img64.shape == (64, 64, 3) and img128.shape == (128, 128, 3)
        assert (lm64 > 2).all() and (lm64 < 61).all()
        # pixel centres sit at integers: x_128 + 0.5 = 2 (x_64 + 0.5)
        np.testing.assert_allclose(lm128 + 0.5, 2 * (lm64 + 0.5), atol=1e-9)


def test_nothing_but_the_marks_uses_mark_colours(rendered):
    # Skin, hair, eyes and backgrounds are sampled far from the mark colours (gradients and
    # anti-aliased edges between them come a little closer), so every pixel the detector could
    # take for mark k, with some margin, lies on mark k (the mouth is at most 8.3 px wide).
    for img, lm in rendered[:50]:
        dist = np.linalg.norm(img[:, :, None, :].astype(np.float32) - LANDMARK_COLOURS, axis=3)  # [h, w, 5]
        rows, cols = np.nonzero(dist.min(axis=2) < DETECT_TOLERANCE + 25)
        k = dist[rows, cols].argmin(axis=1)
        assert (np.hypot(cols - lm[k, 0], rows - lm[k, 1]) < 9).all()


def test_a_moved_pupil_is_detected_where_it_moved():
    params = sample_params(np.random.default_rng(3))
    left = dataclasses.replace(params, gaze=(-1.0, 0.0))
    right = dataclasses.replace(params, gaze=(1.0, 0.0))
    (img_l, lm_l), (img_r, lm_r) = render_face(left), render_face(right)
    found_l, found_r = detect_landmarks(img_l), detect_landmarks(img_r)
    shift = found_r[:2] - found_l[:2]
    np.testing.assert_allclose(shift, lm_r[:2] - lm_l[:2], atol=0.3)
    assert (np.abs(shift[:, 0]) > 1).all()  # the pupils really moved
    np.testing.assert_allclose(found_r[2:], found_l[2:], atol=0.05)  # nose, mouth, chin did not


def test_missing_mark_is_nan():
    img, lm = render_face(11)
    x, y = np.round(lm[2]).astype(int)  # paint the nose over with the pixel beside the nose mark's left edge
    img = img.copy()
    img[y - 4:y + 5, x - 4:x + 5] = img[y, x - 6]
    found = detect_landmarks(img)
    assert np.isnan(found[2]).all()
    assert not np.isnan(found[[0, 1, 3, 4]]).any()
