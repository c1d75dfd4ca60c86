"""A photo offline in the app (issue 24 item 8): with no perceptual weights the session manager's loader gives the
labelled pixel loss; Invert's progress line names it and the photo report says what it means."""
import types

import numpy as np
import pytest
from PIL import Image

import app as draggan_app
from pti import PixelDistance, get_preset
from stylegan2.checkpoints import save_generator
from stylegan2.testing import tiny_generator
from ui.sections import photo


class Progress:
    """Records the progress descriptions a handler reports."""

    def __init__(self):
        self.descs = []

    def __call__(self, value, desc=None, unit=None):
        self.descs.append(desc)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offline-photo")
    model = save_generator(tiny_generator(32, seed=1), folder / "tiny.safetensors")
    picture = folder / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(picture)
    built = draggan_app.build_demo(str(model), "cpu", perceptual_loader=lambda device: PixelDistance(),
                                   pti_presets={"fast": get_preset("fast", w_steps=6, tune_steps=4)})
    yield built.ctx, str(model), str(picture)
    built.demo.close()


def test_invert_offline_names_the_pixel_loss_in_its_progress_and_its_report(offline):
    ctx, model, picture = offline
    request = types.SimpleNamespace(session_hash="offline-photo", client=None)
    progress = Progress()
    view, status, hint, report = photo.invert(ctx, picture, "", "fast", model, "w+", request, progress)
    assert view is not None and "Your photo" in status
    assert "Projecting with the offline pixel loss (no perceptual weights)" in progress.descs, progress.descs
    assert "Tuning with the offline pixel loss (no perceptual weights)" in progress.descs, progress.descs
    assert "Inverted with the offline pixel loss (no perceptual weights): texture may be less faithful" in report
    ctx.sessions.close(request.session_hash)


def test_a_photo_inverted_with_the_perceptual_loss_has_no_such_note(offline):
    from ui.sections.embedding import OFFLINE_LOSS_NOTE, photo_report

    sess = types.SimpleNamespace(photo=types.SimpleNamespace(
        loss="the perceptual loss", projection=types.SimpleNamespace(steps=1, psnr_before=1, psnr_after=2, seconds=1),
        tuning=types.SimpleNamespace(steps=1, psnr_after=3, seconds=1)))
    assert OFFLINE_LOSS_NOTE not in photo_report(sess, [])
    sess.photo.loss = PixelDistance.description
    assert OFFLINE_LOSS_NOTE in photo_report(sess, [])
