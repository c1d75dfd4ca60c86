"""Real photos in the app over HTTP (gradio_client): invert, cancel, the bound on tuned copies, embeddings,
and drag settings that follow the model. A tiny generator (as a catalog entry) and a thin random VGG."""
import dataclasses
import re
import socket
import time
import types

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
import gradio as gr  # noqa: E402
from ui.build import follow_model  # noqa: E402
from ui.build import RESETTABLE  # noqa: E402
from ui.sections.photo import preview_photo  # noqa: E402
from pti import PerceptualDistance, VGG16Features, get_preset, invert, save_embedding  # noqa: E402
from stylegan2.checkpoints import generator_hash  # noqa: E402
from stylegan2 import image_to_uint8  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402

RES = 32
MODEL = "tiny-test"
DRAG_DEFAULTS = {"lr": 0.05, "r1": 40, "r2": 90, "feature_block": 3}
FAST = get_preset("fast", w_steps=30, tune_steps=20)                    # about a second on one thread
LONG = dataclasses.replace(FAST, name="paper", w_steps=20000, tune_steps=20000)  # only a Cancel ends it soon
MOVE = dict(lr=0.08, r1=48, r2=96)
AppError = gradio_client.exceptions.AppError
handle_file = gradio_client.handle_file


def generated(G, seed: int) -> np.ndarray:
    """An image the generator can make exactly: a W latent without truncation, the model's own noise."""
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)))
        return image_to_uint8(G.synthesis(ws, noise_mode="const"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, extra_catalog):
    folder = tmp_path_factory.mktemp("pti-app")
    G = tiny_generator(RES, seed=1)
    model = save_generator(G, folder / "tiny.safetensors")
    extra_catalog({"name": MODEL, "label": "Tiny test model", "path": str(model), "resolution": RES,
                   "shows": "noise", "licence": "test", "source": "tests", "drag_defaults": DRAG_DEFAULTS})
    photos = {}
    for seed in (5, 7):
        photos[seed] = folder / f"photo{seed}.png"
        Image.fromarray(generated(G, seed)).save(photos[seed])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        perceptual = PerceptualDistance(VGG16Features(width=1 / 16))
    perceptual_loads = []
    built = draggan_app.build_demo(MODEL, "cpu", max_photos=2, pti_presets={"fast": FAST, "paper": LONG},
                                  perceptual_loader=lambda device: perceptual_loads.append(device) or perceptual)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", demo=built.demo, app=built.ctx, G=G,
                                model_path=str(model), photos=photos, perceptual_loads=perceptual_loads)
    built.demo.close()


@pytest.fixture
def connect(server):
    """Makes clients; their sessions (and tuned copies) end with the test."""
    made = []

    def make():
        made.append(gradio_client.Client(server.url, verbose=False))
        return made[-1]
    yield make
    for c in made:
        server.app.sessions.close(c.session_hash)


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_invert_a_photo_drag_it_reset_then_back_to_a_seed(server, connect):
    c = connect()
    c.predict(seed=3, api_name="/generate")
    seed_image = load(c.predict(api_name="/save_image"))
    base = server.app.sessions.generator(MODEL)
    base_hash = generator_hash(base)
    upload = load(server.photos[5])

    view, status, hint, report = c.predict(photo=handle_file(server.photos[5]), api_name="/invert")
    assert "**Your photo** (PTI on **Tiny test model**, 32×32) on **cpu** · PSNR" in status and "handle" in hint
    assert load(view).shape == (256, 256, 3) and "Projected in 30 steps" in report
    reported = float(re.search(r"PSNR ([\d.]+) dB", status)[1])
    saved = c.predict(api_name="/save_image")
    assert saved.endswith("draggan-photo.png")
    photo_image = load(saved)
    assert psnr(photo_image, upload) == pytest.approx(reported, abs=0.2)
    assert psnr(photo_image, upload) > 17 and psnr(photo_image, upload) > psnr(seed_image, upload) + 6

    job = c.submit(handles="[[6, 6]]", targets="[[24, 22]]", max_steps=25, api_name="/drag", **MOVE)
    job.result(timeout=120)
    frames = [o[2] for o in job.outputs()]
    assert frames[-1]["done"] and frames[-1]["mean_distance"] < 0.8 * np.hypot(18, 16)
    assert not np.array_equal(load(c.predict(api_name="/save_image")), photo_image)
    c.predict(api_name="/reset")                              # back to the inverted photo
    assert np.array_equal(load(c.predict(api_name="/save_image")), photo_image)

    sess = server.app.sessions.get(c.session_hash)
    assert sess.editor.G is not base and generator_hash(base) == base_hash  # the shared model never changed
    assert server.app.sessions.photo_count() == 1
    _, status, _ = c.predict(seed=3, api_name="/generate")    # back to the shared generator
    assert "seed 3" in status and np.array_equal(load(c.predict(api_name="/save_image")), seed_image)
    assert server.app.sessions.photo_count() == 0 and server.perceptual_loads == ["cpu"]


def test_cancel_stops_a_long_inversion_and_keeps_the_image(server, connect):
    c = connect()
    c.predict(seed=2, api_name="/generate")
    before = load(c.predict(api_name="/save_image"))
    job = c.submit(photo=handle_file(server.photos[5]), preset="paper", api_name="/invert")
    deadline = time.monotonic() + 60
    while True:  # the progress bar reaches the client: "Projecting", step / total
        units = job.status().progress_data or []
        if units and units[0].desc == "Projecting" and (units[0].index or 0) >= 2:
            break
        assert time.monotonic() < deadline and not job.done(), "no progress arrived"
        time.sleep(0.02)
    assert units[0].length == 20000 and units[0].unit == "steps"
    c.predict(api_name="/cancel_invert")
    view, status, hint, report = job.result(timeout=60)  # liveness only; the step count below says it stopped early
    step = int(re.fullmatch(r"Cancelled while projecting \(step (\d+) of 20000\): the image is as it was\.",
                            report)[1])
    assert step < 1000 and "seed 2" in status
    assert np.array_equal(load(c.predict(api_name="/save_image")), before)
    assert server.app.sessions.photo_count() == 0 and not server.app.sessions.inverting(c.session_hash)


def test_two_sessions_tune_separate_copies_and_the_bound_holds(server, connect):
    a, b, c = connect(), connect(), connect()
    a.predict(photo=handle_file(server.photos[5]), api_name="/invert")
    b.predict(photo=handle_file(server.photos[7]), api_name="/invert")
    sessions = server.app.sessions
    ga, gb = sessions.get(a.session_hash).editor.G, sessions.get(b.session_hash).editor.G
    base = sessions.generator(MODEL)
    wa, wb = ga.synthesis.b32.conv1.weight, gb.synthesis.b32.conv1.weight
    assert len({id(ga), id(gb), id(base)}) == 3 and wa.data_ptr() != wb.data_ptr() and not torch.equal(wa, wb)

    c.predict(seed=4, api_name="/generate")                   # max_photos=2: a third photo must wait
    c_image = load(c.predict(api_name="/save_image"))
    with pytest.raises(AppError, match="Too many photo sessions right now.*try again"):
        c.predict(photo=handle_file(server.photos[5]), api_name="/invert")
    assert np.array_equal(load(c.predict(api_name="/save_image")), c_image)
    a.predict(seed=1, api_name="/generate")                   # a frees its slot
    _, status, _, _ = c.predict(photo=handle_file(server.photos[5]), api_name="/invert")
    assert "Your photo" in status and sessions.photo_count() == 2


def test_bad_photos_get_a_clear_message_and_nothing_is_lost(server, connect, tmp_path):
    c = connect()
    c.predict(seed=6, api_name="/generate")
    before = load(c.predict(api_name="/save_image"))
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)                   # 48 MP, a few kB on disk
    with pytest.raises(AppError, match=r"^huge.png is 8000x6000 \(48 megapixels\); the limit is 40 megapixels"):
        c.predict(photo=handle_file(huge), api_name="/invert")
    for crop, message in [("1,2,3", "four whole numbers x0,y0,x1,y1"), ("0,0,99,99", "outside the 32x32 image")]:
        with pytest.raises(AppError, match=message):
            c.predict(photo=handle_file(server.photos[5]), crop=crop, api_name="/invert")
    with pytest.raises(AppError, match="Upload a photo"):
        c.predict(photo=None, api_name="/invert")
    assert np.array_equal(load(c.predict(api_name="/save_image")), before)
    assert server.app.sessions.photo_count() == 0
    # the preview says the same without an error dialog
    image, text = preview_photo(server.app, str(huge), "", MODEL)
    assert image is None and text.startswith("⚠️ huge.png is 8000x6000")
    image, text = preview_photo(server.app, str(server.photos[5]), "0,0,16,16", MODEL)
    assert image.shape == (256, 256, 3) and text == "The 16-pixel square was enlarged to the model's 32 pixels; " \
                                                    "expect a soft result."


def test_embedding_save_then_load_comes_back_to_the_photo(server, connect, tmp_path):
    c = connect()
    _, status, _, _ = c.predict(photo=handle_file(server.photos[7]), api_name="/invert")
    photo_image = load(c.predict(api_name="/save_image"))
    path = c.predict(api_name="/save_embedding")
    assert path.endswith(".safetensors")
    c.predict(seed=8, api_name="/generate")
    seed_image = load(c.predict(api_name="/save_image"))
    with pytest.raises(AppError, match="generated, not a photo"):
        c.predict(api_name="/save_embedding")

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(AppError, match="^junk.safetensors is not a readable .safetensors file"):
        c.predict(embedding=handle_file(junk), api_name="/load_embedding")
    other_G = tiny_generator(RES, seed=2)                     # same architecture, other weights
    other = save_embedding(tmp_path / "other.safetensors",
                           invert(other_G, generated(other_G, 1), server.app.sessions.perceptual(),
                                  get_preset("fast", w_steps=2, tune_steps=1)), other_G, MODEL)
    with pytest.raises(AppError, match="other weights"):
        c.predict(embedding=handle_file(other), api_name="/load_embedding")
    assert np.array_equal(load(c.predict(api_name="/save_image")), seed_image)  # nothing lost

    _, loaded_status, _, report = c.predict(embedding=handle_file(path), api_name="/load_embedding")
    assert loaded_status == status and "Projected in 30 steps" in report
    assert np.array_equal(load(c.predict(api_name="/save_image")), photo_image)


def test_drag_settings_follow_the_model(server, connect):
    sliders = {c["props"]["label"]: c["props"]["value"] for c in server.demo.config["components"]
               if c["type"] == "slider"}
    assert sliders["R1: motion radius"] == 40 and sliders["Feature block"] == 3 and sliders["Step size"] == 0.05
    c = connect()
    c.predict(api_name="/generate")
    assert c.predict(api_name="/drag_defaults") == (0.05, 40, 90, 40, 3, 300)  # r3, max_steps: DragConfig's

    ctx, request = server.app, types.SimpleNamespace(session_hash=c.session_hash, client=None)
    names = RESETTABLE
    keys = ("lr", "r1", "r2", "r3", "feature_block", "max_steps")

    def follow(applied):
        out = follow_model(ctx, applied, request)
        return out[0], dict(zip(names, out[1:1 + len(names)]))

    assert follow(MODEL) == (gr.skip(), {n: gr.skip() for n in names})  # the user's values stay
    ctx.sessions.new_session(c.session_hash, server.model_path, 0)  # a model outside the catalog
    model, values = follow(MODEL)
    assert model == server.model_path and tuple(values[k] for k in keys) == (0.002, 3, 13, 40, 6, 300)
    ctx.sessions.new_session(c.session_hash, MODEL, 0)
    model, values = follow(server.model_path)
    assert model == MODEL and tuple(values[k] for k in keys) == (0.05, 40, 90, 40, 3, 300)
