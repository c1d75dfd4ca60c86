"""Public-mode policy, in one place: when a server is public, whom a request comes from, and the bounds
an anonymous visitor meets (see the README's "Running it in public").

Importing this module sets Pillow's decoding bound (every upload, mask layers included, is refused above
twice MAX_IMAGE_PIXELS before it is decoded into memory); photos get pti's own, clearer 40 MP message first.
"""
from __future__ import annotations

import base64
import binascii
import collections
import io
import ipaddress
import json
import os
import shutil
import threading
import time
from typing import Any

from PIL import Image

from stylegan2.errors import UserError

MAX_IMAGE_PIXELS = 40_000_000    # Pillow's bound (it refuses images over twice this many pixels)
MAX_UPLOAD = "200mb"             # photos are refused above 40 MP anyway; a 1024-px model's embedding is ~120 MB
MAX_MASK_PX = 4096               # a mask layer larger than this per side is refused before it is read
PUBLIC_EXPERIMENT_PAIRS = 8      # pairs an experiment may use on a public server
TRUSTED_EXPERIMENT_PAIRS = 200   # and elsewhere
PUBLIC_EXPERIMENT_BUDGET_S = 300.0  # one experiment's whole run on a public server (none elsewhere)

# A public server's bounds on one visitor's work (README "Running it in public"); each has a flag and a variable.
PUBLIC_DRAG_TIME_LIMIT_S = 80.0          # the official Space's cap on one drag
PUBLIC_MAX_DRAG_BYTES = 2 << 30          # tracking + motion memory of one drag: ~95 points at default radii on a
                                         # 1024-px model, so a 16 GB GPU keeps room for the generator's activations
PUBLIC_PROTECT_RECENT_S = 300.0          # a session used this recently is never evicted for a newcomer
PUBLIC_PHOTOS_PER_CLIENT = 1             # tuned generator copies one client (address) may hold
PUBLIC_MAX_UPLOAD_BYTES = 128 << 20      # one uploaded file: a 1024-px model's embedding (~120 MB) still loads
PUBLIC_CLIENT_UPLOAD_BYTES = 512 << 20   # what one client may upload in UPLOAD_WINDOW_S
PUBLIC_MIN_FREE_BYTES = 2 << 30          # uploads and exports are refused when the cache disk has less free
PUBLIC_DELETE_CACHE = (300, 900)         # Gradio's cleaner: every 5 minutes, files older than 15 (trusted: 30, 60)
UPLOAD_WINDOW_S = 3600.0
DISK_FULL = "The server's disk is nearly full; try again later"

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def is_public(host: str | None, share: bool, flag_public: bool, flag_trusted: bool) -> bool:
    """Public unless trusted: forced by --public, else whenever the app listens beyond loopback or shares a link."""
    if flag_public:
        return True
    if flag_trusted:
        return False
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return share or not loopback or bool(os.environ.get("SPACE_ID"))


PRIVATE_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusts_proxy() -> bool:
    """Whether a proxy we trust sits in front (a Space, DRAGGAN_TRUST_PROXY=1, or DRAGGAN_TRUSTED_PROXIES set)."""
    env = os.environ.get
    return bool(env("SPACE_ID")) or env("DRAGGAN_TRUST_PROXY") == "1" or bool(env("DRAGGAN_TRUSTED_PROXIES"))


def trusted_proxies() -> list[Network]:
    """The proxies whose X-Forwarded-For we believe: DRAGGAN_TRUSTED_PROXIES (addresses or networks, comma
    separated), else loopback and the private networks when trusts_proxy() (a Space's proxy is on its private
    network), else none. A malformed entry is a ValueError (the server refuses to start)."""
    if not trusts_proxy():
        return []
    spec = os.environ.get("DRAGGAN_TRUSTED_PROXIES") or PRIVATE_NETWORKS
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]
    except ValueError as e:
        raise ValueError(f"DRAGGAN_TRUSTED_PROXIES: {e}") from None


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def client_key(address: str | None) -> str | None:
    """The per-client key of an address: an IPv4 address itself, an IPv6 address's /64 (one host or home
    network holds millions of addresses of one /64), anything else as it is (cut to 64 characters)."""
    addr = _address(address)
    if addr is None:
        return None if address is None else str(address)[:64]
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def _through_proxy(peer: str | None, forwarded: str, proxies: list[Network]) -> str | None:
    """The client's address from X-Forwarded-For, given the direct peer is a trusted proxy: the right-most
    entry that is not itself a trusted proxy (each proxy appends whom it saw; the entries to the left of that
    are whatever the visitor sent). None if no entry is a valid address."""
    for entry in reversed(forwarded.split(",")[-32:]):
        addr = _address(entry)
        if addr is None:
            return None
        if not any(addr in net for net in proxies if net.version == addr.version):
            return str(addr)
    return peer


def client_address(request: Any, proxies: list[Network] | None = None) -> str | None:
    """Who asks, for the per-client bounds (client_key of the address). A request straight from its visitor:
    its own address. X-Forwarded-For counts only when the direct peer is a trusted proxy (`proxies`, default
    trusted_proxies()). `request` is a Gradio request, or anything with `headers` and `client.host`."""
    peer = getattr(getattr(request, "client", None), "host", None)
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for") if hasattr(headers, "get") else None
    proxies = trusted_proxies() if proxies is None else proxies
    peer_addr = _address(peer)
    if forwarded and peer_addr is not None and any(peer_addr in n for n in proxies if n.version == peer_addr.version):
        peer = _through_proxy(peer, str(forwarded), proxies) or peer
    return client_key(peer)


class ImageBoundError(UserError, ValueError):
    """An image (an upload, a mask layer) refused from its header, before its pixels are decoded."""


def _image_bytes(source: Any, max_bytes: int) -> io.BytesIO | str:
    """What Pillow may open: a path, or the bytes of raw data or of a base64 data URL (its length checked
    before it is decoded)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, str) and source.startswith("data:"):
        encoded = source.partition(",")[2]
        if len(encoded) > max_bytes * 4 // 3 + 4:
            raise ImageBoundError(f"an image of at most {max_bytes >> 20} MB is allowed here")
        try:
            data = base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            raise ImageBoundError("an image's data URL is not valid base64") from None
    else:
        return str(source)
    if len(data) > max_bytes:
        raise ImageBoundError(f"an image of at most {max_bytes >> 20} MB is allowed here")
    return io.BytesIO(data)


def image_size(source: Any, max_side: int, what: str = "an image", max_bytes: int = 64 << 20) -> tuple[int, int]:
    """(width, height) of an image read from its header only (Pillow's open decodes no pixels), or an
    ImageBoundError when it is not an image or a side exceeds max_side. source: a path, bytes or a data URL."""
    try:
        with Image.open(_image_bytes(source, max_bytes)) as im:
            width, height = im.size
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageBoundError):
            raise
        raise ImageBoundError(f"{what} must be an image of at most {max_side}x{max_side} pixels") from None
    if max(width, height) > max_side:
        raise ImageBoundError(f"{what} must be at most {max_side}x{max_side} pixels, got {width}x{height}")
    return width, height


class DiskFullError(UserError):
    """The cache disk has less free space than the server keeps."""


def check_free_disk(folder: str | os.PathLike, min_free: int | None) -> None:
    """A DiskFullError when the disk holding `folder` (or its nearest existing parent) has under min_free bytes."""
    if not min_free:
        return
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if shutil.disk_usage(path).free < min_free:
        raise DiskFullError(DISK_FULL)


class UploadLedger:
    """The bytes each client uploaded within the last `window_s` seconds, bounded by `limit` per client."""

    def __init__(self, limit: int | None, window_s: float = UPLOAD_WINDOW_S, clock=time.monotonic):
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._spent: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def spend(self, client: str | None, n: int) -> bool:
        """Count n more bytes for `client`; False (nothing counted) when that would pass the limit."""
        if not self.limit:
            return True
        now, key = self._clock(), client or "?"
        with self._lock:
            for k in list(self._spent):  # forget what left the window (and clients with nothing in it)
                spent = self._spent[k]
                while spent and spent[0][0] < now - self.window_s:
                    spent.popleft()
                if not spent:
                    del self._spent[k]
            spent = self._spent.setdefault(key, collections.deque())
            if sum(b for _, b in spent) + n > self.limit:
                if not spent:
                    del self._spent[key]
                return False
            spent.append((now, n))
            return True


class _Scope:
    """An ASGI scope as client_address reads a request."""

    def __init__(self, scope: dict):
        self.client = type("Peer", (), {"host": (scope.get("client") or (None,))[0]})()
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class UploadGuard:
    """ASGI middleware before Gradio's upload route: refuses an upload in one line when the cache disk is
    nearly full (507) or its client has used its upload bytes (429), counting the bytes as they arrive."""

    def __init__(self, app: Any, ledger: UploadLedger, folder: str, min_free: int | None):
        self.app, self.ledger, self.folder, self.min_free = app, ledger, folder, min_free

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/upload"):
            return await self.app(scope, receive, send)
        request = _Scope(scope)
        client = client_address(request)
        try:
            check_free_disk(self.folder, self.min_free)
        except DiskFullError as e:
            return await _refuse(send, 507, str(e))
        declared = int(request.headers.get("content-length") or 0)
        if not self.ledger.spend(client, declared):
            return await _refuse(send, 429, f"Upload limit reached: at most {self.ledger.limit >> 20} MB an hour "
                                            "from one address")
        counted = declared

        async def counting_receive():
            nonlocal counted
            message = await receive()
            body = len(message.get("body", b""))
            if message.get("type") == "http.request" and body:
                extra = max(0, body - counted)  # bytes beyond what Content-Length declared
                counted = max(0, counted - body)
                if extra and not self.ledger.spend(client, extra):
                    raise ConnectionAbortedError("upload limit reached")
            return message
        return await self.app(scope, counting_receive, send)


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def max_experiment_pairs(public: bool) -> int:
    """How many pairs one experiment may use on this server."""
    return PUBLIC_EXPERIMENT_PAIRS if public else TRUSTED_EXPERIMENT_PAIRS


def experiment_budget_s(public: bool) -> float | None:
    """How long one experiment may run on this server (None: as long as it takes)."""
    return PUBLIC_EXPERIMENT_BUDGET_S if public else None
