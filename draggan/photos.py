"""Real photos in sessions: who may hold a tuned generator copy, and the manager's photo methods.

A photo session edits its own tuned copy of the generator (Pivotal Tuning Inversion, `pti`), never
shared. The copy lives as long as the session shows the photo. At most `max_photos` sessions may hold a
copy at once, an inversion in progress included (`PhotoSlots`); at the bound a new inversion is refused
(`PhotoLimitError`) rather than taking another user's photo away. The perceptual network loads once per
device, on the first inversion, and is shared read-only.

Imports nothing from Gradio; errors meant for the user are `UserError`s.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pti import (EmbeddingError, ImageInputError, InversionResult, PerceptualDistance, PTIPreset, StageMetrics,
                 embedding_info, invert, load_embedding, load_image, load_inversion_loss, save_embedding)
from pti.image_io import content_width
from pti.inversion import Progress
from stylegan2.checkpoints import CheckpointError, portable_spec

from .config import DragInputError

PerceptualLoader = Callable[[str], PerceptualDistance]  # device -> perceptual distance


def _short_names(message: str, path: str | os.PathLike) -> str:
    """An upload's temporary path in a message -> its file name."""
    return message.replace(os.fspath(path), Path(path).name)


def read_photo(path: str | os.PathLike, resolution: int, crop: tuple[int, int, int, int] | None = None,
               width: int | None = None,
               ) -> tuple[np.ndarray, list[str]]:
    """pti.load_image with its errors as DragInputErrors that name the file, not its temporary path."""
    try:
        return load_image(path, resolution, crop, width=width)
    except ImageInputError as e:
        raise DragInputError(_short_names(str(e), path)) from None



class PhotoLimitError(DragInputError):
    """As many sessions as allowed already hold a tuned generator copy."""



class PhotoSlots:
    """Who may hold a tuned generator copy: at most `limit` keys at once, with the cancel event of each inversion.

    An inversion takes its session's slot (`reserve`) for its whole length and gives it back
    (`release`); a photo session keeps holding one through `held` (the manager's photo sessions).
    `arm` records an inversion asked for but still waiting in a queue, so `cancel` reaches it too.
    """

    def __init__(self, limit: int, held: Callable[[], dict[str, str | None]], per_client: int | None = None):
        """limit: copies at once; held: {key: client} of sessions that show a photo now (called under no lock of
        ours); per_client: copies one client may hold at once (None: no bound of its own)."""
        assert limit >= 0
        self.limit = limit
        self.per_client = per_client
        self._held = held
        self._lock = threading.Lock()
        self._inverting: dict[str, threading.Event] = {}  # key -> cancel event of its inversion in progress
        self._clients: dict[str, str | None] = {}         # key -> client of its inversion in progress
        self._armed: dict[str, threading.Event] = {}      # key -> cancel event of the inversion it asked for

    def taken(self) -> set[str]:
        held = self._held()  # the manager's lock, never taken while ours is held (it calls `inverting`)
        with self._lock:
            return set(held) | set(self._inverting)

    def arm(self, key: str) -> None:
        with self._lock:
            armed = self._armed.get(key)
            if armed is None or armed.is_set():
                self._armed[key] = threading.Event()

    def cancel(self, key: str) -> bool:
        """Cancel the inversion of `key` in progress and the one it asked for; False if there was none."""
        with self._lock:
            events = [e for e in (self._inverting.get(key), self._armed.get(key)) if e is not None]
        for e in events:
            e.set()
        return bool(events)

    def inverting(self, key: str) -> bool:
        with self._lock:
            return key in self._inverting

    def reserve(self, key: str, client: str | None = None) -> threading.Event:
        """Take a slot for `key`'s inversion; returns its cancel event. PhotoLimitError at the bound, or at the
        client's own bound (its other photo sessions and inversions)."""
        held = self._held()  # the manager's lock, never taken while ours is held (it calls `inverting`)
        with self._lock:
            if key in self._inverting:
                raise DragInputError("A photo is already being inverted in this session: wait for it, or press Cancel")
            owners = {**held, **self._clients}                      # key -> client, every copy held now
            if key not in owners and len(owners) >= self.limit:
                raise PhotoLimitError(f"Too many photo sessions right now (all {self.limit} in use): try again "
                                      "in a few minutes; generated images can be edited meanwhile")
            mine = [k for k, c in owners.items() if client is not None and c == client and k != key]
            if self.per_client is not None and len(mine) >= self.per_client:
                raise PhotoLimitError(f"You already have {len(mine)} photo session(s) open here (the bound per "
                                      "visitor): close that tab, or use it for this photo")
            cancel = self._armed.pop(key, None) or threading.Event()
            self._inverting[key], self._clients[key] = cancel, client
            return cancel

    def release(self, key: str) -> None:
        with self._lock:
            self._inverting.pop(key, None)
            self._clients.pop(key, None)

    def forget(self, key: str) -> None:
        """The session `key` ended: cancel whatever it asked for."""
        self.cancel(key)
        with self._lock:
            self._armed.pop(key, None)



class PhotoSessions:
    """SessionManager's real-photo half (a mixin): inversions, embeddings, the photo slots and the shared
    perceptual network. It uses the manager's `device`, `slots`, `compute`, `generator`, `get`, `sweep`,
    `_sessions`, `_lock`, `_install` and `_photo_session`, and sets up its own state in `_init_photos`.
    """

    def _init_photos(self, max_photos: int, perceptual_loader: PerceptualLoader | None,
                     photos_per_client: int | None = None) -> None:
        self.photos = PhotoSlots(max_photos, self._photo_keys, photos_per_client)
        self._load_perceptual = perceptual_loader or load_inversion_loss  # LPIPS, else the offline pixel loss
        self._perceptual: dict[str, PerceptualDistance] = {}
        self._perceptual_lock = threading.Lock()

    @property
    def max_photos(self) -> int:
        return self.photos.limit

    def perceptual(self) -> PerceptualDistance:
        """The inversion loss on this manager's device, loaded on first use and shared read-only: LPIPS, or
        offline (no perceptual weights and no Hub) the labelled pixel loss (`pti.load_inversion_loss`), which is
        then kept for the process. A damaged weights file (PerceptualWeightsError) is not remembered."""
        with self._perceptual_lock:
            net = self._perceptual.get(self.device)
            if net is None:
                net = self._load_perceptual(self.device).eval().requires_grad_(False)
                self._perceptual[self.device] = net
            return net

    def photo_count(self) -> int:
        """Sessions holding a tuned generator copy now: photo sessions and inversions in progress."""
        return len(self.photos.taken())

    def _photo_keys(self) -> dict[str, str | None]:
        """{key: client} of the sessions that show a photo now."""
        with self._lock:
            return {k: s.client for k, s in self._sessions.items() if s.photo is not None}

    def arm_invert(self, key: str) -> None:
        """Note that an inversion was asked for (before it waits in a queue), so a Cancel meanwhile stops it."""
        self.photos.arm(key)

    def cancel_invert(self, key: str) -> bool:
        """Cancel the inversion of `key` in progress (before its next step) and the one it asked for.

        Returns False if there was nothing to cancel. The session stays as it was.
        """
        return self.photos.cancel(key)

    def inverting(self, key: str) -> bool:
        return self.photos.inverting(key)

    def _reserve_photo(self, key: str, client: str | None = None) -> threading.Event:
        """Take a photo slot for `key`; returns the cancel event of its inversion."""
        self.sweep()  # expired photo sessions give their slots back
        current = self._sessions.get(key)
        if current is not None and current.running:
            raise DragInputError("Wait for the drag to finish (or press Stop) before inverting a photo")
        return self.photos.reserve(key, client)

    def invert_photo(self, key: str, model: str, photo: str | os.PathLike, preset: PTIPreset,
                     crop: tuple[int, int, int, int] | None = None, latent_space: str = "w+",
                     progress: Progress | None = None, client: str | None = None) -> tuple[Any, list[str]]:
        """Invert the photo file into `model` (PTI) and make it the session `key`, a photo session.

        crop: (x0, y0, x1, y1) in pixels of the upright photo, None for the centre square. progress:
        called after every step with (stage 'project' | 'tune', step, total, loss). Returns the
        session and notes on how the photo was prepared. Raises pti.InversionCancelled when
        `cancel_invert(key)` is called (the session stays as it was), PhotoLimitError at the bound,
        DragInputError for an unusable photo, CheckpointError when a model or the perceptual weights
        cannot be loaded. Whatever goes wrong, the old session is untouched.
        """
        cancel = self._reserve_photo(key, client)
        slot = False
        try:
            G = self.generator(model)
            target, notes = read_photo(photo, G.img_resolution, crop, content_width(G))
            perceptual = self.perceptual()
            slot = self.slots.acquire(cancel, who=cancel)
            result = invert(G, target, perceptual, preset, progress=progress, cancel=cancel)
            session = self._photo_session(key, model, result, latent_space, client)
            self._install(session, "inverting a photo")
            return session, notes
        finally:
            if slot:
                self.slots.release(cancel)
            self.photos.release(key)

    def load_photo(self, key: str, path: str | os.PathLike, latent_space: str = "w+",
                   client: str | None = None) -> Any:
        """Make the session `key` a photo session from an embedding file (`save_photo`, `draggan invert`).

        Its base model is loaded by the spec the file names (the loader's policy applies). Raises
        EmbeddingError for a file that is not an embedding, is damaged, or was made with other weights
        than that model has here; the old session is untouched.
        """
        name = Path(path).name
        try:
            info = embedding_info(path)
        except EmbeddingError as e:
            raise EmbeddingError(_short_names(str(e), path)) from None
        self._reserve_photo(key, client)
        try:
            try:
                base = self.generator(info.model_spec)
            except CheckpointError as e:
                raise EmbeddingError(f"{name} was made with a model that cannot be loaded here: {e}") from None
            try:
                G, pivot = self.compute.call(load_embedding, path, self.device, base_G=base)
            except EmbeddingError as e:
                raise EmbeddingError(_short_names(str(e), path)) from None
            try:
                result = InversionResult(G, pivot, info.target, PTIPreset(**info.preset),
                                         StageMetrics(**info.metrics["projection"]),
                                         StageMetrics(**info.metrics["tuning"]),
                                         loss=info.metrics.get("loss", "the perceptual loss"))
            except (TypeError, KeyError):
                raise EmbeddingError(f"{name}: its metadata does not fit this version of the app; make it "
                                     "again with `python -m draggan invert`") from None
            if result.target is None:  # written without the photo: keep its reconstruction instead
                result.target = self.compute.call(result.image)
            session = self._photo_session(key, info.model_spec, result, latent_space, client)
            self._install(session, "loading a photo")
            return session
        finally:
            self.photos.release(key)

    def save_photo(self, key: str) -> Path:
        """The photo session `key` as an embedding file in its workdir (the photo as inverted, not as dragged)."""
        session = self.get(key)
        if session.photo is None:
            raise DragInputError("This image is generated, not a photo: invert a photo first to save its embedding")
        path = session.workdir() / "draggan-photo.safetensors"
        return save_embedding(path, session.photo, self.generator(session.model), portable_spec(session.model))
