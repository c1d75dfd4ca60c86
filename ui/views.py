"""How the app shows images: the view (the image enlarged for small models, its points drawn), the files the
browser fetches (cached_png) and the drag frames sent inline (InlineFrame, ViewImage). Clicks are converted
from view pixels to image pixels in one place, `view_to_image_xy`."""
from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import math
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np

from draggan.config import DragInputError
from draggan.draw import draw_mask, draw_points, enlarge
from draggan.public import MAX_MASK_PX, image_size
from stylegan2.errors import UserError

VIEW_MIN_PX = 256                # small images are shown enlarged to at least this size (the browser scales further)
MASK_RGBA = (34, 197, 94, 128)   # how the editable area looks in the mask editor
FRAME_JPEG_QUALITY = 95          # a drag's frames before the last (the last, and every other view, is a lossless PNG)
MAX_MASK_LAYERS = 8
MAX_VIEW_CACHE_BYTES = 256 << 20  # the views' PNGs kept in Gradio's cache; the least recently shown go first
_NAME_KEY = secrets.token_bytes(32)  # this process's secret: a file's name says nothing about its content


class ViewFiles:
    """The PNG files cached_png wrote, least recently shown first, and their bytes: above `limit`, the oldest
    are removed (a visitor's clicks each make a new picture; Gradio's own cleaner only ages them by time)."""

    def __init__(self, limit: int = MAX_VIEW_CACHE_BYTES):
        self.limit = limit
        self.total = 0
        self._sizes: collections.OrderedDict[Path, int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def shown(self, path: Path, size: int | None = None) -> None:
        """`path` was written (size: its bytes) or shown again (size None)."""
        with self._lock:
            if size is None:
                if path in self._sizes:
                    self._sizes.move_to_end(path)
                return
            self.total += size - self._sizes.pop(path, 0)
            self._sizes[path] = size
            while self.total > self.limit and len(self._sizes) > 1:
                old, old_size = self._sizes.popitem(last=False)
                self.total -= old_size
                old.unlink(missing_ok=True)
                try:
                    old.parent.rmdir()
                except OSError:
                    pass  # a staging file of a writer beside it, or already gone


VIEW_FILES = ViewFiles()


def content_name(data: bytes) -> str:
    """A cached file's name: an HMAC of its content under this process's secret (a plain hash would let a
    visitor test whether another is looking at a picture they can predict, such as a seed's)."""
    return hmac.new(_NAME_KEY, data, hashlib.sha256).hexdigest()


def encode_image(image: np.ndarray, ext: str, params: list[int]) -> bytes:
    """An RGB or RGBA uint8 image encoded by OpenCV (ext ".png" or ".jpg"), or a ValueError."""
    code = cv2.COLOR_RGBA2BGRA if image.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(image, np.uint8), code), params)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {ext}")
    return buf.tobytes()


def cached_png(image: np.ndarray, cache_dir: str | Path) -> str:
    """An RGB or RGBA uint8 image as a PNG file in Gradio's cache, named by its content: written once, under a
    temporary name and renamed into place, so whoever reads it reads it whole. Gradio's own writer rewrites a
    content-named file in place each time the same picture is produced again; the view and the mask editor's
    background are the same picture after Generate, so the browser sometimes fetched the view's file while it
    was being rewritten (ERR_CONTENT_LENGTH_MISMATCH) and the first image never showed."""
    data = encode_image(image, ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast; our images are small
    folder = Path(cache_dir) / content_name(data)
    path = folder / "image.png"
    try:
        os.utime(path)  # already there: Gradio's delete_cache ages files by ctime, so one shown again is kept
        VIEW_FILES.shown(path)
        return str(path)
    except FileNotFoundError:
        pass  # not written yet (or just deleted by that cleaner)
    folder.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".image.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    VIEW_FILES.shown(path, len(data))
    return str(path)


class InlineFrame:
    """A drag's intermediate view, sent inside the event stream (see ViewImage)."""

    def __init__(self, view: np.ndarray):
        self.view = view


class ViewImage(gr.Image):
    """The app's pictures: the image view, the single-pair test's and the photo preview. A drag's intermediate
    frames (InlineFrame) travel inside the event stream as JPEG data URLs (a tenth of a PNG's encoding time);
    every other picture (the last frame, Generate, Undo...) is a PNG file written by cached_png, which the
    browser fetches. Fetching each frame as a file cost the server a request per frame (its middleware, file
    checks and threaded file reads) and slowed a small model's drag by a quarter (`python -m draggan bench --app`)."""

    def get_block_name(self) -> str:
        return "image"  # the browser shows it as Gradio's image

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, InlineFrame):
            try:
                jpeg = encode_image(value.view, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
                return {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"),
                        "orig_name": "frame.jpg", "mime_type": "image/jpeg"}
            except ValueError:
                value = value.view  # sent as a file instead
        if isinstance(value, np.ndarray):
            value = cached_png(value, self.GRADIO_CACHE)
        return super().postprocess(value)


def check_layers(layers: list) -> None:
    """Refuse a mask editor's layers by their count and each one's header (its size), before any is decoded:
    8 layers of 79 MP, decoded first and measured after, cost 2.9 GB in one request (issue 26 item 3)."""
    if len(layers) > MAX_MASK_LAYERS:
        raise DragInputError(f"A mask has at most {MAX_MASK_LAYERS} layers, got {len(layers)}")
    for layer in layers:
        source = layer
        if not isinstance(layer, (bytes, bytearray, memoryview, str)):
            source = getattr(layer, "path", None) or getattr(layer, "url", None)
        if source is not None:
            image_size(source, MAX_MASK_PX, "A mask layer")


class MaskEditor(gr.ImageEditor):
    """Gradio's image editor, whose layers are checked from their headers before they are decoded, and whose
    background and composite (the app's own picture, and the two combined) are never decoded: only the layers
    make the mask. A refused value reaches the handler as {"refused": message}, to be shown beside the image."""

    def get_block_name(self) -> str:
        return "imageeditor"

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        if payload.id is not None:  # sent in pieces beforehand (Gradio's blob storage)
            stored = self.blob_storage.pop(payload.id, None)
            layers = list(stored.layers or []) if stored is not None else []
        else:
            layers = list(payload.layers or [])
        try:
            check_layers(layers)
        except UserError as e:
            return {"background": None, "layers": [], "composite": None, "refused": str(e)}
        decoded = [self.convert_and_format_image(layer) for layer in layers]
        return {"background": None, "layers": [x for x in decoded if x is not None], "composite": None}


def view_scale(resolution: int) -> int:
    """How many view pixels one image pixel covers (nearest-neighbour enlargement)."""
    return max(1, math.ceil(VIEW_MIN_PX / resolution))


def view_to_image_xy(view_xy: Any, resolution: int) -> list[float]:
    """A click on the view, in view pixels ([x, y] from Gradio's select event), -> the (x, y) image pixel it
    fell in. Anything else (None, text, one number) is a DragInputError, not a traceback."""
    try:
        x, y = (float(c) for c in list(view_xy)[:2])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError
    except (TypeError, ValueError):
        raise DragInputError(f"a click must be an [x, y] pair of view pixels, got {str(view_xy)[:40]!r}") from None
    s = view_scale(resolution)
    return [float(min(max(int(c) // s, 0), resolution - 1)) for c in (x, y)]


def render_view(image: np.ndarray, handles_xy, targets_xy, editable: np.ndarray | None, show_mask: bool) -> np.ndarray:
    """The image with its points (and the fixed area dimmed, if asked), enlarged to the view size."""
    if show_mask and editable is not None:
        image = draw_mask(image, editable)
    return draw_points(image, handles_xy, targets_xy, scale=view_scale(image.shape[0]))


def mask_from_layers(layers: list[np.ndarray] | None, resolution: int) -> np.ndarray | None:
    """Painted mask-editor layers (view size, RGBA) -> editable area [H, W] bool, or None if nothing painted."""
    painted = None
    for layer in (layers or [])[:MAX_MASK_LAYERS]:
        layer = np.asarray(layer)
        if layer.ndim not in (2, 3) or max(layer.shape[:2]) > MAX_MASK_PX or layer.size > MAX_MASK_PX ** 2 * 4:
            raise DragInputError(f"A mask layer must be an image of at most {MAX_MASK_PX}x{MAX_MASK_PX} pixels")
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(*layer.shape[:2], -1).max(-1)
        painted = alpha > 0 if painted is None or painted.shape != alpha.shape else painted | (alpha > 0)
    if painted is None or not painted.any():
        return None
    # A pixel is editable when at least half of its view pixels were painted.
    small = cv2.resize(painted.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def mask_layer(editable: np.ndarray, resolution: int) -> np.ndarray:
    """Editable area [H, W] -> a view-size RGBA layer for the mask editor."""
    big = enlarge(editable.astype(np.uint8), view_scale(resolution)).astype(bool)
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = MASK_RGBA
    return layer
