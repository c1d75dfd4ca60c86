"""The app in headless Chromium on a StyleGAN3 model: generate, click a handle and a target, drag."""
import re

import numpy as np
import pytest

from test_browser import app_tab, pixels, sync_api  # noqa: F401 (skips this module where test_browser skips)

import app as draggan_app  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402
from stylegan2.testing import tiny_stylegan3  # noqa: E402
from test_app import free_port  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = save_generator(tiny_stylegan3(seed=3), tmp_path_factory.mktemp("model") / "tiny-sg3.safetensors")
    built = draggan_app.build_demo(str(model), "cpu")
    port = free_port()
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", built.ctx.sessions
    built.demo.close()


def test_stylegan3_generates_and_drags_in_chromium(served):
    expect = sync_api.expect
    with app_tab(served) as tab:
        expect(tab.page.locator("#status")).to_contain_text("tiny-sg3.safetensors")
        tab.add_pair((0.3, 0.35), (0.7, 0.6))
        before = tab.image.screenshot()
        tab.page.locator("#drag").click()
        expect(tab.info).to_contain_text(re.compile(r"Step \d+ · mean distance"))  # frames stream in
        expect(tab.info).to_contain_text(re.compile(r"Step ([3-9]|\d\d+) "))
        tab.page.locator("#stop").click()
        expect(tab.info).to_contain_text(re.compile(r"(Stopped|Reached the targets)\W* after \d+ steps"))
        assert np.abs(pixels(tab.image.screenshot()) - pixels(before)).mean() > 0.01
