"""A non-square model in headless Chromium (issue 22): a tiny StyleGAN-Human-shaped generator (twice as tall as
wide, shown padded to a square) as a catalog entry. Its licence is shown beside it; a handle clicked on the padded
square lands on the image pixel clicked; the drag runs; the exported video has the model's own aspect."""
import re

import pytest

from test_browser import app_tab, export_video, serving, sync_api  # noqa: F401 (skips where test_browser skips)

import app as draggan_app  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402

RES = 32
LICENCE = "Test licence (non-commercial, as its source states)"


@pytest.fixture(scope="module")
def served(tmp_path_factory, extra_catalog):
    model = save_generator(tiny_generator(RES, seed=2, square=False),
                           tmp_path_factory.mktemp("model") / "tiny-human.safetensors")
    extra_catalog({"name": "tiny-human", "label": "Tiny human (test)", "path": str(model), "resolution": RES,
                   "height": RES, "width": RES // 2, "shows": "people", "licence": LICENCE, "source": "tests",
                   "drag_defaults": {"lr": 0.08, "r1": 48, "r2": 96}})
    with serving(draggan_app.build_demo("tiny-human", "cpu")) as where:
        yield where


def test_a_non_square_model_clicks_drags_and_exports_its_own_aspect(served):
    expect = sync_api.expect
    with app_tab(served) as tab:
        page = tab.page
        expect(page.locator("#model_licence")).to_contain_text(LICENCE)
        sess = tab.session()
        assert sess.image().shape[:2] == (RES, RES)        # shown as the padded square
        handle, target = (13, 10), (18, 17)                # image pixels inside the picture's band (x 8..23)
        tab.click(*[(c + 0.5) / RES for c in handle])
        expect(tab.info).to_contain_text("Handle 1 at")
        tab.click(*[(c + 0.5) / RES for c in target])
        expect(tab.info).to_contain_text("Target 1 at")
        assert sess.handles_xy == [list(map(float, handle))] and sess.targets_xy == [list(map(float, target))]

        page.locator("#drag").click()
        expect(tab.info).to_contain_text(re.compile(r"(Reached the targets|Stopped at max steps) after \d+ steps"))
        _, state = export_video(page)
        assert state["error"] is None and state["width"] > 0, state
        assert abs(state["height"] / state["width"] - 2) < 0.1, state   # the model's own 2:1, not the padded square
