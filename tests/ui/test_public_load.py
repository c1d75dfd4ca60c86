"""The bounded load test of issue 26: one hostile client does items 1, 3, 4, 5 and 8 at once while four
normal clients drag, on loopback. Every normal drag finishes; each one's first frame arrives within
FIRST_FRAME_S (liveness, generous on a loaded 2-core machine); the server's RSS grows by less than
RSS_GROWTH (the old mask path alone took 2.9 GB for one request) and Gradio's cache folder by less than the
per-client upload bound plus the view cache's bound."""
import socket
import threading
import time
import types
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
import httpx  # noqa: E402
from gradio.components.image_editor import EditorData  # noqa: E402
from gradio.data_classes import FileData  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402
from test_public_files import png_header_only  # noqa: E402

from ui import views  # noqa: E402

MODEL = "tiny-load"
FIRST_FRAME_S = 60.0                  # liveness only
RSS_GROWTH = 1 << 30                  # the server's resident memory may grow by less than 1 GiB
CLIENT_UPLOAD = 4 << 20               # the hostile address may upload 4 MB (public default: 512 MB an hour)
MOVE = dict(lr=0.08, r1=48, r2=96)
AppError = gradio_client.exceptions.AppError


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def folder_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except FileNotFoundError:
            pass  # cleaned meanwhile
    return total


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_catalog):
    folder = tmp_path_factory.mktemp("load")
    model = save_generator(tiny_generator(32, seed=0), folder / "tiny.safetensors")
    extra_catalog({"name": MODEL, "label": "Tiny load", "path": str(model), "resolution": 32, "shows": "noise",
                   "licence": "test", "source": "tests"})
    built = draggan_app.build_demo(MODEL, "cpu", public=True, max_sessions=24, max_per_client=16,
                                   client_upload_bytes=CLIENT_UPLOAD)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built, folder=folder)
    built.demo.close()


def hostile(server, done: threading.Event, seen: dict) -> None:
    """Items 1 (many drags in one session), 3 (8 layers of 79 MP), 4 (an experiment, then none allowed), 5 (8
    renders at once from 8 sessions) and 8 (uploads, saves and exports), over and over until the normal clients
    are done (each round bounded in count)."""
    c = gradio_client.Client(server.url, verbose=False)
    c.predict(api_name="/generate")
    layer = png_header_only(server.folder / "huge.png", 8900)
    editor = server.built.components["mask_editor"]
    rounds = 0
    while not done.is_set() and rounds < 20:
        rounds += 1
        jobs = [c.submit(handles="[[2, 2]]", targets="[[29, 29]]", max_steps=2000, lr=0.0005, api_name="/drag")
                for _ in range(6)]                                                        # item 1
        value = editor.preprocess(EditorData(background=None, layers=[FileData(path=layer)] * 8, composite=None))
        seen["mask_refused"] = seen.get("mask_refused", 0) + bool(value.get("refused"))  # item 3
        try:
            c.predict(protocol="landmarks", pairs=8, max_steps=1000, points=1, feature_block=0,
                      methods=["draggan"], api_name="/experiment")                          # item 4
        except AppError as e:
            seen.setdefault("experiment", str(e))
        renders = [gradio_client.Client(server.url, verbose=False) for _ in range(2)]
        gens = [r.submit(seed=i, api_name="/generate") for i, r in enumerate(renders * 4)]  # item 5
        for _ in range(3):                                                                  # item 8
            r = httpx.post(server.url + "gradio_api/upload", files={"files": ("x.bin", b"\0" * (1 << 20))}, timeout=60)
            seen.setdefault("upload_status", set()).add(r.status_code)
        for api in ("/save_image", "/export_video"):
            try:
                c.predict(api_name=api) if api == "/save_image" else c.predict("gif", True, api_name=api)
            except AppError:
                pass
        c.predict(api_name="/stop")
        for job in jobs + gens:
            try:
                job.result(timeout=120)
            except AppError as e:
                seen.setdefault("refusals", set()).add(str(e)[:60])
    seen["rounds"] = rounds


def test_one_hostile_client_does_not_take_the_demo_from_four_others(server):
    cache = Path(views.cached_png.__globals__["gr"].utils.get_upload_folder())
    rss0, cache0 = rss(), folder_bytes(cache)
    normal = [gradio_client.Client(server.url, verbose=False) for _ in range(4)]
    for i, c in enumerate(normal):
        c.predict(seed=10 + i, api_name="/generate")
    done, seen = threading.Event(), {}
    bad = threading.Thread(target=hostile, args=(server, done, seen), daemon=True)
    bad.start()
    first, last = [None] * 4, [None] * 4

    def drag(i: int, c) -> None:
        t0 = time.monotonic()
        job = c.submit(handles=f"[[{4 + i}, 4]]", targets=f"[[{20 + i}, 26]]", max_steps=40, api_name="/drag", **MOVE)
        while not job.done() and not job.outputs():
            time.sleep(0.05)
        first[i] = time.monotonic() - t0
        last[i] = job.result(timeout=300)[2]

    try:
        time.sleep(1.0)  # the hostile client is under way
        threads = [threading.Thread(target=drag, args=(i, c)) for i, c in enumerate(normal)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        done.set()
        bad.join(300)
    for i, frame in enumerate(last):
        assert frame is not None and frame["done"] and frame["reason"] in ("reached", "max_steps"), frame
        assert frame["targets"] == [[20 + i, 26]]
    assert all(f is not None and f < FIRST_FRAME_S for f in first), first          # liveness, generous
    assert seen["rounds"] >= 1 and seen["mask_refused"] == seen["rounds"]
    assert "does not fit" in seen["experiment"]                                    # a noise model: no landmarks
    assert 429 in seen["upload_status"]                                            # its uploads met their bound
    assert any("already" in m or "one drag" in m.lower() for m in seen.get("refusals", ())), seen
    grew_rss, grew_cache = rss() - rss0, folder_bytes(cache) - cache0
    print(f"first frames {[round(f, 1) for f in first]} s; RSS +{grew_rss >> 20} MB; cache +{grew_cache >> 20} MB;"
          f" hostile rounds {seen['rounds']}")
    assert grew_rss < RSS_GROWTH
    assert grew_cache < CLIENT_UPLOAD + views.MAX_VIEW_CACHE_BYTES + (64 << 20)
    assert len(server.built.experiments) == 0
