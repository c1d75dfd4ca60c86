"""Public mode and the files a visitor sends or is sent (issue 26 items 3, 8, 9, 10)."""
import hashlib
import struct
import zlib

import numpy as np
import pytest

pytest.importorskip("gradio")
import app as draggan_app  # noqa: E402
from gradio.data_classes import FileData  # noqa: E402
from gradio.components.image_editor import EditorData  # noqa: E402
from PIL import ImageFile  # noqa: E402

from ui import views  # noqa: E402

LAYER_SIDE = 8900  # 79 MP: under Pillow's own bound (80 MP), as in the probe


def png_header_only(path, side: int) -> str:
    """A PNG that declares side x side RGBA pixels but holds almost none: Pillow opens it (the header), and only
    decoding would find it short. Refusing it from its header costs nothing; decoding it would take 4 bytes a
    pixel (316 MB at 79 MP) before any check."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def built():
    return draggan_app.build_demo("toyfaces-64", "cpu", public=True)


@pytest.fixture
def decodes(monkeypatch):
    """The images Pillow decoded (ImageFile.load calls) while the test ran."""
    calls = []
    real = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return real(self)
    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_huge_mask_layers_are_refused_before_any_is_decoded(built, tmp_path, decodes):
    editor = built.components["mask_editor"]
    layer = png_header_only(tmp_path / "layer.png", LAYER_SIDE)
    for n in (8, 9):
        value = editor.preprocess(EditorData(background=None, layers=[FileData(path=layer)] * n, composite=None))
        assert value["layers"] == [] and str(LAYER_SIDE if n == 8 else n) in value["refused"]
    assert decodes == []  # refused from the headers: not one of the 79 MP layers was decoded
    # A data URL layer is checked the same way (its length, then its header).
    import base64
    url = "data:image/png;base64," + base64.b64encode(open(layer, "rb").read()).decode()
    with pytest.raises(Exception, match="at most 4096x4096"):
        __import__("ui.sections.mask", fromlist=["check_layers"]).check_layers([url])
    assert decodes == []


def test_a_small_layer_still_makes_a_mask(built, tmp_path):
    from PIL import Image
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[:128, :, 3] = 255
    path = tmp_path / "paint.png"
    Image.fromarray(rgba).save(path)
    value = built.components["mask_editor"].preprocess(EditorData(background=None, layers=[FileData(path=str(path))],
                                                                  composite=None))
    assert "refused" not in value and len(value["layers"]) == 1
    mask = views.mask_from_layers(value["layers"], 64)
    assert mask[:30].all() and not mask[34:].any()


def test_cached_file_names_are_salted_with_a_server_secret(tmp_path):
    image = np.full((8, 8, 3), 7, np.uint8)
    path = views.cached_png(image, tmp_path)
    data = open(path, "rb").read()
    name = path.split("/")[-2]
    assert name != hashlib.sha256(data).hexdigest()              # a visitor cannot name it from the picture
    assert views.cached_png(image, tmp_path) == path              # still one file per picture


def test_the_view_cache_keeps_to_its_bound(tmp_path, monkeypatch):
    files = views.ViewFiles(limit=4 * 1024)
    monkeypatch.setattr(views, "VIEW_FILES", files)
    rng = np.random.default_rng(0)
    paths = [views.cached_png(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), tmp_path) for _ in range(12)]
    on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*.png"))
    assert on_disk <= 4 * 1024 and files.total == on_disk
    assert __import__("os").path.exists(paths[-1])                # the newest stays
    assert not __import__("os").path.exists(paths[0])             # the oldest went
