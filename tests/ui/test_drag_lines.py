"""The words of the line under the image for each way a drag ends or waits (issue 24 items 4 and 5)."""
import numpy as np

from draggan.config import DragFrame
from ui.sections.drag import frame_text, ordinal, waiting_json, waiting_text


def done(reason: str, distances=(7.8, 7.2), step: int = 5) -> DragFrame:
    return DragFrame(step, [[10.0, 10.0]], [[18.0, 10.0]], list(distances), 0.1, 12.0, np.zeros((4, 4, 3), np.uint8),
                     done=True, reason=reason)


def test_a_prediction_that_stops_short_says_how_far_and_what_to_press():
    text = frame_text(done("short"), [])
    assert text.startswith("**Predicted**, but a handle stopped 7.8 px short: press **Refine** to continue with "
                           "the optimizer"), text
    assert frame_text(done("predicted"), []).startswith("**Predicted** after 5 steps")


def test_the_time_limit_has_its_own_words():
    text = frame_text(done("time_limit"), [])
    assert text.startswith("**Stopped at the time limit** after 5 steps") and "press **Drag** to continue" in text


def test_a_waiting_drag_says_its_place_and_a_rough_wait():
    assert waiting_text((2, 19.6)) == "⏳ Waiting for the device: **2nd** in line, about 20 s"
    assert waiting_text((1, None)) == "⏳ Waiting for the device: **1st** in line"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]
    frame = DragFrame(0, [[1.0, 2.0]], [[3.0, 4.0]], [], float("nan"), 0.0, None, reason="waiting", queue=(3, None))
    assert waiting_json(frame)["queue"] == {"place": 3, "seconds": None} and not waiting_json(frame)["done"]
