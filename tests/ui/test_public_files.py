"""Public mode and the files a visitor sends or is sent (issue 26 items 3, 8, 9, 10)."""
import hashlib
import os
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
        views.check_layers([url])
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


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_catalog):
    import socket
    import types
    from stylegan2.checkpoints import save_generator
    from stylegan2.testing import tiny_generator
    folder = tmp_path_factory.mktemp("public-files")
    model = save_generator(tiny_generator(32, seed=0), folder / "tiny.safetensors")
    extra_catalog({"name": "tiny-files", "label": "Tiny", "path": str(model), "resolution": 32, "shows": "noise",
                   "licence": "test", "source": "tests"})
    built = draggan_app.build_demo("tiny-files", "cpu", public=True, max_per_client=10,
                                   max_upload_bytes=2 << 20, client_upload_bytes=(5 << 20) // 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built)
    built.demo.close()


def upload(server, n_bytes: int):
    import httpx
    return httpx.post(server.url + "gradio_api/upload", files={"files": ("x.bin", b"\0" * n_bytes)}, timeout=60)


def test_uploads_are_bounded_per_file_per_client_and_by_free_disk(server, monkeypatch):
    from draggan import public
    assert server.built.demo.max_file_size == 2 << 20             # public mode's per-file bound, far below 200 MB
    assert upload(server, 1 << 20).status_code == 200
    assert upload(server, 1 << 20).status_code == 200
    refused = upload(server, 1 << 20)                             # 3 MB from one address in an hour: over 2.5
    assert refused.status_code == 429 and "Upload limit" in refused.json()["error"]
    full = type("Usage", (), {"free": 1 << 20})()
    monkeypatch.setattr(public.shutil, "disk_usage", lambda path: full)
    refused = upload(server, 10)
    assert refused.status_code == 507 and refused.json()["error"] == public.DISK_FULL


def test_exports_are_refused_on_a_full_disk(server, monkeypatch):
    import gradio_client
    from draggan import public
    c = gradio_client.Client(server.url, verbose=False)
    c.predict(api_name="/generate")
    full = type("Usage", (), {"free": 1 << 20})()
    monkeypatch.setattr(public.shutil, "disk_usage", lambda path: full)
    for api in ("/save_image", "/export_video"):
        with pytest.raises(gradio_client.exceptions.AppError, match="disk is nearly full"):
            c.predict(api_name=api) if api == "/save_image" else c.predict("mp4", True, api_name=api)


def test_a_line_of_exports_never_delays_generate(server, monkeypatch):
    """Three visitors' exports are held inside their render (a gate); a newcomer's Generate still finishes."""
    import threading
    import gradio_client
    from draggan.sessions import EditSession
    gate, started = threading.Event(), threading.Semaphore(0)

    def held_export(self, path, overlay=True, stop=None):
        started.release()
        assert gate.wait(120)
        raise __import__("draggan.config", fromlist=["DragInputError"]).DragInputError("held export ended")
        yield  # a generator, as Session.export_steps
    monkeypatch.setattr(EditSession, "export_steps", held_export)
    clients = [gradio_client.Client(server.url, verbose=False) for _ in range(3)]
    try:
        jobs = []
        for c in clients:
            c.predict(api_name="/generate")
            jobs.append(c.submit("mp4", True, api_name="/export_video"))
        assert started.acquire(timeout=60)                       # one export is running and held
        newcomer = gradio_client.Client(server.url, verbose=False)
        view = newcomer.submit(seed=5, api_name="/generate").result(timeout=120)[0]
        assert view                                               # Generate did not wait for the exports
    finally:
        gate.set()
    for job in jobs:
        with pytest.raises(gradio_client.exceptions.AppError, match="held export"):
            job.result(timeout=120)


def test_a_public_server_cleans_its_cache_sooner(built):
    assert built.demo.delete_cache == (300, 900)     # every 5 minutes, files older than 15 (was 30 and 60)
    trusted = draggan_app.build_demo("toyfaces-64", "cpu", public=False)
    assert trusted.demo.delete_cache == (1800, 3600)


def test_a_pixel_is_editable_when_at_least_half_of_its_view_is_painted():
    s = views.view_scale(32)
    assert s >= 4
    layer = np.zeros((32 * s, 32 * s, 4), np.uint8)
    layer[:s, : s // 2 - 1, 3] = 255         # image pixel (0, 0): under half of its view painted
    layer[:s, s: s + s // 2, 3] = 255        # (0, 1): exactly half
    layer[:s, 2 * s: 3 * s, 3] = 255         # (0, 2): all of it
    mask = views.mask_from_layers([layer], 32)
    assert mask[0, :3].tolist() == [False, True, True] and int(mask.sum()) == 2


def test_a_mask_layer_array_longer_than_the_bound_on_one_side_is_refused():
    """Layers that arrive as arrays (the API, scripts) are bounded by side too, not only by their total size."""
    from draggan.config import DragInputError
    from draggan.public import MAX_MASK_PX
    assert views.mask_from_layers([np.zeros((MAX_MASK_PX, 8, 4), np.uint8)], 32) is None
    with pytest.raises(DragInputError, match=f"at most {MAX_MASK_PX}x{MAX_MASK_PX} pixels"):
        views.mask_from_layers([np.zeros((MAX_MASK_PX + 1, 8, 4), np.uint8)], 32)


def test_one_session_has_one_export_at_a_time_and_the_rest_are_refused_at_once(server, monkeypatch):
    """Issue 26: eight exports at once from one session: the first renders (held at a gate), the other seven are
    refused at once with one line instead of waiting in Gradio's queue; another visitor's export still completes,
    and the first visitor's image and history are as they were."""
    import threading
    import time
    import gradio_client
    from draggan.editor import Editor
    from draggan.sessions import EXPORT_BUSY
    gate, started, calls = threading.Event(), threading.Event(), []
    real = Editor.render_video

    def held_export(self, path, **kwargs):  # the render, held before its first frame
        calls.append(path)
        started.set()
        assert gate.wait(120), "the test never let the export go on"
        yield from real(self, path, **kwargs)
    monkeypatch.setattr(Editor, "render_video", held_export)
    a, b = (gradio_client.Client(server.url, verbose=False) for _ in range(2))
    for c in (a, b):
        c.predict(api_name="/generate")
        c.predict(handles="[[6, 6]]", targets="[[20, 18]]", max_steps=3, api_name="/drag")
    before = np.asarray(__import__("PIL.Image").Image.open(a.predict(api_name="/save_image")))
    try:
        jobs = [a.submit("gif", True, api_name="/export_video").future for _ in range(8)]
        assert started.wait(60), "no export started"
        deadline = time.monotonic() + 60                     # liveness only: refused ones answer while one renders
        while sum(job.done() for job in jobs) < 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = [str(job.exception()) for job in jobs if job.done()]
        assert refused == [EXPORT_BUSY] * 7                  # the other seven, while the first still renders
        held = next(job for job in jobs if not job.done())
        other = b.submit("gif", True, api_name="/export_video")  # waits for the one export slot, not refused
    finally:
        gate.set()
    assert other.result(timeout=120).endswith(".gif")
    assert held.result(timeout=120).endswith(".gif")
    assert len(calls) == 2                                   # one render for each visitor, none for the refused
    after = np.asarray(__import__("PIL.Image").Image.open(a.predict(api_name="/save_image")))
    assert np.array_equal(before, after)
    assert a.predict(api_name="/undo")[1] == "Undone."        # the drag's history is still there


def png_zeros(path, side: int) -> str:
    """A PNG of side x side transparent RGBA pixels, all there: decoded it takes 4 bytes a pixel (317 MB at 8900),
    yet zeros compress about 1000 to 1, so the file is some 300 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    packer, row, parts = zlib.compressobj(9), b"\0" * (1 + 4 * side), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return str(path)


def peak_rss_growth(action) -> int:
    """Bytes the process's peak resident memory (VmHWM, reset first) rose above its resident memory while `action`
    ran; this test process is the server too."""
    def status(field: str) -> int:
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                  # peak RSS := RSS now
    start = status("VmRSS")
    action()
    return status("VmHWM") - start


def call_private(server, fn_name: str, session_hash: str, data: list) -> list:
    """Call one of the page's own (private) events as the browser does, over HTTP: join the queue by fn_index, then
    read the answer from the event stream. Returns the output data."""
    import httpx
    import json
    fn_index = next(i for i, fn in server.built.demo.fns.items() if getattr(fn.fn, "__name__", "") == fn_name)
    joined = httpx.post(server.url + "gradio_api/queue/join", timeout=60,
                        json={"data": data, "fn_index": fn_index, "session_hash": session_hash,
                              "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", server.url + f"gradio_api/queue/data?session_hash={session_hash}", timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    assert message.get("success"), message
                    return message["output"]["data"]
    raise AssertionError("the event stream ended before the event completed")


def test_a_huge_mask_layer_sent_over_http_is_refused_in_one_line_and_costs_no_memory(server, tmp_path):
    """Issue 26: a visitor uploads (as a browser would, /gradio_api/upload) a mask layer whose header declares a huge
    picture, and sends it to the mask editor's event. The app answers one line from the header, the server's
    memory does not rise by the picture's size, and the visitor's image, points and mask stay."""
    import httpx
    import gradio_client
    c = gradio_client.Client(server.url, verbose=False)
    c.predict(seed=3, api_name="/generate")
    sess = server.built.ctx.sessions.get(c.session_hash)
    sess.add_point([5, 5])
    sess.add_point([20, 20])
    before = np.asarray(__import__("PIL.Image").Image.open(c.predict(api_name="/save_image")))
    for layer, side in ((png_zeros(tmp_path / "full.png", 8900), "8900x8900"),          # decodes to 317 MB
                        (png_header_only(tmp_path / "bomb.png", 20000), None)):          # Pillow's bomb bound
        assert os.path.getsize(layer) < 400_000
        with open(layer, "rb") as f:
            uploaded = httpx.post(server.url + "gradio_api/upload", files={"files": ("mask.png", f)}, timeout=60)
        assert uploaded.status_code == 200, uploaded.text
        value = {"background": None, "composite": None, "id": None,
                 "layers": [{"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}]}
        answers = []
        growth = peak_rss_growth(lambda: answers.append(call_private(server, "ui_apply_mask", c.session_hash, [value])))
        assert growth < 300 << 20, f"the server's memory rose {growth >> 20} MB"
        line = answers[0][1]
        assert line.startswith("⚠️ A mask layer must be") and "4096x4096" in line and "\n" not in line
        assert side is None or line.endswith(f"got {side}")
    after = np.asarray(__import__("PIL.Image").Image.open(c.predict(api_name="/save_image")))
    assert np.array_equal(before, after)
    assert sess.handles_xy == [[5.0, 5.0]] and sess.targets_xy == [[20.0, 20.0]] and sess.editable is None
