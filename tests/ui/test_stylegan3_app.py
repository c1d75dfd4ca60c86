"""The app over HTTP on a small StyleGAN3 generator (our safetensors): generate, drag, undo, video."""
import types

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402
from stylegan2.testing import tiny_stylegan3  # noqa: E402
from test_app import all_outputs, free_port, load  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = save_generator(tiny_stylegan3(seed=3), tmp_path_factory.mktemp("model") / "tiny-sg3.safetensors")
    built = draggan_app.build_demo(str(model), "cpu", public=False)
    port = free_port()
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", built=built)
    built.demo.close()


def test_app_generates_and_drags_a_stylegan3_model(server):
    c = gradio_client.Client(server.url, verbose=False)
    _, status, _ = c.predict(seed=1, api_name="/generate")
    assert "tiny-sg3.safetensors" in status
    plain = load(c.predict(api_name="/save_image"))
    assert plain.shape == (32, 32, 3)
    job = c.submit(handles="[[8, 10]]", targets="[[20, 14]]", max_steps=20, frame_rate=0, api_name="/drag",
                   lr=0.05, r1=48, r2=96)
    frames = [o[2] for o in all_outputs(job)]
    assert len(frames) >= 2 and frames[-1]["done"] and frames[-1]["handles"] != [[8, 10]]
    dragged = load(c.predict(api_name="/save_image"))
    assert np.abs(dragged.astype(int) - plain).mean() > 0.5
    _, text = c.predict(api_name="/undo")
    assert text == "Undone." and np.array_equal(load(c.predict(api_name="/save_image")), plain)
    assert c.predict(video_format="gif", overlay=True, api_name="/export_video").endswith(".gif")
