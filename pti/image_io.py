"""A user's photo -> the square uint8 image an inversion targets.

Steps: refuse huge files before decoding them, honour the EXIF orientation, convert to
RGB (transparent areas onto white), crop a square (the centre, or the user's box), and
resize to the model's resolution with Lanczos. Each step that changes something the
user may not expect adds a note (a sentence) to the list returned with the image.

Crop boxes are (x0, y0, x1, y1) in pixels of the image as it is displayed, i.e. after
the EXIF rotation, with x1 and y1 exclusive.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stylegan2.errors import UserError
from stylegan2.networks import content_width  # noqa: F401 (re-exported)

MAX_PIXELS = 40_000_000  # refuse larger images before decoding: a 40 MP RGB image is 120 MB decoded
EXIF_ORIENTATION = 0x0112


class ImageInputError(UserError, ValueError):
    """A photo that cannot be used as given; the message says what to do."""


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """'x0,y0,x1,y1' -> a tuple of four ints (not yet checked against an image)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ImageInputError(f"the crop box must be four whole numbers x0,y0,x1,y1 (pixels), got {text!r}")
    return box  # type: ignore[return-value]


def check_crop(box: Sequence[int], width: int, height: int) -> tuple[int, int, int, int]:
    """Validate a crop box (x0, y0, x1, y1) against a width x height image; returns it as ints."""
    if len(box) != 4:
        raise ImageInputError(f"the crop box must be (x0, y0, x1, y1), got {tuple(box)!r}")
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ImageInputError(f"the crop box must hold whole numbers of pixels, got {tuple(box)!r}") from None
    if any(int(v) != v for v in box):
        raise ImageInputError(f"the crop box must hold whole numbers of pixels, got {tuple(box)!r}")
    if not (x0 < x1 and y0 < y1):
        raise ImageInputError(f"the crop box ({x0}, {y0}, {x1}, {y1}) is empty: x0 must be less than x1 and y0 less than y1")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ImageInputError(f"the crop box ({x0}, {y0}, {x1}, {y1}) goes outside the {width}x{height} image: "
                              f"keep 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    return x0, y0, x1, y1


def _centre_box(x0: int, y0: int, x1: int, y1: int, aspect: float = 1.0) -> tuple[int, int, int, int]:
    """The largest box of width / height = `aspect` centred in (x0, y0, x1, y1)."""
    h = min(y1 - y0, int((x1 - x0) / aspect))
    w = max(1, int(round(h * aspect)))
    cx, cy = x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2
    return cx, cy, cx + w, cy + h


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        notes.append(f"The image has more than 8 bits per pixel ({im.mode}); it was scaled to 8 bits.")
        im = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("Transparent areas were filled with white.")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def prepare_image(im: Image.Image | np.ndarray, resolution: int, crop: Sequence[int] | None = None,
                  width: int | None = None) -> tuple[np.ndarray, list[str]]:
    """An already-decoded image -> ([resolution, resolution, 3] uint8, notes).

    `im` is a PIL image (its EXIF orientation is applied) or an [H, W] / [H, W, 3|4] uint8 array
    such as an image component hands over. crop: (x0, y0, x1, y1) or None for the centre of the photo.
    width: the model's picture is `width` x `resolution` (StyleGAN-Human: half as wide as tall; see
    `content_width`): the photo is cropped to that shape and padded with white to the square, as the
    generator pads its own images. None: a square model.
    """
    notes: list[str] = []
    if isinstance(im, np.ndarray):
        if im.dtype != np.uint8 or im.ndim not in (2, 3) or (im.ndim == 3 and im.shape[2] not in (3, 4)):
            raise ImageInputError(f"expected an [H, W, 3] uint8 image array, got {im.dtype} {im.shape}")
        im = Image.fromarray(im)
    else:
        if im.getexif().get(EXIF_ORIENTATION, 1) not in (1, None):
            notes.append("The photo was turned upright as its EXIF orientation tag says.")
        im = ImageOps.exif_transpose(im)
    im = _to_rgb(im, notes)
    width = width or resolution
    shape = "square" if width == resolution else f"the model's {width}x{resolution} shape"
    w, h = im.size
    outer = check_crop(crop, w, h) if crop is not None else (0, 0, w, h)
    box = _centre_box(*outer, aspect=width / resolution)
    if box != outer:
        what = f"crop box is {outer[2] - outer[0]}x{outer[3] - outer[1]}" if crop is not None else f"photo is {w}x{h}"
        notes.append(f"The {what}, not {shape}: its centre {box[2] - box[0]}x{box[3] - box[1]} part is used"
                     + ("; pass a crop box to choose another part." if crop is None else "."))
    im = im.crop(box)
    if im.size != (width, resolution):
        small = im.size[1] < resolution
        im = im.resize((width, resolution), Image.Resampling.LANCZOS, reducing_gap=3.0)
        if small:
            part = (f"{box[2] - box[0]}-pixel square" if width == resolution else f"{box[2] - box[0]}x{box[3] - box[1]} part")
            size = f"{resolution}" if width == resolution else f"{width}x{resolution}"
            notes.append(f"The {part} was enlarged to the model's {size} pixels; expect a soft result.")
    out = np.asarray(im, dtype=np.uint8)
    side = (resolution - width) // 2
    if side:
        out = np.pad(out, ((0, 0), (side, resolution - width - side), (0, 0)), constant_values=255)
    return out.copy(), notes


def load_image(source: str | os.PathLike | BinaryIO, resolution: int, crop: Sequence[int] | None = None,
               max_pixels: int = MAX_PIXELS, width: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Read a photo (JPEG, PNG, WebP, ... anything Pillow reads) -> ([res, res, 3] uint8, notes).

    Raises ImageInputError for a missing, unreadable, damaged or too large file, or a bad crop box.
    """
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "the image")
    try:
        im = Image.open(source)
    except FileNotFoundError:
        raise ImageInputError(f"no such image file: {name}") from None
    except IsADirectoryError:
        raise ImageInputError(f"{name} is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{name} is not an image Pillow can read (use JPEG, PNG or WebP)") from None
    except Image.DecompressionBombError:
        raise ImageInputError(f"{name} is far too large to decode safely; downscale it to at most "
                              f"{max_pixels / 1e6:.0f} megapixels first") from None
    except OSError as e:
        raise ImageInputError(f"{name} is damaged or truncated and cannot be read ({e})") from None
    with im:
        w, h = im.size  # from the header: nothing decoded yet
        if w * h > max_pixels:
            raise ImageInputError(f"{name} is {w}x{h} ({w * h / 1e6:.0f} megapixels); the limit is "
                                  f"{max_pixels / 1e6:.0f} megapixels: downscale it first")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageInputError(f"{name} is damaged or truncated and cannot be decoded ({e})") from None
        return prepare_image(im, resolution, crop, width)
