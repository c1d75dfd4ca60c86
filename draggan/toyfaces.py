"""Toy faces: a procedural dataset of cartoon faces with five colour-coded landmarks.

Every face is a pure function of its parameters (and the parameters of a seed), so the
training data is generated on the fly and any image can be rebuilt exactly.

The five landmarks are drawn in saturated colours that nothing else in the picture uses
(skin, hair, eye whites and backgrounds are sampled at least `MIN_COLOUR_DISTANCE` away
from every mark colour; gradients and anti-aliased edges between them stay well beyond
`DETECT_TOLERANCE`). `detect_landmarks` finds them again by colour, in rendered
images and in images from a GAN trained on them alike, which lets us measure how far a
drag moved a part of the face.

Coordinates are (x, y) image pixels: pixel (col, row) covers [col - 0.5, col + 0.5] x
[row - 0.5, row + 0.5], so its centre is (col, row). Face parameters are in units of the
image side, which makes one set of parameters renderable at any resolution.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth", "chin")  # left/right as seen in the image
# One saturated colour per landmark (RGB), hues about 72 degrees apart.
LANDMARK_COLOURS = np.array([
    (255, 0, 0),     # left pupil: red
    (200, 255, 0),   # right pupil: yellow-green
    (0, 230, 110),   # nose: green
    (0, 90, 255),    # mouth: blue
    (210, 0, 255),   # chin: violet
], dtype=np.float32)
MIN_COLOUR_DISTANCE = 170.0  # every other colour in a face is at least this far (RGB, 0..255) from every mark
DETECT_TOLERANCE = 110.0     # a pixel belongs to a mark when closer than this to its colour
SUPERSAMPLE = 4              # render at 4x and average 4x4 blocks: anti-aliasing that keeps centroids exact


@dataclasses.dataclass
class FaceParams:
    """One face. Lengths and positions are fractions of the image side; angles in degrees; colours RGB 0..255."""
    bg_top: tuple[int, int, int]          # background gradient, start colour
    bg_bottom: tuple[int, int, int]       # background gradient, end colour
    bg_angle: float                       # direction of the gradient
    bg_shapes: list[tuple]                # ('circle', cx, cy, r, rgb) or ('rect', x0, y0, x1, y1, rgb)
    head_xy: tuple[float, float]          # centre of the head ellipse
    head_axes: tuple[float, float]        # half width, half height
    head_angle: float                     # head tilt, clockwise in the image
    skin: tuple[int, int, int]
    hair: tuple[int, int, int] | None     # None: bald
    hair_height: float                    # how far the hair reaches down, in head half-heights
    eye_spacing: float                    # eye centres at +-eye_spacing * half width (head frame)
    eye_height: float                     # eye centres at -eye_height * half height (above the centre)
    eye_axes: tuple[float, float]         # eye white half width, half height
    pupil_radius: float
    gaze: tuple[float, float]             # pupil offset in [-1, 1]^2 of its free range inside the eye
    brow_angle: float                     # eyebrow tilt (positive: raised outer ends)
    nose_xy: tuple[float, float]          # nose centre, head frame, in head half-axes
    nose_radius: float
    mouth_y: float                        # mouth centre below the head centre, in head half-heights
    mouth_axes: tuple[float, float]       # half width, half height (the opening)
    chin_radius: float


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    px = cv2.cvtColor(np.array([[[h / 2, s * 255, v * 255]]], dtype=np.uint8), cv2.COLOR_HSV2RGB)
    return tuple(int(c) for c in px[0, 0])


def _far_from_marks(rgb: tuple[int, int, int]) -> bool:
    return bool(np.linalg.norm(LANDMARK_COLOURS - np.array(rgb, np.float32), axis=1).min() >= MIN_COLOUR_DISTANCE)


def _sample_colour(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
                   val: tuple[float, float]) -> tuple[int, int, int]:
    """A colour from an HSV box, redrawn until it is far from every landmark colour."""
    for _ in range(100):
        rgb = _hsv_to_rgb(rng.uniform(*hue) % 360, rng.uniform(*sat), rng.uniform(*val))
        if _far_from_marks(rgb):
            return rgb
    return (128, 128, 128)  # grey is far from all marks; practically never reached


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Random face parameters. The landmarks always lie inside the image."""
    def muted() -> tuple[int, int, int]:
        return _sample_colour(rng, (0, 360), (0.0, 0.4), (0.25, 0.95))

    shapes = []
    for _ in range(rng.integers(0, 4)):
        if rng.random() < 0.5:
            shapes.append(("circle", rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2), muted()))
        else:
            x0, y0 = rng.uniform(-0.1, 0.9, size=2)
            w, h = rng.uniform(0.1, 0.4, size=2)
            shapes.append(("rect", x0, y0, x0 + w, y0 + h, muted()))
    for _ in range(1000):
        p = _sample_layout(rng, muted(), muted(), shapes)
        if _parts_apart(p):
            return p
    raise AssertionError("no face layout with separate parts; the ranges in _sample_layout are inconsistent")


def _sample_layout(rng: np.random.Generator, bg_top: tuple[int, int, int], bg_bottom: tuple[int, int, int],
                   shapes: list[tuple]) -> FaceParams:
    """One candidate layout: head, features, colours; sample_params retries until the parts keep apart."""
    ax, ay = rng.uniform(0.23, 0.30), rng.uniform(0.28, 0.36)
    return FaceParams(
        bg_top=bg_top, bg_bottom=bg_bottom, bg_angle=float(rng.uniform(0, 360)), bg_shapes=shapes,
        head_xy=(float(rng.uniform(0.40, 0.60)), float(rng.uniform(0.42, 0.58))),
        head_axes=(float(ax), float(ay)), head_angle=float(rng.uniform(-20, 20)),
        skin=_sample_colour(rng, (10, 45), (0.15, 0.55), (0.35, 0.97)),
        hair=None if rng.random() < 0.2 else _sample_colour(rng, (0, 360), (0.0, 0.5), (0.08, 0.6)),
        hair_height=float(rng.uniform(0.25, 0.75)),
        eye_spacing=float(rng.uniform(0.38, 0.48)), eye_height=float(rng.uniform(0.15, 0.32)),
        eye_axes=(float(rng.uniform(0.06, 0.08)), float(rng.uniform(0.05, 0.065))),
        pupil_radius=float(rng.uniform(0.032, 0.04)),
        gaze=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
        brow_angle=float(rng.uniform(-20, 20)),
        nose_xy=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(0.0, 0.15))),
        nose_radius=float(rng.uniform(0.032, 0.042)),
        mouth_y=float(rng.uniform(0.45, 0.6)),
        mouth_axes=(float(rng.uniform(0.06, 0.13)), float(rng.uniform(0.025, 0.06))),
        chin_radius=float(rng.uniform(0.03, 0.038)),
    )


def _parts_apart(p: FaceParams, gap: float = 0.015) -> bool:
    """Eyes, nose, mouth and chin mark do not touch (vertical extents along the head, in image fractions)."""
    ay = p.head_axes[1]
    eye_bottom = -p.eye_height * ay + p.eye_axes[1]
    nose = (p.nose_xy[1] * ay - p.nose_radius, p.nose_xy[1] * ay + p.nose_radius)
    mouth = (p.mouth_y * ay - p.mouth_axes[1], p.mouth_y * ay + p.mouth_axes[1])
    chin_top = ay - 2.6 * p.chin_radius
    eyes_gap = p.eye_spacing * p.head_axes[0] - p.eye_axes[0]
    return eye_bottom + gap < nose[0] and nose[1] + gap < mouth[0] and mouth[1] + gap < chin_top and eyes_gap > gap / 2


def _head_to_image(p: FaceParams, local: tuple[float, float]) -> tuple[float, float]:
    """A point in head half-axes (x right, y down, head centre at 0) -> image fractions."""
    lx, ly = local[0] * p.head_axes[0], local[1] * p.head_axes[1]
    t = math.radians(p.head_angle)
    return (p.head_xy[0] + lx * math.cos(t) - ly * math.sin(t), p.head_xy[1] + lx * math.sin(t) + ly * math.cos(t))


def _pupil_local(p: FaceParams, side: int) -> tuple[float, float]:
    """Pupil centre of the left (side -1) or right (+1) eye, in head half-axes."""
    free_x = max(p.eye_axes[0] - p.pupil_radius - 0.008, 0.0)
    free_y = max(p.eye_axes[1] - p.pupil_radius - 0.006, 0.0)
    return (side * p.eye_spacing + p.gaze[0] * free_x / p.head_axes[0],
            -p.eye_height + p.gaze[1] * free_y / p.head_axes[1])


def landmarks_of(p: FaceParams, resolution: int = 64) -> np.ndarray:
    """The five landmark positions [5, 2] as (x, y) pixels at `resolution`."""
    local = [_pupil_local(p, -1), _pupil_local(p, +1), p.nose_xy, (0.0, p.mouth_y),
             (0.0, 1.0 - 1.6 * p.chin_radius / p.head_axes[1])]
    return np.array([_head_to_image(p, q) for q in local], dtype=np.float64) * resolution - 0.5


def render_face(params: FaceParams | int, resolution: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Draw a face. `params` is a FaceParams or a seed (int).

    Returns (image [resolution, resolution, 3] uint8 RGB, landmarks_xy [5, 2] float64 (x, y) pixels).
    """
    p = sample_params(np.random.default_rng(params)) if isinstance(params, (int, np.integer)) else params
    S = resolution * SUPERSAMPLE
    shift = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px
    one = 1 << shift

    def px(u: float) -> int:
        """Image fraction -> fixed-point hi-res pixel coordinate (pixel centres at integers)."""
        return int(round((u * S - 0.5) * one))

    def pt(xy: tuple[float, float]) -> tuple[int, int]:
        return px(xy[0]), px(xy[1])

    def size(u: float) -> int:
        return max(int(round(u * S * one)), 1)

    def ellipse(centre, axes, angle, colour, thickness=-1):
        cv2.ellipse(img, pt(centre), (size(axes[0]), size(axes[1])), angle, 0, 360, colour, thickness,
                    cv2.LINE_AA, shift)

    # Background: a linear gradient, then flat shapes.
    t = math.radians(p.bg_angle)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
    g = np.clip((xx * math.cos(t) + yy * math.sin(t)) / 1.42 + 0.5, 0, 1)[..., None]
    img = ((1 - g) * np.array(p.bg_top, np.float32) + g * np.array(p.bg_bottom, np.float32)).astype(np.uint8)
    for shape in p.bg_shapes:
        if shape[0] == "circle":
            cv2.circle(img, pt(shape[1:3]), size(shape[3]), shape[4], -1, cv2.LINE_AA, shift)
        else:
            cv2.rectangle(img, pt(shape[1:3]), pt(shape[3:5]), shape[5], -1, cv2.LINE_AA, shift)

    ax, ay = p.head_axes
    if p.hair is not None:  # a cap peeking out above the head
        ellipse(_head_to_image(p, (0.0, -0.12)), (ax * 1.08, ay * 0.98), p.head_angle, p.hair)
    ellipse(p.head_xy, p.head_axes, p.head_angle, p.skin)
    if p.hair is not None:  # the fringe: the top of the head, cut by a chord at hair_height
        top = _head_to_image(p, (0.0, -1.0 + p.hair_height / 2))
        ellipse(top, (ax * 0.98, ay * p.hair_height / 2), p.head_angle, p.hair)

    lm = landmarks_of(p, resolution)
    mark = [tuple(int(c) for c in LANDMARK_COLOURS[i]) for i in range(5)]
    brow = p.hair if p.hair is not None else (40, 30, 30)
    for side, idx in ((-1, 0), (1, 1)):
        centre = _head_to_image(p, (side * p.eye_spacing, -p.eye_height))
        ellipse(centre, p.eye_axes, p.head_angle, (250, 250, 245))
        cv2.circle(img, pt(((lm[idx, 0] + 0.5) / resolution, (lm[idx, 1] + 0.5) / resolution)),
                   size(p.pupil_radius), mark[idx], -1, cv2.LINE_AA, shift)
        brow_y = -p.eye_height - (p.eye_axes[1] + 0.05) / ay
        brow_centre = _head_to_image(p, (side * p.eye_spacing, brow_y))
        ellipse(brow_centre, (p.eye_axes[0] * 1.1, 0.012), p.head_angle - side * p.brow_angle, brow)
    for idx, radius_or_axes in ((2, p.nose_radius), (3, p.mouth_axes), (4, p.chin_radius)):
        centre = ((lm[idx, 0] + 0.5) / resolution, (lm[idx, 1] + 0.5) / resolution)
        axes = radius_or_axes if isinstance(radius_or_axes, tuple) else (radius_or_axes, radius_or_axes)
        ellipse(centre, axes, p.head_angle, mark[idx])
    img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return img, lm


def detect_landmarks(img: np.ndarray, tolerance: float = DETECT_TOLERANCE, min_area: int = 3) -> np.ndarray:
    """Find the five colour-coded landmarks in an RGB uint8 image [H, W, 3].

    For each mark: pixels within `tolerance` of its colour, the largest connected blob of
    them (smaller blobs are noise), and that blob's centroid weighted by closeness to the
    colour (so anti-aliased or blurred edges count partly, symmetrically).
    Returns [5, 2] (x, y) pixels, NaN for a mark with no blob of at least `min_area` pixels.
    """
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, (img.shape, img.dtype)
    rgb = img.astype(np.float32)
    out = np.full((len(LANDMARK_COLOURS), 2), np.nan)
    for i, colour in enumerate(LANDMARK_COLOURS):
        dist = np.linalg.norm(rgb - colour, axis=2)
        mask = (dist < tolerance).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n < 2:
            continue
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[best, cv2.CC_STAT_AREA] < min_area:
            continue
        rows, cols = np.nonzero(labels == best)
        weight = 1.0 - dist[rows, cols] / tolerance
        out[i] = (np.dot(weight, cols) / weight.sum(), np.dot(weight, rows) / weight.sum())
    return out


def face_batch(first_seed: int, count: int, resolution: int = 64) -> np.ndarray:
    """Faces for seeds first_seed .. first_seed + count - 1 as uint8 [count, resolution, resolution, 3]."""
    return np.stack([render_face(first_seed + i, resolution)[0] for i in range(count)])
