"""Public-mode policy, in one place: when a server is public, whom a request comes from, and the bounds
an anonymous visitor meets (see the README's "Running it in public").

Importing this module sets Pillow's decoding bound (every upload, mask layers included, is refused above
twice MAX_IMAGE_PIXELS before it is decoded into memory); photos get pti's own, clearer 40 MP message first.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any

from PIL import Image

MAX_IMAGE_PIXELS = 40_000_000    # Pillow's bound (it refuses images over twice this many pixels)
MAX_UPLOAD = "200mb"             # photos are refused above 40 MP anyway; a 1024-px model's embedding is ~120 MB
MAX_MASK_PX = 4096               # a mask layer larger than this per side is refused before it is read
PUBLIC_EXPERIMENT_PAIRS = 8      # pairs an experiment may use on a public server
TRUSTED_EXPERIMENT_PAIRS = 200   # and elsewhere

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


def trusts_proxy() -> bool:
    """Whether a proxy we trust sits in front (a Space, or DRAGGAN_TRUST_PROXY=1)."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("DRAGGAN_TRUST_PROXY") == "1"


def client_address(request: Any) -> str | None:
    """Who asks, for the per-client session bound: the IP address. Behind a proxy we trust, the address the
    proxy saw: the last X-Forwarded-For entry (a visitor can forge the earlier ones, not the one the proxy
    appends). `request` is a Gradio request, or anything with `headers` and `client.host`."""
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for") if hasattr(headers, "get") else None
    if forwarded and trusts_proxy():
        return forwarded.split(",")[-1].strip()[:64]
    return getattr(getattr(request, "client", None), "host", None)


def max_experiment_pairs(public: bool) -> int:
    """How many pairs one experiment may use on this server."""
    return PUBLIC_EXPERIMENT_PAIRS if public else TRUSTED_EXPERIMENT_PAIRS
