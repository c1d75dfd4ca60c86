"""Catalog entries with a `url` (NVIDIA's StyleGAN3 pickles on NGC): downloaded, bounded, resumed, offline-aware.

Everything runs against a loopback `http.server` in a thread, allowed through `downloads.TEST_ORIGINS` (a
module constant no visitor can reach), serving a small StyleGAN3 pickle built from the reference records.
"""
from __future__ import annotations

import base64
import http.server
import json
import threading
import tracemalloc
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file

from stylegan2 import catalog, checkpoints, downloads, safe_pickle
from stylegan2.checkpoints import CheckpointError, ModelNotAllowedError, load_generator, resolve_spec
from stylegan2.downloads import DownloadError, check_url
from stylegan2.stylegan3 import Generator
from test_checkpoints import hf_home  # noqa: F401 (fixture)
from test_stylegan3 import rel_err
from test_stylegan3_loading import _image, sg3_pickle_bytes

REFERENCE = "sg3r_res64"
SMALL_CAP = 1 << 20          # the too-big entries' max_bytes
ENDLESS_LIMIT = 64 << 20     # the endless answer stops here if nobody stops reading it


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes by path; every request is recorded as (path, Range header) before it is answered."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        route = getattr(self, "route_" + self.path.strip("/").split(".")[0].replace("-", "_"), None)
        if route is None:
            self.send_error(404)
        else:
            route(srv.data)

    def do_CONNECT(self) -> None:
        """A proxy's tunnel request: recorded with its credentials, and refused."""
        self.server.requests.append((f"CONNECT {self.path}", self.headers.get("Proxy-Authorization")))
        self.send_error(502)

    def send_data(self, data: bytes, ranged: bool = True) -> None:
        """The file, or (when `ranged`) the part a `Range: bytes=N-` asks for."""
        start = int(self.headers["Range"][6:-1]) if ranged and self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def route_sg3(self, data: bytes) -> None:
        self.send_data(data)

    def route_cut(self, data: bytes) -> None:
        """The first answer promises the whole file and stops half-way; later ones answer ranges."""
        if sum(path == self.path for path, _ in self.server.requests) > 1:
            return self.send_data(data)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])

    def route_cut_whole(self, data: bytes) -> None:
        """Cut like route_cut, then the whole file whatever the Range asks."""
        if sum(path == self.path for path, _ in self.server.requests) > 1:
            return self.send_data(data, ranged=False)
        self.route_cut(data)

    def route_cut_wrong(self, data: bytes) -> None:
        """Cut like route_cut, then a part from byte 1 whatever the Range asks, then the whole file."""
        seen = sum(path == self.path for path, _ in self.server.requests)
        if seen == 2:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 1-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - 1))
            self.end_headers()
            return self.wfile.write(data[1:])
        self.route_cut(data) if seen == 1 else self.send_data(data)

    def route_declared_big(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10 * SMALL_CAP))
        self.end_headers()
        self.wfile.write(b"\0" * 1024)

    def route_endless(self, data: bytes) -> None:
        """No Content-Length: zeros until the client hangs up (or ENDLESS_LIMIT)."""
        self.send_response(200)
        self.end_headers()
        try:
            while self.server.sent < ENDLESS_LIMIT:
                self.wfile.write(b"\0" * 65536)
                self.server.sent += 65536
        except OSError:
            pass

    def route_away(self, data: bytes) -> None:
        """A redirect to another origin (localhost is not the allowed 127.0.0.1)."""
        self.send_response(302)
        self.send_header("Location", f"http://localhost:{self.server.server_port}/sg3.pkl")
        self.end_headers()

    def route_hop(self, data: bytes) -> None:
        """A redirect within the allowed origin."""
        self.send_response(302)
        self.send_header("Location", "/sg3.pkl")
        self.end_headers()

    def route_junk(self, data: bytes) -> None:
        """Not a pickle, and no Content-Length: the download cannot tell it from a cut one."""
        self.send_response(200)
        self.end_headers()
        self.wfile.write(data[: len(data) // 3])

    def route_busy(self, data: bytes) -> None:
        self.send_error(503)

    def route_stall(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.server.release.wait(timeout=30)


@pytest.fixture(scope="module")
def reference(reference_dir):
    meta = json.loads((reference_dir / f"{REFERENCE}.json").read_text())
    state = load_file(str(reference_dir / f"{REFERENCE}.safetensors"))
    io = load_file(str(reference_dir / f"{REFERENCE}_io.safetensors"))
    return sg3_pickle_bytes(meta, state), io


@pytest.fixture(scope="module")
def server(reference, extra_catalog):
    """The loopback server, and one test catalog entry per route (`url-<route>`)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.data, httpd.requests, httpd.sent, httpd.release = reference[0], [], 0, threading.Event()
    httpd.origin = f"http://127.0.0.1:{httpd.server_port}"
    routes = ["sg3", "cut", "cut-whole", "cut-wrong", "declared-big", "endless", "away", "hop", "busy", "stall",
              "missing", "junk"]
    extra_catalog(*({"name": f"url-{r}", "label": r, "format": "stylegan3", "resolution": 64, "shows": "test",
                     "licence": "test", "source": "test", "url": f"{httpd.origin}/{r}.pkl", "filename": f"{r}.pkl",
                     **({"max_bytes": SMALL_CAP} if r in ("declared-big", "endless") else {})} for r in routes))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def online(server, hf_home, monkeypatch):  # noqa: F811
    """The loopback origin allowed, HF_HUB_OFFLINE off, no backoff; the request log emptied."""
    monkeypatch.setattr(downloads, "TEST_ORIGINS", frozenset({server.origin}))
    monkeypatch.setattr(downloads, "BACKOFF_S", 0.0)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    server.requests.clear()
    server.sent = 0
    return server


def downloaded(hf_home):  # noqa: F811
    """Every file in the download cache, by name."""
    folder = hf_home / "draggan" / "downloads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def one_line_error(name: str, kind=DownloadError) -> str:
    with pytest.raises(kind) as err:
        load_generator(name)
    assert "\n" not in str(err.value)
    return str(err.value)


# ----------------------------------------------------------------------------
# Download, load, render; the caches.

def test_a_url_entry_downloads_converts_and_renders_as_the_reference(online, reference, hf_home):  # noqa: F811
    entry = catalog.get_entry("url-sg3")
    assert not entry.is_available_offline()
    G = load_generator("url-sg3")
    assert isinstance(G, Generator) and rel_err(_image(G, reference[1]), reference[1]["img_const"]) < 1e-4
    assert online.requests == [("/sg3.pkl", None)]
    assert downloaded(hf_home) == [downloads.cached_path(entry.url, entry.filename).name]  # no .part left
    assert downloads.cached_path(entry.url, entry.filename).read_bytes() == reference[0]
    assert entry.is_available_offline()  # the app may now open on it offline
    assert len(list((hf_home / "draggan").glob("*.safetensors"))) == 1  # converted once to our format


def test_a_second_load_reads_the_download_and_its_conversion_without_a_request(online, reference, monkeypatch):
    first = load_generator("url-sg3")
    assert len(online.requests) == 1

    def no_pickle(*args):
        raise AssertionError("the second load must read the converted file, not the pickle")

    monkeypatch.setattr(safe_pickle, "generator_from_pickle", no_pickle)
    checkpoints.clear_memory_cache()
    second = load_generator("url-sg3")
    assert second is not first and len(online.requests) == 1
    assert rel_err(_image(second, reference[1]), reference[1]["img_const"]) < 1e-4


def test_a_redirect_within_the_allowed_origin_is_followed(online, reference):
    load_generator("url-hop")
    assert online.requests == [("/hop.pkl", None), ("/sg3.pkl", None)]


# ----------------------------------------------------------------------------
# Resume.

def test_a_cut_answer_is_resumed_with_a_range_request(online, reference, hf_home):  # noqa: F811
    load_generator("url-cut")
    half = len(reference[0]) // 2
    assert online.requests == [("/cut.pkl", None), ("/cut.pkl", f"bytes={half}-")]
    entry = catalog.get_entry("url-cut")
    assert downloads.cached_path(entry.url, entry.filename).read_bytes() == reference[0]


def test_a_server_that_ignores_the_range_or_answers_another_part_is_read_from_the_start(online, reference,
                                                                                       hf_home):  # noqa: F811
    half = len(reference[0]) // 2
    for name in ("cut-whole", "cut-wrong"):
        load_generator(f"url-{name}")
        entry = catalog.get_entry(f"url-{name}")
        assert downloads.cached_path(entry.url, entry.filename).read_bytes() == reference[0], name
    assert online.requests == [("/cut-whole.pkl", None), ("/cut-whole.pkl", f"bytes={half}-"),
                               ("/cut-wrong.pkl", None), ("/cut-wrong.pkl", f"bytes={half}-"), ("/cut-wrong.pkl", None)]


def test_a_cut_download_keeps_its_part_and_the_next_call_resumes_it(online, reference, hf_home,  # noqa: F811
                                                                     monkeypatch):
    monkeypatch.setattr(downloads, "ATTEMPTS", 1)
    msg = one_line_error("url-cut")
    half = len(reference[0]) // 2
    assert f"could not download cut.pkl from 127.0.0.1: the connection closed after {half} of" in msg
    assert "the part downloaded is kept and resumed" in msg and "--model PATH" in msg
    assert [name.endswith(".part") for name in downloaded(hf_home)] == [True]
    G = load_generator("url-cut")
    assert rel_err(_image(G, reference[1]), reference[1]["img_const"]) < 1e-4
    assert online.requests[1] == ("/cut.pkl", f"bytes={half}-")
    assert not any(name.endswith(".part") for name in downloaded(hf_home))


# ----------------------------------------------------------------------------
# Bounds.

def test_a_declared_size_over_the_cap_is_refused_before_reading(online, hf_home):  # noqa: F811
    msg = one_line_error("url-declared-big")
    assert "declared-big.pkl is 10 MB, over its limit of 1 MB: refused" in msg
    assert downloaded(hf_home) == [] and len(online.requests) == 1  # nothing kept, not retried


def test_an_endless_answer_is_cut_at_the_cap_in_bounded_memory(online, hf_home):  # noqa: F811
    tracemalloc.start()
    try:
        msg = one_line_error("url-endless")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "endless.pkl is over its limit of 1 MB: refused" in msg
    assert downloaded(hf_home) == [] and len(online.requests) == 1
    assert peak < 8 * downloads.CHUNK_BYTES  # streamed to disk, a chunk at a time (an answer read whole: 64 MB)


def test_a_downloaded_file_that_does_not_read_is_dropped_and_fetched_again(online, hf_home):  # noqa: F811
    msg = one_line_error("url-junk", CheckpointError)
    assert msg.endswith("(the downloaded copy was removed: the next load downloads it again)")
    assert downloaded(hf_home) == []
    one_line_error("url-junk", CheckpointError)
    assert online.requests == [("/junk.pkl", None)] * 2


def test_too_little_free_disk_is_refused_before_writing(online, hf_home, monkeypatch):  # noqa: F811
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10 << 20})())
    msg = one_line_error("url-sg3")
    assert "not enough disk space" in msg and "DRAGGAN_CACHE" in msg
    assert downloaded(hf_home) == []


def test_a_stalled_answer_times_out_in_one_line(online, hf_home, monkeypatch):  # noqa: F811
    monkeypatch.setattr(downloads, "READ_TIMEOUT_S", 0.2)
    monkeypatch.setattr(downloads, "ATTEMPTS", 1)
    msg = one_line_error("url-stall")
    assert "could not download stall.pkl from 127.0.0.1: timed out: no data for 0.2 s (1 attempts)" in msg


# ----------------------------------------------------------------------------
# Refusals and HTTP errors.

def test_a_redirect_to_a_host_off_the_list_is_refused_without_a_request_there(online, hf_home):  # noqa: F811
    msg = one_line_error("url-away")
    assert f"refused to download from http://localhost:{online.server_port}/sg3.pkl: only https from" in msg
    assert online.requests == [("/away.pkl", None)] and downloaded(hf_home) == []


def test_http_404_gives_one_line_and_is_not_retried(online, hf_home):  # noqa: F811
    msg = one_line_error("url-missing")
    assert msg.startswith("HTTP 404 (Not Found) from 127.0.0.1 for http://127.0.0.1:")
    assert "may have moved" in msg and msg.endswith("yourself and pass --model PATH")
    assert len(online.requests) == 1 and downloaded(hf_home) == []


def test_a_server_error_is_tried_again_then_gives_one_line(online, hf_home):  # noqa: F811
    msg = one_line_error("url-busy")
    assert f"HTTP 503 (Service Unavailable) from 127.0.0.1 ({downloads.ATTEMPTS} attempts)" in msg
    assert len(online.requests) == downloads.ATTEMPTS > 1


def test_offline_makes_no_request_says_so_then_uses_a_downloaded_file(online, reference, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    msg = one_line_error("url-sg3")
    assert "HF_HUB_OFFLINE is set (offline)" in msg and f"download {online.origin}/sg3.pkl yourself" in msg
    assert "--model PATH" in msg and online.requests == []
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    load_generator("url-sg3")
    checkpoints.clear_memory_cache()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert rel_err(_image(load_generator("url-sg3"), reference[1]), reference[1]["img_const"]) < 1e-4
    assert len(online.requests) == 1


def test_https_goes_through_the_proxy_the_environment_names(online, monkeypatch, hf_home):  # noqa: F811
    """$HTTPS_PROXY (here the loopback server, which refuses the tunnel): a CONNECT with the proxy's login."""
    monkeypatch.setattr(downloads.urllib.request, "getproxies",
                        lambda: {"https": f"http://me:p%40ss@127.0.0.1:{online.server_port}"})
    monkeypatch.setattr(downloads.urllib.request, "proxy_bypass", lambda host: False)
    monkeypatch.setattr(downloads, "ATTEMPTS", 1)
    with pytest.raises(DownloadError, match="could not download x.pkl from api.ngc.nvidia.com: cannot connect to "
                                            "api.ngc.nvidia.com .*502"):
        downloads.fetch("https://api.ngc.nvidia.com/v2/x.pkl", "x.pkl", 1 << 20, progress=False)
    assert online.requests == [("CONNECT api.ngc.nvidia.com:443", "Basic " + base64.b64encode(b"me:p@ss").decode())]
    assert downloaded(hf_home) == []


def test_a_url_is_never_a_model_spec_only_a_catalog_entry_downloads(online):
    with pytest.raises(ModelNotAllowedError):
        load_generator(f"{online.origin}/sg3.pkl", allow_custom=False)
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(f"{online.origin}/sg3.pkl")
    assert online.requests == []
    load_generator("url-sg3", allow_custom=False)  # a public server loads catalog entries, URL ones too
    assert len(online.requests) == 1


@pytest.mark.parametrize("url", [
    "http://api.ngc.nvidia.com/v2/x.pkl",            # not https
    "ftp://api.ngc.nvidia.com/x.pkl", "file:///etc/passwd",
    "https://example.com/x.pkl",                     # not on the list
    "https://api.ngc.nvidia.com.example.com/x.pkl",  # a look-alike
    "https://api.ngc.nvidia.com:8443/x.pkl",         # another port
    "https://user:pw@api.ngc.nvidia.com/x.pkl",      # credentials
    "https://api.ngc.nvidia.com:99999/x.pkl",        # no port at all
    "http://127.0.0.1:8000/x.pkl",                   # loopback, unless a test allows it
])
def test_other_schemes_hosts_and_ports_are_refused(url):
    assert downloads.TEST_ORIGINS == frozenset()  # the product allows no test origin
    with pytest.raises(DownloadError, match="refused to download from .*only https from api.ngc.nvidia.com"):
        check_url(url)


def test_every_catalog_url_is_allowed_and_a_stylegan3_name_resolves_to_ngc():
    shipped = json.loads(Path(catalog.__file__).with_name("catalog.json").read_text())["models"]  # not the tests'
    urls = [e["url"] for e in shipped if "url" in e]
    assert len(urls) >= 12
    for url in urls:
        assert check_url(url).hostname == "api.ngc.nvidia.com"
    source = resolve_spec("stylegan3-t-ffhq-1024")
    assert source.url.endswith("/stylegan3-t-ffhq-1024x1024.pkl") and source.key == ("url", source.url)
    assert catalog.get_entry("stylegan3-r-afhqv2-512").format == "stylegan3"


@pytest.mark.parametrize("change, message", [
    ({"repo_id": "a/b"}, "give either repo_id and filename, or path, or url and filename"),
    ({"filename": None}, "give either"),
    ({"filename": "../x.pkl"}, "a url's filename is a plain .pkl or .safetensors name"),
    ({"filename": "x.exe"}, "a url's filename is a plain"),
    ({"max_bytes": 0}, "max_bytes must be a whole number"),
    ({"max_bytes": 1 << 40}, "max_bytes must be a whole number"),
])
def test_a_url_entry_is_checked_when_the_catalog_is_read(change, message):
    entry = {"name": "x", "label": "X", "resolution": 64, "shows": "x", "licence": "x", "source": "x",
             "url": "https://api.ngc.nvidia.com/x.pkl", "filename": "x.pkl"}
    with pytest.raises(ValueError, match=f"catalog entry 'x': {message}"):
        catalog.CatalogEntry(**(entry | change))


def test_the_cli_renders_a_url_entry_by_name_and_says_offline_in_one_line(online, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from draggan.__main__ import main

    out = tmp_path / "x.png"
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert main(["render", "--model", "url-sg3", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sg3.pkl is needed") and err.count("\n") == 1 and "--model PATH" in err
    assert online.requests == [] and not out.exists()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    assert main(["render", "--model", "url-sg3", "--device", "cpu", "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64) and len(online.requests) == 1
