"""Video export: H.264 / VP9 that Chromium decodes, small GIFs, and a bounded frame recorder."""
import functools
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from draggan.video import FrameRecorder, VideoError, even_indices, write_video

av = pytest.importorskip("av", reason="PyAV (requirements.txt) writes .mp4 and .webm")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def moving_square(n: int, side: int = 64, step: int = 1) -> list[np.ndarray]:
    """n frames of a white square crossing a two-tone background, one pixel per `step` frames."""
    frames = []
    for i in range(n):
        img = np.zeros((side, side, 3), np.uint8)
        img[:, : side // 2] = (200, 40, 40)
        img[:, side // 2:] = (40, 60, 200)
        x = (i // step) % (side - 10)
        img[20:30, x:x + 10] = 255
        frames.append(img)
    return frames


def read_back(path: Path) -> tuple[str, str, int, int, list[np.ndarray]]:
    """(codec name, pixel format, width, height, decoded RGB frames) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height, frames


def test_mp4_is_h264_yuv420p_with_even_size_and_every_frame(tmp_path):
    frames = [f[:63, :63] for f in moving_square(20)]  # odd size on purpose
    path = write_video(frames, tmp_path / "drag.mp4", fps=15)
    codec, pix_fmt, w, h, decoded = read_back(path)
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert w % 2 == 0 and h % 2 == 0 and min(w, h) >= 256  # small frames enlarged for the browser
    assert len(decoded) == 20
    # The content survives: the square's white is where it was drawn (scaled 5x: 63 -> 315 -> 316 even).
    assert decoded[0][25 * 5, 5 * 5].min() > 200
    # The index (moov) comes before the data (mdat), so a browser can start playing while loading.
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_webm_is_vp9(tmp_path):
    codec, pix_fmt, w, h, decoded = read_back(write_video(moving_square(12), tmp_path / "drag.webm"))
    assert codec in ("vp9", "libvpx-vp9") and pix_fmt == "yuv420p" and len(decoded) == 12 and w == 256


def test_gif_caps_frames_drops_repeats_and_bounds_size(tmp_path):
    frames = moving_square(300, step=2)  # every frame repeated once: 150 distinct
    path = write_video(frames, tmp_path / "drag.gif", fps=15)
    with Image.open(path) as gif:
        n, size = gif.n_frames, gif.size
        durations = []
        for i in range(n):
            gif.seek(i)
            durations.append(gif.info["duration"])
            if i == n - 1:
                last = np.array(gif.convert("RGB"))
    assert n <= 100
    assert 256 <= max(size) <= 384  # 64 px enlarged by a whole number, to at most 384
    assert durations[-1] >= 1000     # the end is held before the loop restarts
    # the last frame is the drag's last frame (subsampling keeps both ends)
    expected = np.array(Image.fromarray(frames[-1]).resize(size, Image.NEAREST))
    assert np.abs(last.astype(int) - expected).mean() < 3
    # repeats are dropped before subsampling: 30 frames of which 15 distinct -> 15 frames
    with Image.open(write_video(moving_square(30, step=2), tmp_path / "short.gif")) as gif:
        assert gif.n_frames == 15


def test_large_frames_are_scaled_down_in_gifs(tmp_path):
    frames = [np.kron(f, np.ones((16, 16, 1), np.uint8)) for f in moving_square(3)]  # 1024 px
    with Image.open(write_video(frames, tmp_path / "big.gif")) as gif:
        assert gif.size == (384, 384)


def test_even_indices_keep_both_ends():
    assert even_indices(300, 100)[0] == 0 and even_indices(300, 100)[-1] == 299
    assert len(even_indices(300, 100)) == 100 and even_indices(5, 10) == [0, 1, 2, 3, 4]


def test_bad_requests_say_what_to_do(tmp_path):
    with pytest.raises(VideoError, match=r"\.mp4, \.webm or \.gif"):
        write_video(moving_square(2), tmp_path / "drag.avi")
    with pytest.raises(VideoError, match="run a drag first"):
        write_video([], tmp_path / "drag.mp4")
    with pytest.raises(VideoError, match="run a drag first"):
        FrameRecorder().export(tmp_path / "drag.gif")


def barcode(i: int) -> np.ndarray:
    """A 64-px frame showing the number i in 12 black/white 5-px blocks (survives JPEG)."""
    img = np.zeros((64, 64, 3), np.uint8)
    for bit in range(12):
        if i >> bit & 1:
            img[5:10, 5 * bit:5 * bit + 5] = 255
    return img


def read_barcode(img: np.ndarray) -> int:
    return sum(1 << bit for bit in range(12) if img[7, 5 * bit + 2].mean() > 128)


def test_recorder_keeps_frames_bounded_and_evenly_spread():
    rec = FrameRecorder(max_frames=50)
    for i in range(2000):
        rec.add(barcode(i), [[10.0, 10.0]], [[60.0, 10.0]])
        assert len(rec) <= 50
    kept = rec.frames(overlay=False)
    steps = [read_barcode(f) for f in kept]
    assert len(steps) >= 25
    # the first and the last frame are kept, the rest evenly spaced
    assert steps[0] == 0 and steps[-1] == 1999
    gaps = np.diff(steps[:-1])
    assert gaps.min() == gaps.max() > 0
    # frames come back as they were recorded (JPEG, near-lossless at this quality)
    assert np.abs(kept[1].astype(int) - barcode(steps[1])).mean() < 3


def test_recorder_overlay_and_export(tmp_path):
    rec = FrameRecorder()
    for i, f in enumerate(moving_square(8)):
        rec.add(f, [[10 + i, 25]], [[50, 25]])
    plain, marked = rec.frames(overlay=False), rec.frames(overlay=True)
    assert len(rec) == len(plain) == len(marked) == 8
    assert plain[0].shape == (64, 64, 3) and marked[0].shape == (512, 512, 3)
    assert not np.array_equal(marked[0], np.kron(plain[0], np.ones((8, 8, 1), np.uint8)))
    codec, _, w, _, decoded = read_back(rec.export(tmp_path / "drag.mp4"))
    assert codec == "h264" and w == 256 and len(decoded) == 8
    with Image.open(rec.export(tmp_path / "drag.gif", overlay=False)) as gif:
        assert gif.size == (384, 384) and gif.n_frames == 8
    rec.clear()
    assert len(rec) == 0


# ----------------------------------------------------------------------------
# A real browser decodes what we write.

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Videos written into a folder served over HTTP on 127.0.0.1 (a page per video)."""
    root = tmp_path_factory.mktemp("site")
    frames = moving_square(45)
    for name in ("drag.mp4", "drag.webm"):
        write_video(frames, root / name, fps=15)
        (root / f"{name}.html").write_text(
            f'<!doctype html><video id="v" src="{name}" muted playsinline preload="auto"></video>')
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


PLAY_AND_WATCH = """async () => {
  const v = document.getElementById('v');
  // Wait for loadeddata, an error (perhaps already raised before this ran) or 10 s.
  await new Promise(ok => {
    if (v.readyState >= 2 || v.error) return ok();
    v.addEventListener('loadeddata', ok, {once: true});
    v.addEventListener('error', ok, {once: true});
    setTimeout(ok, 10000);
  });
  if (v.error || v.readyState < 2)
    return {error: v.error ? v.error.code + ' ' + v.error.message : 'no data after 10 s', width: v.videoWidth};
  const frames = [];
  await new Promise(ok => {
    const more = (now, meta) => { frames.push(meta.mediaTime); if (frames.length < 5) v.requestVideoFrameCallback(more); else ok(); };
    v.requestVideoFrameCallback(more);
    v.play();
    setTimeout(ok, 8000);
  });
  return {error: v.error ? v.error.code : null, width: v.videoWidth, height: v.videoHeight,
          duration: v.duration, time: v.currentTime, frames: frames};
}"""


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
@pytest.mark.parametrize("name", ["drag.mp4", "drag.webm"])
def test_chromium_plays_the_video(served, name):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{served}/{name}.html")
            result = page.evaluate(PLAY_AND_WATCH)
        finally:
            browser.close()
    assert result["error"] is None
    assert (result["width"], result["height"]) == (256, 256)
    assert abs(result["duration"] - 3.0) < 0.2  # 45 frames at 15 fps
    # frames were decoded and presented while playing: the clock moved on
    assert len(result["frames"]) >= 2 and max(result["frames"]) > 0


# -- the whole drag, rendered at export ----------------------------------------------------

def test_the_video_shows_every_step_of_the_drag_whatever_was_streamed(tmp_path):
    """A 10-step drag whose frames were mostly not shown (frame_every 50) still exports all its steps, at a
    steady rate, lasting more than a flash, its last frame the drag's result."""
    from draggan import DragConfig, Editor
    from stylegan2.testing import tiny_generator

    s = Editor.from_seed(tiny_generator(64, 32), 2)
    frames = list(s.drag([[10, 10]], [[60, 60]], DragConfig(max_steps=10, frame_every=50, lr=0.05, r1=24, r2=64,
                                                             feature_block=4)))
    assert [f.step for f in frames] == [0, 10]          # two frames streamed
    done = []
    path = s.export_video(tmp_path / "drag.mp4", overlay=False, progress=lambda i, n: done.append((i, n)))
    assert done[-1] == (11, 11)                          # steps 0-9 and the final latent
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate)
    assert fps == 6.0                                    # steady_fps(11): 11 frames in about 3 s, at least 6/s
    assert len(decoded) == 11 + 6                        # the last frame held one second
    assert len(decoded) / fps >= 2.5
    last = np.kron(s.image(), np.ones((4, 4, 1), np.uint8))  # 64 px enlarged 4x to >= 256
    assert np.abs(decoded[-1].astype(int) - last.astype(int)).mean() < 4
    first = np.kron(frames[0].image, np.ones((4, 4, 1), np.uint8))
    assert np.abs(decoded[0].astype(int) - first.astype(int)).mean() < 4


def test_a_refused_export_name_renders_nothing(tmp_path):
    from draggan import DragConfig, Editor
    from draggan.video import VideoError
    from stylegan2.testing import tiny_generator

    s = Editor.from_seed(tiny_generator(64, 32), 2)
    list(s.drag([[10, 10]], [[60, 60]], DragConfig(max_steps=3)))
    rendered = []
    with pytest.raises(VideoError, match="mp4, .webm or .gif"):
        s.export_video(tmp_path / "drag.avi", progress=lambda i, n: rendered.append(i))
    assert not rendered


def test_a_non_square_models_video_has_its_own_aspect(tmp_path):
    """StyleGAN-Human-shaped generator (pictures half as wide as tall, shown padded): the video is the picture."""
    from draggan import DragConfig, Editor
    from stylegan2.testing import tiny_generator

    s = Editor.from_seed(tiny_generator(32, seed=0, square=False), 2)
    list(s.drag([[14, 10]], [[18, 20]], DragConfig(max_steps=3, lr=0.05, r1=24, r2=64, feature_block=4)))
    path = s.export_video(tmp_path / "person.mp4", overlay=False)
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0])).to_ndarray(format="rgb24")
    assert frame.shape[0] == 2 * frame.shape[1]
    picture = np.kron(s.image()[:, 8:24], np.ones((8, 8, 1), np.uint8))     # 32x16 enlarged 8x to >= 256
    last = list(av.open(str(path)).decode(video=0))[-1].to_ndarray(format="rgb24")
    assert np.abs(last.astype(int) - picture.astype(int)).mean() < 4
