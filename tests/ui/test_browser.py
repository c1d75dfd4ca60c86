"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright.

Each test opens the app in its own tab (app_tab), does what a person would (click points, drag, stop, paint
a mask, export a video, invert a photo, use a phone), and closes the tab, which frees its session. The
screenshots go to a temporary folder, or, with DRAGGAN_SCREENSHOT=docs/screenshot.png and
DRAGGAN_SCREENSHOT_PHONE=docs/screenshot-phone.png, to the README's pictures. Skipped where Chromium or Playwright is
missing; CI installs both.
"""
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

import app as draggan_app  # noqa: E402
from pti import PerceptualDistance, VGG16Features, get_preset  # noqa: E402
from stylegan2.testing import tiny_generator  # noqa: E402
from stylegan2.checkpoints import save_generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOYFACES = ROOT / "models" / "toyfaces-64.safetensors"  # our small model, nicer to look at when present
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = "toyfaces-64" if TOYFACES.is_file() else str(save_generator(
        tiny_generator(32, seed=0), tmp_path_factory.mktemp("model") / "tiny.safetensors"))
    with torch.random.fork_rng(devices=[]):  # a thin random VGG: Invert runs offline, in seconds
        torch.manual_seed(0)
        perceptual = PerceptualDistance(VGG16Features(width=1 / 16))
    built = draggan_app.build_demo(model, "cpu", perceptual_loader=lambda device: perceptual,
                                  pti_presets={"fast": get_preset("fast", w_steps=60, tune_steps=40)})
    with serving(built) as where:
        yield where


def contrast(css_a: str, css_b: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours (alpha ignored)."""
    def luminance(css: str) -> float:
        c = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        c = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
    hi, lo = sorted((luminance(css_a), luminance(css_b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def save_screenshot(png: bytes, target: Path) -> None:
    """A screenshot as a 256-colour PNG (small enough for the README)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    shot.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)


@dataclasses.dataclass
class Tab:
    """The app's page in a headless Chromium, its first image shown."""
    page: Any
    sessions: Any
    failed_requests: list

    @property
    def image(self):
        return self.page.locator("#view img")

    @property
    def info(self):
        return self.page.locator("#info")

    def click(self, fx: float, fy: float) -> None:
        """Click the image at a fraction of its size, once it is decoded: Gradio drops clicks on an image still
        loading (its size is unknown), as a person's would be."""
        self.image.evaluate("img => img.decode()")
        box = self.image.bounding_box()
        self.page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])

    def add_pair(self, handle: tuple[float, float], target: tuple[float, float]) -> None:
        self.click(*handle)
        sync_api.expect(self.info).to_contain_text("Handle 1 at")
        self.click(*target)
        sync_api.expect(self.info).to_contain_text("Target 1 at")

    def session(self):
        """The only session on the server: this tab's."""
        with self.sessions._lock:
            assert len(self.sessions._sessions) == 1
            return next(iter(self.sessions._sessions.values()))


def export_video(page) -> tuple[Any, dict]:
    """Open Save, press Export drag as video, and wait until the page's video is loaded (or failed): the video
    element and its state (ready, width, height, error, duration)."""
    page.get_by_text("Save", exact=True).click()   # the accordion
    page.locator("#export_video").click()
    video = page.locator("#drag_video video")
    sync_api.expect(video).to_be_attached()
    assert video.get_attribute("src")
    page.wait_for_function("v => v.readyState >= 2 || v.error !== null", arg=video.element_handle())
    return video, video.evaluate("v => ({ready: v.readyState, width: v.videoWidth, height: v.videoHeight, "
                                 "error: v.error && v.error.code, duration: v.duration})")


@contextlib.contextmanager
def serving(built):
    """A built app served on a free loopback port: (its URL, its sessions), as app_tab takes them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    draggan_app.launch(built, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", built.ctx.sessions
    finally:
        built.demo.close()


@contextlib.contextmanager
def app_tab(served, **context):
    """Open the app in a headless Chromium (a desktop viewport unless `context` says otherwise) and wait for
    its first image. The page's console and errors go to stdout, which pytest shows for a failed test. When
    the test is done: none of the tab's requests failed (a file served while it was being rewritten once
    left the first image blank: ERR_CONTENT_LENGTH_MISMATCH; a request the page cancels itself, as a
    superseded frame's, is fine), and closing the tab frees its session, so the next test starts with none."""
    url, sessions = served
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(**(context or {"viewport": {"width": 1280, "height": 860}}))
            page.set_default_timeout(TIMEOUT_MS)
            tab = Tab(page, sessions, [])
            page.on("console", lambda m: print(f"[console {m.type}] {m.text}"[:500]))
            page.on("pageerror", lambda e: print(f"[pageerror] {e}"[:500]))
            page.on("requestfailed", lambda r: tab.failed_requests.append(f"{r.url[:120]} {r.failure}"))
            page.goto(url)
            sync_api.expect(tab.image).to_be_visible()
            sync_api.expect(page.locator("#status")).to_contain_text("on cpu")
            yield tab
            failed = [f for f in tab.failed_requests if "ERR_ABORTED" not in f]
            assert len(sessions) == 1
            page.close()
            assert not failed, failed
            deadline = time.monotonic() + 30
            while len(sessions) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(sessions) == 0
        finally:
            browser.close()


def test_generate_click_points_drag_and_stop_in_chromium(served, tmp_path):
    expect = sync_api.expect
    with app_tab(served) as tab:
        image, info, page = tab.image, tab.info, tab.page
        # A checkbox (Nearest) has an outline you can see, against its own field and a white panel.
        border, field = page.locator("input[type=checkbox]").first.evaluate(
            "e => [getComputedStyle(e).borderColor, getComputedStyle(e).backgroundColor]")
        assert min(contrast(border, field), contrast(border, "rgb(255, 255, 255)")) >= 3, (border, field)
        tab.add_pair((0.35, 0.4), (0.65, 0.6))
        with_points = image.screenshot()
        src = image.get_attribute("src")

        # Which images the view shows during the drag: frames come inline (data URLs), the last as a file.
        page.evaluate("""() => { window.viewSrcs = []; const view = document.querySelector('#view');
            new MutationObserver(() => { const img = view.querySelector('img');
                if (img && img.src !== window.viewSrcs.at(-1)) window.viewSrcs.push(img.src); })
            .observe(view, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']}); }""")
        page.locator("#drag").click()
        expect(info).to_contain_text(re.compile(r"Step \d+ · mean distance"))  # frames stream in
        expect(info).to_contain_text(re.compile(r"Step ([3-9]|\d\d+) "))
        page.locator("#stop").click()
        expect(info).to_contain_text(re.compile(r"Stopped after \d+ steps"))
        assert image.get_attribute("src") != src
        shown = page.evaluate("() => window.viewSrcs")
        assert any(u.startswith("data:image/jpeg;base64,") for u in shown[:-1]), [u[:40] for u in shown]
        assert "/file=" in shown[-1] and image.evaluate("img => img.decode().then(() => img.naturalWidth)") == 256
        assert np.abs(pixels(image.screenshot()) - pixels(with_points)).mean() > 0.01

        target = Path(os.environ.get("DRAGGAN_SCREENSHOT") or tmp_path / "screenshot.png")
        save_screenshot(page.screenshot(full_page=True), target)
        assert target.stat().st_size < 300_000


def test_phone_layout_and_bad_input_keeps_the_image(served, tmp_path):
    """At 390x844 the image and Drag are in the first screen; a bad seed leaves the image as it was and
    says which field is wrong."""
    phone = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    with app_tab(served, **phone) as tab:
        image, page = tab.image, tab.page
        image.evaluate("img => img.decode()")
        for element in (image, page.locator("#drag"), page.locator("#stop")):
            box = element.bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 844, box
        save_screenshot(page.screenshot(), Path(os.environ.get("DRAGGAN_SCREENSHOT_PHONE") or tmp_path / "phone.png"))

        before_src = image.get_attribute("src")
        before = pixels(image.screenshot())
        seed = page.locator("input[type=number]").first
        seed.fill("-5")
        page.locator("#generate").click()
        sync_api.expect(tab.info).to_contain_text("Seed must be a whole number")
        assert image.get_attribute("src") == before_src          # the image was not replaced
        assert np.abs(pixels(image.screenshot()) - before).mean() < 1


def test_clicks_right_after_clear_points_are_kept(served):
    """Add a pair, press Clear points, and at once click a handle and a target: the session has exactly
    that one pair, handle first, and the hint says so, even when the three requests reach the server in the
    opposite order (held here until all three are sent, then let through last first, each once the server has
    taken the one before: what two connections can do to a quick person's clicks)."""
    with app_tab(served) as tab:
        page = tab.page
        tab.add_pair((0.3, 0.3), (0.6, 0.6))
        sess = tab.session()
        old_handles = list(sess.handles_xy)
        box = tab.image.bounding_box()
        held = []

        def last_first(route):
            held.append(route)
            if len(held) == 3:
                for r in reversed(held):
                    r.fulfill(response=r.fetch())   # the join's answer: the server has queued this event
        page.route("**/queue/join*", last_first)
        page.locator("#clear_points").click()
        for fx, fy in ((0.25, 0.7), (0.75, 0.2)):  # at once, not waiting for any answer, as a quick person
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        deadline = time.monotonic() + 60      # liveness only: the answers, however loaded the machine
        while not (sess.targets_xy and sess.handles_xy != old_handles) and time.monotonic() < deadline:
            page.wait_for_timeout(50)         # (the held requests are let through while Playwright waits)
        events = [json.loads(r.request.post_data).get("event_data") for r in held]
        assert len(events) == 3 and [bool(e and e.get("index")) for e in events] == [False, True, True], events
        assert len(sess.handles_xy) == 1 and len(sess.targets_xy) == 1, (sess.handles_xy, sess.targets_xy)
        hx, hy = sess.handles_xy[0]
        tx, ty = sess.targets_xy[0]
        assert hx < tx and hy > ty, (sess.handles_xy, sess.targets_xy)  # the two new clicks, in order
        sync_api.expect(tab.info).to_contain_text(f"Target 1 at ({tx:g}, {ty:g})")


def test_the_exported_video_plays_in_the_app(served):
    """After a short drag, Export drag as video (MP4) shows the video in the page, and Chromium decodes and
    plays it there: it has a size, no error, and its time advances."""
    expect = sync_api.expect
    with app_tab(served) as tab:
        page = tab.page
        tab.add_pair((0.35, 0.4), (0.65, 0.6))
        page.locator("#drag").click()
        expect(tab.info).to_contain_text(re.compile(r"Step ([3-9]|\d\d+) "))
        page.locator("#stop").click()
        expect(tab.info).to_contain_text(re.compile(r"Stopped after \d+ steps"))

        video, state = export_video(page)
        assert state["error"] is None and state["ready"] >= 2 and state["width"] >= 256, state
        video.evaluate("v => { v.muted = true; return v.play(); }")
        page.wait_for_function("v => v.currentTime > 0.05 && v.error === null", arg=video.element_handle())


def test_invert_shows_its_progress_beside_the_button(served, tmp_path):
    """On a desktop the Invert button sits far below the image, whose progress is out of view: the line under
    the button shows the inversion's progress bar where the person is (really drawn there, not clipped), and
    the page does not move."""
    expect = sync_api.expect
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)).save(photo)
    with app_tab(served) as tab:
        page, image = tab.page, tab.image
        page.get_by_text("Real photo", exact=True).click()
        page.locator("input[type=file]").first.set_input_files(str(photo))
        invert = page.locator("#invert")
        expect(invert).to_be_enabled()
        invert.scroll_into_view_if_needed()
        at = (page.evaluate("window.scrollY"), invert.bounding_box()["y"])
        invert.click()
        bar = page.locator("#photo_report [role=progressbar]")
        expect(bar).to_be_visible()
        box = bar.bounding_box()
        assert 0 <= box["y"] and box["y"] + box["height"] <= 860, box            # in the viewport
        assert 0 < box["y"] - at[1] < 150, (box, at)                              # just under Invert
        hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('[role=progressbar]') !== null",
                            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert hit, "the progress bar is not drawn where it is (clipped or covered)"
        assert image.bounding_box()["y"] + image.bounding_box()["height"] < 0    # the image is out of view
        expect(page.locator("#photo_report")).to_contain_text("Projected in")
        assert (page.evaluate("window.scrollY"), invert.bounding_box()["y"]) == at  # the page did not move
        expect(page.locator("#status")).to_contain_text("Your photo")


def test_a_painted_mask_drag_reaches_its_target_and_keeps_the_rest(served):
    """On the default model: paint an editable area in the Mask tab, then drag the left pupil 8 px inside it.
    The drag reaches its target (the toy detector finds that the pupil moved most of the way), and the
    unpainted area stays exactly as it was (the hold, on by default: its box is ticked in the Mask tab)."""
    if not TOYFACES.is_file():
        pytest.skip("needs the toy-faces model (models/toyfaces-64.safetensors)")
    from draggan.experiments.detectors import get_detector

    with app_tab(served) as tab:
        page = tab.page
        sess = tab.session()
        before = sess.image().astype(int)
        res = sess.resolution
        px, py = np.round(get_detector("toy").detect(sess.image(), 5)[0])
        tx, ty = px + 8, py

        page.get_by_role("tab", name="Mask").click()
        sync_api.expect(page.get_by_label("Keep the unpainted pixels")).to_be_checked()
        canvas = page.locator("canvas").first
        sync_api.expect(canvas).to_be_visible()
        deadline = time.monotonic() + 60
        while sess.editable is None and time.monotonic() < deadline:  # the editor may still be loading
            box = canvas.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            for dy in range(-90, 91, 12):  # strokes that fill a box over the middle of the face
                page.mouse.move(cx - 120, cy + dy)
                page.mouse.down()
                page.mouse.move(cx + 120, cy + dy, steps=8)
                page.mouse.up()
            time.sleep(1.0)
        editable = sess.editable
        assert editable is not None and editable[int(py), int(px)] and editable[int(ty), int(tx)]
        assert 0.1 < editable.mean() < 0.8  # a real mask: some of the image stays fixed

        page.get_by_role("tab", name="Points").click()
        tab.add_pair(((px + 0.5) / res, (py + 0.5) / res), ((tx + 0.5) / res, (ty + 0.5) / res))
        page.locator("#drag").click()
        sync_api.expect(tab.info).to_contain_text("Reached the targets")

        after = sess.image().astype(int)
        found = get_detector("toy").detect(sess.image(), 5)[0]
        # Tracking said so, and the pupil itself moved most of the way (the detector, not the tracker).
        assert found[0] - px > 0.6 * (tx - px) and np.hypot(found[0] - tx, found[1] - ty) < 4, (found, (tx, ty))
        change = np.abs(after - before).mean(axis=2)
        editable = sess.editable  # as the drag had it (the last strokes may have landed after the first read)
        assert change[~editable].max() == 0 and change[editable].mean() > 0, change[~editable].max()
        page.get_by_role("tab", name="Mask").click()   # the Mask tab after the drag, for a person to look at
        sync_api.expect(page.get_by_label("Keep the unpainted pixels")).to_be_visible()
        shot = os.environ.get("DRAGGAN_SCREENSHOT_MASK")
        if shot:
            save_screenshot(page.screenshot(full_page=True), Path(shot))


def test_the_drags_result_line_stays_after_the_mask_tab_was_opened(served):
    """Once the Mask tab had been opened, the drag's result line ("Reached the targets after ...") was replaced
    within a second by the points' hint, and "Undone." alike: after the app refreshes the mask editor, the
    editor reports its content, and that answer rewrote the line. Every text the line shows is recorded; once
    the editor's report has reached the server (a hook on the session) and been answered, the line still says
    what the drag (and then Undo) did."""
    expect = sync_api.expect
    with app_tab(served) as tab:
        page, info = tab.page, tab.info
        sess = tab.session()
        reports = []
        set_mask = sess.set_mask
        sess.set_mask = lambda editable: (set_mask(editable), reports.append(len(reports)))[0]
        page.get_by_role("tab", name="Mask").click()
        expect(page.locator("canvas").first).to_be_visible()
        page.get_by_role("tab", name="Points").click()
        page.evaluate("""() => { window.infoTexts = []; const info = document.querySelector('#info');
            new MutationObserver(() => window.infoTexts.push(info.innerText.trim()))
            .observe(info, {subtree: true, childList: true, characterData: true}); }""")
        tab.add_pair((0.35, 0.4), (0.45, 0.4))

        def settled(action, text: str) -> str:
            """Do `action`, wait for `text`, then for the editor's report and its answer; the line's last text."""
            seen = len(reports)
            action()
            expect(info).to_contain_text(text)
            deadline = time.monotonic() + 60
            while len(reports) == seen:          # the editor reported its refreshed content
                assert time.monotonic() < deadline, "the mask editor never reported after the refresh"
                time.sleep(0.05)
            time.sleep(1.0)                      # its answer arrives (localhost)
            return page.evaluate("() => window.infoTexts.at(-1)")

        last = settled(lambda: page.locator("#drag").click(), " after ")
        assert re.match(r"(Reached the targets|Stopped at max steps) after \d+ steps · mean distance", last), last
        last = settled(lambda: page.get_by_text("Undo drag", exact=True).click(), "Undone.")
        assert last == "Undone.", last
