"""Issue 24, round two, in headless Chromium: what the result line says when Auto stops short (and Refine), while a
drag waits for the device, and the smaller things a newcomer tripped over."""
import dataclasses
import re
import threading
import time

import pytest

from test_browser import app_tab, served, sync_api  # noqa: F401 (skips this module where test_browser skips)

from draggan.methods import METHODS, MethodSpec, register_method, unregister_method  # noqa: E402

expect = sync_api.expect


@pytest.fixture
def stops_short():
    """A method offered in the app that, like Auto on a hard drag, ends with reason 'short' after two steps;
    records which methods the drags ran."""
    ran = []
    real = METHODS["draggan"].run

    def run(job):
        ran.append("short-test")
        frames = list(real(dataclasses.replace(job, config=dataclasses.replace(job.config,
                                                                                                 max_steps=2))))
        yield from frames[:-1]
        yield dataclasses.replace(frames[-1], reason="short")

    def draggan(job):
        ran.append("draggan")
        yield from real(job)

    register_method(MethodSpec("short-test", "Stops short (test)", run, in_app=True))
    METHODS["draggan"] = dataclasses.replace(METHODS["draggan"], run=draggan)
    try:
        yield ran
    finally:
        METHODS["draggan"] = dataclasses.replace(METHODS["draggan"], run=real)
        unregister_method("short-test")


def test_a_prediction_that_stops_short_says_so_and_refine_continues_with_the_optimizer(served, stops_short):
    with app_tab(served) as tab:
        page, info = tab.page, tab.info
        refine = page.locator("#refine")
        expect(refine).to_be_hidden()
        page.get_by_text("Stops short (test)").click()
        tab.add_pair((0.3, 0.4), (0.7, 0.4))
        page.locator("#drag").click()
        expect(info).to_contain_text(re.compile(r"Predicted, but a handle stopped \d+\.\d px short: press Refine "
                                                r"to continue with the optimizer"))
        expect(refine).to_be_visible()
        sess = tab.session()
        handles_after_auto = [list(h) for h in sess.handles_xy]
        refine.click()
        expect(info).to_contain_text(re.compile(r"(Reached the targets|Stopped at max steps|Stopped) after \d+ steps"))
        expect(refine).to_be_hidden()
        assert stops_short == ["short-test", "draggan"], stops_short   # one click: the optimizer, once
        assert sess.handles_xy != handles_after_auto                    # ...from where Auto left the handles


def test_a_drag_waiting_for_the_device_says_its_place_and_keeps_the_image(served):
    """While the device is held (here by a test that takes the session's only device slot), the line says
    "Waiting for the device: 1st in line", the image is untouched; once the slot is free the drag runs."""
    with app_tab(served) as tab:
        page, info = tab.page, tab.info
        sess = tab.session()
        tab.add_pair((0.35, 0.4), (0.45, 0.4))
        src = tab.image.get_attribute("src")
        holder = threading.Event()
        sess.slots.join(holder)
        assert sess.slots.take(holder)
        try:
            page.locator("#drag").click()
            expect(info).to_contain_text(re.compile(r"Waiting for the device: 1st in line"))
            time.sleep(1.5)  # more waiting reports arrive; the image stays as it was
            assert tab.image.get_attribute("src") == src
            assert "Waiting for the device" in info.inner_text()
        finally:
            sess.slots.release(holder)
        expect(info).to_contain_text(re.compile(r"(Reached the targets|Stopped at max steps) after \d+ steps"))


def test_smaller_things_a_newcomer_tripped_over(served):
    """A model that cannot load (offline) puts the Model choice back on the model shown; an empty seed says what
    to type; Export with no drag says so on the page, beside the button; 68 landmarks with the toy detector is
    answered in the page's words (it said "pick --points from those or another --detector" with a Python list)."""
    with app_tab(served) as tab:
        page, info = tab.page, tab.info
        model = page.get_by_label("Model")
        shown = model.input_value()
        model.fill("not-a-model-anywhere.safetensors")
        model.press("Enter")
        page.locator("#generate").click()
        expect(info).to_contain_text("⚠️")
        expect(model).to_have_value(shown)

        seed = page.locator("input[type=number]").first
        seed.fill("")
        page.locator("#generate").click()
        expect(info).to_contain_text("Seed is empty: type a whole number from 0 to")
        assert "None" not in info.inner_text()

        page.get_by_text("Save", exact=True).click()   # the accordion
        page.locator("#export_video").click()
        expect(page.locator("#save_note")).to_contain_text("No drag to export yet")

        page.get_by_role("tab", name="Experiment").click()   # 68 landmarks with the toy detector: the page's words
        page.get_by_label("68").check()
        page.locator("#exp_test").click()
        line = page.locator("p", has_text="The toy-faces detector finds 1 or 5 landmarks, not 68")
        expect(line).to_be_visible()
        assert "--" not in line.inner_text() and "[" not in line.inner_text()


def test_wait_for_the_drag_stays_in_the_line_while_the_drag_goes_on(served):
    """Undo pressed during a drag is refused ("Wait for the drag to finish"); the drag's next frames keep that
    line instead of overwriting it, until the drag ends."""
    from gates import StepGate

    with app_tab(served) as tab:
        page, info = tab.page, tab.info
        sess = tab.session()
        gate = sess.runner = StepGate(sess.runner, at=1)
        tab.add_pair((0.35, 0.4), (0.6, 0.4))
        page.evaluate("""() => { window.infoTexts = []; const info = document.querySelector('#info');
            new MutationObserver(() => window.infoTexts.push(info.innerText.trim()))
            .observe(info, {subtree: true, childList: true, characterData: true}); }""")
        page.locator("#drag").click()
        assert gate.paused.wait(60)
        page.get_by_text("Undo drag", exact=True).click()
        expect(info).to_contain_text("Wait for the drag to finish")
        gate.resume.set()
        expect(info).to_contain_text(re.compile(r"(Reached the targets|Stopped at max steps) after \d+ steps"))
        texts = page.evaluate("() => window.infoTexts")
        later = texts[next(i for i, t in enumerate(texts) if "Wait for the drag" in t) + 1:]
        steps = [t for t in later if t.startswith("Step ")]
        assert steps and all("Wait for the drag to finish" in t for t in steps), texts


def test_on_a_phone_the_mask_editors_label_is_not_covered(served):
    """At 390x844 the Mask tab's instruction is drawn where it is: nothing (the editor's toolbar) lies over it."""
    phone = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    with app_tab(served, **phone) as tab:
        page = tab.page
        page.get_by_role("tab", name="Mask").click()
        expect(page.locator("canvas").first).to_be_visible()
        label = page.get_by_text("Paint the area the drag may change").first
        expect(label).to_be_visible()
        box = label.bounding_box()
        covered = page.evaluate("""([el, box]) => [0.05, 0.25, 0.5, 0.75, 0.95].filter(f => {
                const hit = document.elementFromPoint(box.x + f * box.width, box.y + box.height / 2);
                return !(hit && (el.contains(hit) || hit.contains(el))); })""", [label.element_handle(), box])
        assert not covered, (box, covered)


def test_an_export_waiting_its_turn_says_its_place_beside_the_button(served):
    """While another export holds the export slot, pressing Export says beside the button where this one stands
    ("Waiting for the device: 1st in line"), as a waiting drag's line does; once the slot is free the video comes
    and plays in the page, and the line is cleared."""
    with app_tab(served) as tab:
        page = tab.page
        tab.add_pair((0.35, 0.4), (0.65, 0.6))
        page.locator("#drag").click()
        expect(tab.info).to_contain_text(re.compile(r"Step ([3-9]|\d\d+) "))
        page.locator("#stop").click()
        expect(tab.info).to_contain_text(re.compile(r"Stopped after \d+ steps"))
        slots, holder = tab.sessions.export_slots, object()
        slots.join(holder)
        assert slots.take(holder)                          # as another visitor's export rendering
        note = page.locator("#save_note")
        try:
            page.get_by_text("Save", exact=True).click()   # the accordion
            page.locator("#export_video").click()
            expect(note).to_contain_text("⏳ Waiting for the device: 1st in line")
        finally:
            slots.release(holder)
        video = page.locator("#drag_video video")
        expect(video).to_be_attached()
        page.wait_for_function("v => v.readyState >= 2 || v.error !== null", arg=video.element_handle())
        assert video.evaluate("v => v.error") is None
        expect(note).not_to_contain_text("Waiting")
