"""Catalog files that live at an https URL (NVIDIA NGC), downloaded as robustly as the Hub's.

Only a catalog entry's `url` is ever fetched (a visitor cannot pass a URL), and only over https
from a host in `ALLOWED_HOSTS`; a redirect is followed only to another allowed https host. Each
download is bounded: a size cap (the entry's `max_bytes`) checked against Content-Length and
against the bytes streamed, connect and read timeouts, a free-disk check before writing. It
streams into `<cache>/downloads/<name>.part` (never into memory), resumes that part with an
HTTP Range request on the next attempt (a few attempts, with backoff, and on a later call), and
renames it into place only once complete. Every failure is one line (`DownloadError`).

The cache is the one the conversion cache uses: `$DRAGGAN_CACHE`, else `<HF_HOME>/draggan`.
`HF_HUB_OFFLINE=1`, which the Hub path honours, means no connection at all: a downloaded file is
used, else one line says how to get it by hand (`--model PATH`).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import ssl
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

from huggingface_hub import constants as hf_constants
from tqdm.auto import tqdm

from .errors import CheckpointError
from .records import shorten

try:
    import fcntl
except ImportError:  # Windows: no lock between processes (one process still loads each file once)
    fcntl = None

# The hosts a download may come from or be redirected to, over https only. NGC answers file requests
# on api.ngc.nvidia.com; xfiles.ngc.nvidia.com is believed to be where it redirects (signed links), not
# checked here (no network). A redirect anywhere else is refused with the host named, so one real
# download tells what to add.
ALLOWED_HOSTS = frozenset({"api.ngc.nvidia.com", "xfiles.ngc.nvidia.com"})
# Tests only: extra origins ("http://127.0.0.1:PORT") allowed as they are. Empty in the product; no flag,
# setting or environment variable reaches it, only code that imports this module.
TEST_ORIGINS: frozenset[str] = frozenset()

CONNECT_TIMEOUT_S = 15.0  # to open the connection (and the TLS handshake)
READ_TIMEOUT_S = 60.0     # the longest wait for the next bytes of an answer
ATTEMPTS = 4              # tries per download; a cut connection, a timeout or a 5xx answer is tried again
BACKOFF_S = 2.0           # wait before the second try, doubled before each later one
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20     # read and written at a time: all the memory a download holds
FREE_MARGIN_BYTES = 64 << 20  # left free on the disk after the download
_REDIRECTS = (301, 302, 303, 307, 308)
# How messages name the folder (not its path: a public server's visitor sees them).
CACHE_NAME = "download cache ($DRAGGAN_CACHE/downloads, else <HF_HOME>/draggan/downloads)"


class DownloadError(CheckpointError):
    """A URL file could not be had: refused location, offline, HTTP error, too big, timeout, disk full."""


class _Transient(Exception):
    """A failure another attempt may get past (a cut connection, a timeout, a 5xx answer)."""


def cache_dir() -> Path:
    """Where converted pickles and downloads go: $DRAGGAN_CACHE, else <HF_HOME>/draggan."""
    return Path(os.environ.get("DRAGGAN_CACHE") or Path(hf_constants.HF_HOME) / "draggan").expanduser()


def cached_path(url: str, filename: str) -> Path:
    """Where the file of `url` is kept once downloaded (it may not be there): named by the URL and `filename`."""
    return cache_dir() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{filename}"


def _manual(url: str) -> str:
    """What to do instead, for the end of a one-line error."""
    return f"download {shorten(url, 200)} yourself and pass --model PATH"


def check_url(url: str) -> SplitResult:
    """`url` split, if it is https on an allowed host (default port, no credentials); DownloadError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, -1
    if parts is not None and f"{parts.scheme}://{parts.netloc}" in TEST_ORIGINS:
        return parts
    if (parts is None or parts.scheme != "https" or parts.hostname not in ALLOWED_HOSTS or port not in (None, 443)
            or parts.username is not None):
        raise DownloadError(f"refused to download from {shorten(url, 120)}: only https from "
                            f"{', '.join(sorted(ALLOWED_HOSTS))} (the allow-list in stylegan2/downloads.py)")
    return parts


def fetch(url: str, filename: str, max_bytes: int, progress: bool = True) -> Path:
    """The local copy of `url`, downloading it into the cache when it is not there yet.

    Raises DownloadError (one line) when it cannot be had; makes no connection when HF_HUB_OFFLINE is set.
    """
    dest = cached_path(url, filename)
    if dest.is_file():
        return dest
    manual = _manual(url)
    if hf_constants.is_offline_mode():
        raise DownloadError(f"{shorten(filename)} is needed but is not in the {CACHE_NAME} and "
                            f"HF_HUB_OFFLINE is set (offline): {manual}, or unset HF_HUB_OFFLINE to download it")
    host = check_url(url).hostname
    try:
        return _download(url, dest, host, max_bytes, filename, progress, manual)
    except OSError as e:  # the cache folder: read-only, or the disk filled while writing (not the network's errors)
        why = e.strerror or type(e).__name__
        raise DownloadError(f"could not write {shorten(filename)} into the {CACHE_NAME} ({why}); free some space or "
                            "set DRAGGAN_CACHE to a writable folder") from None


def _download(url: str, dest: Path, host: str | None, max_bytes: int, filename: str, progress: bool,
              manual: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _locked_part(part, filename) as f:
        if dest.is_file():  # another process finished it just before this one took the lock
            return dest
        last = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                _attempt(url, f, max_bytes, filename, progress, manual)
                break
            except _Transient as e:
                last = e
        else:
            raise DownloadError(f"could not download {shorten(filename)} from {host}: {last} ({ATTEMPTS} attempts); "
                                f"try again later (the part downloaded is kept and resumed), or {manual}")
        f.flush()
        os.fsync(f.fileno())
        os.replace(part, dest)
    return dest


@contextlib.contextmanager
def _locked_part(part: Path, filename: str) -> Iterator[BinaryIO]:
    """The partial file, open for appending, locked against another process downloading it at once.

    An empty part (nothing received, or refused as too big) is removed on the way out.
    """
    f = open(part, "a+b")
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DownloadError(f"another process is downloading {shorten(filename)} into the {CACHE_NAME}: "
                            "try again when it has finished") from None
    try:
        yield f
    finally:
        empty = os.fstat(f.fileno()).st_size == 0  # still the part: a complete file was renamed, not empty
        f.close()
        if empty:
            part.unlink(missing_ok=True)


def _attempt(url: str, f: BinaryIO, max_bytes: int, filename: str, progress: bool, manual: str) -> None:
    """One request for the rest of the file (Range from what `f` holds), appended to `f`."""
    have = f.seek(0, os.SEEK_END)
    conn, resp = _open(url, have, manual)
    try:
        if resp.status == 416:  # the part does not fit what the server has now: start over
            f.truncate(0)
            raise _Transient("the server refused to resume the partial file, which was dropped")
        if resp.status == 206 and (not have or _range_start(resp) != have):
            f.truncate(0)
            raise _Transient("the server sent another part of the file than the one asked for; starting over")
        if have and resp.status != 206:
            f.truncate(0)  # the server sends the whole file (it ignored the Range): start over
            have = 0
        length = _content_length(resp)
        total = have + length if length is not None else None
        if total is not None and total > max_bytes:
            f.truncate(0)  # what was kept belongs to a file this download refuses
            raise DownloadError(f"{shorten(filename)} is {total / 2**20:.0f} MB, over its limit of "
                                f"{max_bytes / 2**20:.0f} MB: refused; {manual}")
        _check_disk(Path(f.name).parent, (total if total is not None else max_bytes) - have)
        _copy(resp, f, have, total, max_bytes, filename, progress, manual)
    finally:
        conn.close()


def _copy(resp: http.client.HTTPResponse, f: BinaryIO, have: int, total: int | None, max_bytes: int,
          filename: str, progress: bool, manual: str) -> None:
    with tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=shorten(filename, 40),
              disable=not progress) as bar:
        while True:
            try:
                chunk = resp.read(CHUNK_BYTES)
            except (TimeoutError, socket.timeout):
                raise _Transient(f"timed out: no data for {READ_TIMEOUT_S:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                raise _Transient(f"the connection broke ({type(e).__name__})") from None
            if not chunk:
                break
            have += len(chunk)
            if have > max_bytes:
                f.truncate(0)
                raise DownloadError(f"{shorten(filename)} is over its limit of {max_bytes / 2**20:.0f} MB: "
                                    f"refused; {manual}")
            f.write(chunk)
            bar.update(len(chunk))
    if total is not None and have < total:
        raise _Transient(f"the connection closed after {have} of {total} bytes")


def _open(url: str, have: int, manual: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET `url` (from byte `have`), following redirects to allowed hosts only; a 2xx answer."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = check_url(url)
        conn = _connect(parts)
        try:
            headers = {"User-Agent": "draggan-app", "Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
            resp = conn.getresponse()
        except (TimeoutError, socket.timeout):
            conn.close()
            raise _Transient(f"timed out waiting for {parts.hostname}") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Transient(f"cannot reach {parts.hostname} ({type(e).__name__}: {shorten(e, 80)})") from None
        if resp.status in _REDIRECTS and resp.getheader("Location"):
            url = urljoin(url, resp.getheader("Location"))
            conn.close()
            continue
        if resp.status < 300 or resp.status == 416:
            return conn, resp
        conn.close()
        what = f"HTTP {resp.status} ({shorten(resp.reason, 40)}) from {parts.hostname}"
        if resp.status >= 500 or resp.status == 429:
            raise _Transient(what)
        moved = " (the file may have moved)" if resp.status in (404, 410) else ""
        raise DownloadError(f"{what} for {shorten(url, 200)}{moved}; {manual}")
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects from {shorten(url, 200)}; {manual}")


def _connect(parts: SplitResult) -> http.client.HTTPConnection:
    """An open connection to the URL's host (through $HTTPS_PROXY when set), reads bounded by READ_TIMEOUT_S."""
    host, port = parts.hostname, parts.port
    try:
        if parts.scheme == "http":  # a TEST_ORIGINS loopback server only
            conn = http.client.HTTPConnection(host, port or 80, timeout=CONNECT_TIMEOUT_S)
        else:
            proxy = urllib.request.getproxies().get("https")
            context = ssl.create_default_context()
            if proxy and not urllib.request.proxy_bypass(host):
                conn = _through_proxy(proxy, host, port or 443, context)
            else:
                conn = http.client.HTTPSConnection(host, port or 443, timeout=CONNECT_TIMEOUT_S, context=context)
        conn.connect()
    except socket.gaierror:
        raise DownloadError(f"cannot reach {host}: its name does not resolve (offline?); "
                            f"{_manual(urlunsplit(parts))}") from None
    except (TimeoutError, socket.timeout):
        raise _Transient(f"timed out connecting to {host}") from None
    except OSError as e:
        raise _Transient(f"cannot connect to {host} ({type(e).__name__}: {shorten(e, 80)})") from None
    conn.sock.settimeout(READ_TIMEOUT_S)
    return conn


def _through_proxy(proxy: str, host: str, port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    """An https connection tunnelled (CONNECT) through the proxy `$HTTPS_PROXY` names, as urllib would use."""
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    conn = http.client.HTTPSConnection(via.hostname, via.port or 80, timeout=CONNECT_TIMEOUT_S, context=context)
    headers = None
    if via.username:
        login = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
        headers = {"Proxy-Authorization": "Basic " + base64.b64encode(login).decode()}
    conn.set_tunnel(host, port, headers=headers)
    return conn


def _content_length(resp: http.client.HTTPResponse) -> int | None:
    value = resp.getheader("Content-Length", "")
    return int(value) if value.isdigit() else None


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    """The first byte a 206 answer holds, from `Content-Range: bytes START-END/TOTAL`."""
    value = resp.getheader("Content-Range", "")
    unit, _, span = value.partition(" ")
    start = span.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + FREE_MARGIN_BYTES:
        raise DownloadError(f"not enough disk space for the {CACHE_NAME}: the download needs "
                            f"{needed / 2**20:.0f} MB and {FREE_MARGIN_BYTES / 2**20:.0f} MB to spare, "
                            f"{free / 2**20:.0f} MB are free; "
                            "free some space or set DRAGGAN_CACHE to another disk")
