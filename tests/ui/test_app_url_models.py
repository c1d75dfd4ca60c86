"""The public app opens a catalog model that downloads from a URL (as NVIDIA's StyleGAN3 pickles on NGC), by name."""
import types

import pytest

gradio_client = pytest.importorskip("gradio_client")
import app as draggan_app  # noqa: E402
from huggingface_hub import constants as hf_constants  # noqa: E402
from test_app import free_port, load  # noqa: E402
from test_checkpoints import hf_home  # noqa: E402,F401 (fixture)
from test_url_downloads import online, reference, server  # noqa: E402,F401 (fixtures: the loopback server)

from stylegan2 import checkpoints  # noqa: E402


@pytest.fixture
def public_app(online):
    built = draggan_app.build_demo("toyfaces-64", "cpu", public=True)
    port = free_port()
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}/", server=online)
    built.demo.close()


def test_the_public_app_downloads_a_url_model_once_and_says_offline_in_one_line(public_app, monkeypatch):
    c = gradio_client.Client(public_app.url, verbose=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        c.predict(model="url-sg3", seed=1, api_name="/generate")
    message = str(err.value)
    assert "HF_HUB_OFFLINE is set (offline)" in message and "--model PATH" in message and "\n" not in message
    assert "/tmp" not in message and "hf_home" not in message  # the server's folders are not a visitor's business
    assert public_app.server.requests == []  # offline: no connection
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    _, status, _ = c.predict(model="url-sg3", seed=1, api_name="/generate")
    assert "⚠️" not in status and load(c.predict(api_name="/save_image")).shape == (64, 64, 3)
    checkpoints.clear_memory_cache()
    c.predict(model="url-sg3", seed=2, api_name="/generate")
    assert public_app.server.requests == [("/sg3.pkl", None)]  # downloaded once, then read from the cache
