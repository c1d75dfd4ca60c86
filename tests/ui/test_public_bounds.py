"""Public mode's bounds as a server is started (issue 26 item 1) and whom a request counts as (item 6)."""
import types

import pytest

pytest.importorskip("gradio")
from draggan.public import client_address, client_key, trusted_proxies  # noqa: E402
from ui.build import make_context  # noqa: E402
from ui.launch import bound_settings, parser  # noqa: E402

MODEL = "toyfaces-64"  # never loaded: make_context only names it


def manager_bounds(**settings) -> tuple:
    m = make_context(MODEL, "cpu", None, None, **settings).sessions
    return m.drag_time_limit_s, m.max_drag_bytes, m.protect_recent_s, m.photos.per_client


def test_a_public_server_starts_with_the_public_bounds():
    assert manager_bounds(public=True) == (80.0, 2 << 30, 300.0, 1)
    assert manager_bounds(public=False) == (None, None, 0.0, None)   # a trusted server: none of them


def test_each_bound_has_a_flag_and_a_variable_and_0_turns_it_off(monkeypatch):
    args = parser().parse_args(["--drag-time-limit", "30", "--max-drag-gb", "0.5", "--protect-recent", "0",
                                "--photos-per-client", "2"])
    settings = bound_settings(args)
    assert settings == dict(drag_time_limit_s=30.0, max_drag_bytes=1 << 29, protect_recent_s=0.0, photos_per_client=2,
                            max_upload_bytes=None, client_upload_bytes=None, min_free_bytes=None)
    assert manager_bounds(public=True, **settings) == (30.0, 1 << 29, 0.0, 2)
    monkeypatch.setenv("DRAGGAN_DRAG_TIME_LIMIT", "0")
    monkeypatch.setenv("DRAGGAN_PHOTOS_PER_CLIENT", "3")
    settings = bound_settings(parser().parse_args([]))
    assert manager_bounds(public=True, **settings) == (None, 2 << 30, 300.0, 3)
    monkeypatch.setenv("DRAGGAN_MIN_FREE_MB", "0")
    args = parser().parse_args(["--max-upload-mb", "16", "--client-upload-mb", "64"])
    ctx = make_context(MODEL, "cpu", None, None, public=True, **bound_settings(args))
    assert [ctx.settings.bound(n) for n in ("max_upload_bytes", "client_upload_bytes", "min_free_bytes")] == [
        16 << 20, 64 << 20, None]
    public = make_context(MODEL, "cpu", None, None, public=True).settings
    assert public.bound("max_upload_bytes") == 128 << 20 and public.bound("min_free_bytes") == 2 << 30


def request(peer: str, forwarded: str | None = None):
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    return types.SimpleNamespace(client=types.SimpleNamespace(host=peer), headers=headers)


def test_ipv6_addresses_of_one_slash_64_are_one_client():
    a, b = client_key("2001:db8:1:2::1"), client_key("2001:db8:1:2:ffff:1234:5678:9abc")
    assert a == b == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != a                       # the next /64: another client
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_address(request("2001:db8:1:2::9"), []) == a


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("DRAGGAN_TRUST_PROXY", "1")
    monkeypatch.setenv("DRAGGAN_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    proxies = trusted_proxies()
    # A visitor straight to the server, forging the header: keyed by its own address, whatever it claims.
    assert client_address(request("198.51.100.9", "203.0.113.1"), proxies) == "198.51.100.9"
    forged = {client_address(request("198.51.100.9", f"203.0.113.{i}"), proxies) for i in range(40)}
    assert forged == {"198.51.100.9"}
    # Through the proxy: the right-most entry that is not itself a proxy (the visitor's forged entries are
    # to its left; a second proxy of ours appended the 10.x entry).
    assert client_address(request("127.0.0.1", "1.1.1.1, 198.51.100.9"), proxies) == "198.51.100.9"
    assert client_address(request("10.1.2.3", "1.1.1.1, 198.51.100.9, 10.9.9.9"), proxies) == "198.51.100.9"
    assert client_address(request("127.0.0.1", "2001:db8:5:6::7"), proxies) == "2001:db8:5:6::/64"
    assert client_address(request("127.0.0.1", "not-an-address"), proxies) == "127.0.0.1"
    monkeypatch.delenv("DRAGGAN_TRUST_PROXY")
    monkeypatch.delenv("DRAGGAN_TRUSTED_PROXIES")
    assert trusted_proxies() == []
    assert client_address(request("127.0.0.1", "198.51.100.9")) == "127.0.0.1"   # no proxy configured
    monkeypatch.setenv("DRAGGAN_TRUSTED_PROXIES", "10.0.0.0/33")
    with pytest.raises(ValueError, match="DRAGGAN_TRUSTED_PROXIES"):
        trusted_proxies()


def test_a_hugging_face_space_is_public_even_on_loopback(monkeypatch):
    from draggan.public import is_public
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert not is_public("127.0.0.1", False, False, False) and not is_public(None, False, False, False)
    monkeypatch.setenv("SPACE_ID", "someone/draggan")
    assert is_public("127.0.0.1", False, False, False) and is_public(None, False, False, False)
    assert not is_public("127.0.0.1", False, False, True)  # --trusted still wins


def test_a_public_experiment_uses_at_most_eight_pairs():
    from draggan.config import DragInputError
    from draggan.experiments.runner import ExperimentPlan, check_plan
    from draggan.public import max_experiment_pairs
    check_plan(ExperimentPlan(["draggan"], pairs=8), max_experiment_pairs(True), False)
    with pytest.raises(DragInputError, match="pairs must be from 1 to 8 on this server"):
        check_plan(ExperimentPlan(["draggan"], pairs=9), max_experiment_pairs(True), False)
    check_plan(ExperimentPlan(["draggan"], pairs=200), max_experiment_pairs(False), False)


def test_an_image_over_pillows_pixel_bound_is_refused_from_its_header(tmp_path):
    """81 MP (over twice the 40 MP bound, a small file): refused before its pixels are decoded, whatever the side."""
    from PIL import Image
    from draggan.public import MAX_IMAGE_PIXELS, ImageBoundError, image_size
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS == 40_000_000
    with pytest.raises(ImageBoundError):
        image_size(str(path), max_side=100_000)
