"""A page's points events applied in the order it numbered them (ui.ordering.InOrder), whatever order their
requests arrive in. No browser, no server: the actions are list appends on a fake page's points."""
import pytest

from stylegan2.errors import UserError
from ui.ordering import InOrder


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Points:
    """A page's points as the session keeps them: clicks alternate handle, target; clear empties."""
    def __init__(self, *clicks):
        self.clicks = list(clicks)

    def click(self, name):
        return lambda: self.clicks.append(name)

    def clear(self):
        return lambda: self.clicks.clear()


def test_an_early_arrival_waits_for_the_gap_and_then_all_apply_in_order():
    order, points = InOrder(), Points()
    assert order.apply("page", 2, points.click("target")) == []      # the target came first: it waits
    assert points.clicks == [] and order.pending("page") == [2]
    assert order.apply("page", 1, points.click("handle")) == [None, None]
    assert points.clicks == ["handle", "target"] and order.pending("page") == []
    assert order.apply("page", 3, points.click("next")) == [None]     # in turn: at once
    assert points.clicks == ["handle", "target", "next"]


def test_a_clear_that_arrives_after_the_clicks_made_after_it_still_goes_first():
    order, points = InOrder(), Points("old handle", "old target")
    order.apply("page", 3, points.click("target"))
    order.apply("page", 2, points.click("handle"))
    assert points.clicks == ["old handle", "old target"]              # nothing applied yet
    order.apply("page", 1, points.clear())
    assert points.clicks == ["handle", "target"]


def test_pages_are_ordered_apart():
    order, a, b = InOrder(), Points(), Points()
    order.apply("a", 2, a.click("a2"))
    assert order.apply("b", 1, b.click("b1")) == [None] and b.clicks == ["b1"]   # a's gap holds only a
    order.apply("a", 1, a.click("a1"))
    assert a.clicks == ["a1", "a2"]


def test_a_gap_that_never_fills_is_skipped_after_a_while():
    clock = FakeClock()
    order, points = InOrder(max_wait_s=2.0, clock=clock), Points()
    order.apply("page", 3, points.click("3"))       # 1 and 2 are lost
    clock.now = 1.0
    order.apply("page", 4, points.click("4"))
    assert points.clicks == [] and order.pending("page") == [3, 4]
    clock.now = 2.5                                  # the next event after the oldest waited 2 s releases them all
    assert order.apply("page", 6, points.click("6")) == [None, None, None]
    assert points.clicks == ["3", "4", "6"] and order.pending("page") == []
    order.apply("page", 7, points.click("7"))       # 5 was skipped: 7 is in turn
    order.apply("page", 1, points.click("1"))       # a skipped number that turns up after all: at once
    assert points.clicks == ["3", "4", "6", "7", "1"]


def test_pending_is_bounded_and_a_full_line_is_applied_not_dropped():
    order, points = InOrder(max_pending=4, max_wait_s=float("inf")), Points()
    for n in range(2, 5):                           # number 1 never comes
        assert order.apply("page", n, points.click(n)) == []
    assert order.pending("page") == [2, 3, 4]
    assert order.apply("page", 5, points.click(5)) == [None] * 4     # the fourth waiting: all apply
    assert points.clicks == [2, 3, 4, 5] and order.pending("page") == []


def test_pages_kept_are_bounded_and_a_closed_page_is_forgotten():
    order, points = InOrder(keep=2), Points()
    for page in ("a", "b", "c"):
        order.apply(page, 2, points.click(page))
    assert order.pending("a") == [] and order.pending("b") == [2] and order.pending("c") == [2]
    order.forget("b")
    assert order.pending("b") == []
    assert order.apply("b", 1, points.click("b1")) == [None]          # a fresh line for a page seen again


def test_an_event_without_a_number_or_a_repeated_one_applies_at_once():
    order, points = InOrder(), Points()
    order.apply("page", 2, points.click("held"))
    assert order.apply("page", None, points.click("api")) == [None]   # API clients and tests: as before
    assert order.apply("page", 2, points.click("again")) == [None]    # a number already waiting
    assert points.clicks == ["api", "again"] and order.pending("page") == [2]


def test_a_refused_event_keeps_its_turn_and_the_rest_apply():
    order, points = InOrder(), Points()

    def refused():
        raise UserError("Wait for the drag to finish")
    order.apply("page", 2, points.click("after"))
    outcomes = order.apply("page", 1, refused)
    assert [str(o) if o else o for o in outcomes] == ["Wait for the drag to finish", None]
    assert points.clicks == ["after"]


def test_a_failing_action_leaves_the_ones_after_it_pending_for_the_next_event():
    order, points = InOrder(), Points()

    def broken():
        raise RuntimeError("bug")
    order.apply("page", 2, broken)
    order.apply("page", 3, points.click("3"))
    with pytest.raises(RuntimeError):
        order.apply("page", 1, points.click("1"))
    assert points.clicks == ["1"] and order.pending("page") == [3]
    order.apply("page", 4, points.click("4"))
    assert points.clicks == ["1", "3", "4"]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """The app's context on a tiny saved generator (no page, no server): the handlers called as Gradio would."""
    from stylegan2.checkpoints import save_generator
    from stylegan2.testing import tiny_generator
    from ui.build import make_context

    model = save_generator(tiny_generator(32, seed=0), tmp_path_factory.mktemp("model") / "tiny.safetensors")
    return make_context(str(model), "cpu", None, None)


def test_the_handlers_apply_a_pages_events_in_its_order_and_show_the_state_so_far(ctx):
    """A pair, then Clear (1), a handle (2) and a target (3) arriving 3, 2, 1: the replies to 3 and 2 change
    nothing on the page (gr.skip: a reply of the state before the gap filled could reach the page after the
    reply to 1 on a loaded server), the reply to 1 shows the new pair; the session has it, handle first."""
    import gradio as gr

    import types

    from ui.sections import points
    from ui.views import view_to_image_xy

    request = types.SimpleNamespace(session_hash="page-1", client=None)
    sess = ctx.sessions.new_session(request.session_hash, ctx.default_model, seed=0)
    at = lambda x, y: types.SimpleNamespace(index=[x, y])  # noqa: E731
    points.click(ctx, at(30, 30), request)                  # no number: at once, as before
    points.click(ctx, at(200, 200), request)
    old = ctx.points_text(sess)
    assert old.startswith("Target 1 at")
    handle, target = view_to_image_xy([60, 180], 32), view_to_image_xy([190, 40], 32)

    skip = gr.skip()
    assert points.click(ctx, at(190, 40), request, order=3) == (skip, skip)
    assert points.click(ctx, at(60, 180), request, order=2.0) == (skip, skip)
    assert ctx.points_text(sess) == old                      # nothing applied yet
    view, text = points.clear_points(ctx, request, order=1)
    assert sess.handles_xy == [handle] and sess.targets_xy == [target]
    assert text == ctx.points_text(sess) and text.startswith(f"Target 1 at ({target[0]:g}, {target[1]:g})")
    assert view.shape == ctx.view(sess).shape
    assert points.undo_point(ctx, request, order=4)[1].startswith("Handle 1 at")
    assert sess.targets_xy == [] and ctx.points_order.pending(request.session_hash) == []


def test_a_refused_event_applied_with_others_shows_the_points_and_says_why(ctx):
    """A bad click (2) waits for a Clear (1): the reply to the Clear shows the cleared view and the refusal;
    a bad click alone is refused in one line, the points as they were."""
    import types

    from stylegan2.errors import UserError
    from ui.sections import points

    request = types.SimpleNamespace(session_hash="page-2", client=None)
    sess = ctx.sessions.new_session(request.session_hash, ctx.default_model, seed=0)
    points.click(ctx, types.SimpleNamespace(index=[10, 10]), request, order=1)
    points.click(ctx, types.SimpleNamespace(index=None), request, order=3)
    view, text = points.clear_points(ctx, request, order=2)
    assert sess.handles_xy == [] and text.startswith("⚠️ a click must be an [x, y] pair")
    with pytest.raises(UserError, match="^a click must be"):
        points.click(ctx, types.SimpleNamespace(index="ab"), request, order=4)
    assert points.click(ctx, types.SimpleNamespace(index=[10, 10]), request, order="5")[1].startswith("Handle 1")


@pytest.mark.parametrize("order, number", [(None, None), (3, 3), (3.0, 3), (2.5, None), (0, None), (-1, None),
                                           (float("nan"), None), (float("inf"), None), (True, None), ("4", None)])
def test_only_a_whole_positive_number_orders_an_event(order, number):
    from ui.sections.points import event_number
    assert event_number(order) == number

