"""Points stay visible on any background: handles and targets differ, numbers are drawn, views are enlarged."""
import numpy as np
import pytest

from draggan.draw import HANDLE_RGB, TARGET_RGB, draw_points, enlarge, marker_radius

BACKGROUNDS = {"red": (255, 0, 0), "handle red": HANDLE_RGB, "blue": (0, 0, 255), "target blue": TARGET_RGB,
               "black": (0, 0, 0), "white": (255, 255, 255), "skin": (224, 172, 140), "sky": (120, 160, 220)}


def plain(rgb, side=64) -> np.ndarray:
    img = np.zeros((side, side, 3), np.uint8)
    img[:] = rgb
    return img


def contrast_on_rays(view: np.ndarray, centre: tuple[int, int], rgb, reach: int, rays: int = 48) -> np.ndarray:
    """For each ray from `centre` out to `reach` px, the largest colour difference from `rgb` along it."""
    diff = np.abs(view.astype(int) - np.array(rgb)).max(-1)
    best = []
    for a in np.linspace(0, 2 * np.pi, rays, endpoint=False):
        ts = np.arange(1, reach + 1)
        xs = np.round(centre[0] + ts * np.cos(a)).astype(int)
        ys = np.round(centre[1] + ts * np.sin(a)).astype(int)
        best.append(diff[ys, xs].max())
    return np.array(best)


@pytest.mark.parametrize("name", BACKGROUNDS)
@pytest.mark.parametrize("kind", ["handle", "target"])
def test_a_point_is_ringed_by_strong_contrast_on_every_background(name, kind):
    bg = BACKGROUNDS[name]
    p = [[32, 32]]
    view = draw_points(plain(bg), p if kind == "handle" else [], p if kind == "target" else [], scale=8)
    centre = (32 * 8 + 3, 32 * 8 + 3)
    r = marker_radius(*view.shape[:2])
    # Every way out of the point crosses a pixel far from the background colour: the
    # point is closed off from its surroundings, whatever their colour.
    assert contrast_on_rays(view, centre, bg, reach=2 * r).min() >= 150
    # and the mark covers no more than needed (a handle's number reaches further than its disc)
    changed = np.abs(view.astype(int) - np.array(bg)).max(-1) > 0
    ys, xs = np.nonzero(changed)
    assert np.hypot(xs - centre[0], ys - centre[1]).max() <= (5 if kind == "handle" else 2.5) * r


def test_handles_and_targets_differ_in_colour_and_shape():
    view = draw_points(plain((128, 128, 128)), [[16, 32]], [[48, 32]], scale=8)
    r = marker_radius(*view.shape[:2])
    h, t = (16 * 8 + 3, 32 * 8 + 3), (48 * 8 + 3, 32 * 8 + 3)
    assert tuple(view[h[1], h[0]]) == HANDLE_RGB and tuple(view[t[1], t[0]]) == TARGET_RGB
    # A disc leaves its bounding box's corners empty; a square fills them.
    assert tuple(view[h[1] - r + 1, h[0] - r + 1]) != HANDLE_RGB
    assert tuple(view[t[1] - r + 1, t[0] - r + 1]) == TARGET_RGB


def test_an_arrow_joins_handle_and_target():
    bg = (128, 128, 128)
    view = draw_points(plain(bg), [[16, 32]], [[48, 32]], scale=8)
    row = view[32 * 8 + 3]
    between = row[24 * 8:40 * 8]  # the middle of the shaft, well away from both marks
    assert (np.abs(between.astype(int) - bg).max(-1) > 100).all()


def test_numbers_are_drawn_large_enough_to_read():
    bg = (128, 128, 128)
    one = draw_points(plain(bg), [[20, 40]], [], scale=8)
    r = marker_radius(*one.shape[:2])
    cx, cy = 20 * 8 + 3, 40 * 8 + 3
    # Above and to the right of the handle's disc only the number is drawn.
    changed = np.abs(one.astype(int) - bg).max(-1) > 60
    ys, xs = np.nonzero(changed[:cy, cx + 2 * r:])
    assert len(ys) > 0, "no number drawn beside the handle"
    assert ys.max() - ys.min() + 1 >= 20  # about 2.4 marker radii tall: readable on a 512-px view
    # two handles get two different numbers
    two = draw_points(plain(bg), [[20, 40], [44, 40]], [], scale=8)
    a = two[cy - 6 * r:cy, cx + 2 * r:cx + 6 * r]
    b = two[cy - 6 * r:cy, cx + 24 * 8 + 2 * r:cx + 24 * 8 + 6 * r]
    assert not np.array_equal(a, b)


def test_small_images_are_enlarged_by_whole_pixels():
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    big = enlarge(img, 3)
    assert big.shape == (12, 12, 3)
    assert np.array_equal(big[::3, ::3], img) and np.array_equal(big[2::3, 2::3], img)
    assert draw_points(plain((0, 0, 0)), [], []).shape == (512, 512, 3)  # default view >= 512 px
    assert np.array_equal(draw_points(img, [], [], scale=3), big)       # no points: just the enlarged image
    with pytest.raises(ValueError):
        enlarge(img, 0)


def test_marks_grow_with_the_view_but_stay_small():
    assert marker_radius(256, 256) < marker_radius(768, 768) <= 16
    assert marker_radius(64, 64) >= 5
