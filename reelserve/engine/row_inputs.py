"""The worker's side of a job's inputs (``job_inputs`` stored them): each row's first frame or clip to
re-draw, read from storage and encoded by the model's own VAE into the ``RowStart`` the family starts
the row from. Encoded latents are kept by digest in a bounded cache beside the text-embedding cache,
so an image or a source video shared by many rows (retries, remixes of one video, a popular first
frame) is encoded once. It also keeps each finished row's final latents, for remixes of its video.

Runs on the lane's thread, inside the runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from cachetools import LRUCache
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from reelserve.engine.storage_keys import latents_key, reference_key, source_clip_key, source_latents_key
from reelserve.inputs.images import Fit, from_png
from reelserve.inputs.videos import read_clip
from reelserve.models.family import ModelFamily, Row, RowStart
from reelserve.schemas import GenerationParams
from reelserve.storage.base import Storage

_LATENTS = "latents"  # the one tensor in a latents file


def latents_bytes(latents: torch.Tensor) -> bytes:
    """A clip's latents as safetensors (no pickle: a stored file is data, never code)."""
    return save_safetensors({_LATENTS: latents.detach().to("cpu", torch.float32).contiguous()})


def latents_from(data: bytes) -> torch.Tensor:
    return load_safetensors(data)[_LATENTS]


class RowInputs:
    """:param storage: where the front stored the inputs, and where final latents go.
    :param keep_latents: write each finished row's final latents (``latents_key``) for remixes.
    :param max_entries: encoded first frames and sources kept, by digest (0: none).
    :param on_lookup: told of each row's lookup, hit (True) or miss."""

    def __init__(self, storage: Storage, keep_latents: bool = False, max_entries: int = 32,
                 on_lookup: Callable[[bool], None] | None = None) -> None:
        self.storage = storage
        self.on_lookup = on_lookup  # told True for a hit, False for a miss (the metric)
        self.keep_latents = keep_latents
        self._encoded: LRUCache[tuple[str, str], torch.Tensor] | None = LRUCache(max_entries) if max_entries else None
        self._lock = threading.Lock()  # lanes share the cache
        self.loads = 0  # inputs read and encoded (a cache hit does neither): for tests

    def starts(self, family: ModelFamily, rows: list[tuple[str, GenerationParams]]) -> dict[str, RowStart]:
        """What each row with inputs starts from (rows without any are left out)."""
        starts = {}
        for key, params in rows:
            if params.input_reference is not None:
                condition = self._encoded_once(params.input_reference, params, lambda k=key, p=params: (
                    family.encode_first_frame(from_png(self.storage.get(reference_key(k))), p)))
                starts[key] = RowStart(condition=condition)
            elif params.source is not None:
                starts[key] = RowStart(source=self._encoded_once(params.source, params,
                                                                 lambda k=key, p=params: self._source(family, k, p)))
        return starts

    def _source(self, family: ModelFamily, key: str, params: GenerationParams) -> torch.Tensor:
        try:
            return latents_from(self.storage.get(source_latents_key(key)))
        except FileNotFoundError:
            pass
        fit = None if params.input_fit is None else Fit(params.input_fit)
        clip = read_clip(self.storage.get(source_clip_key(key)), params.width, params.height, params.num_frames, fit)
        return family.encode_video(clip.frames, params)

    def _encoded_once(self, digest: str, params: GenerationParams, encode: object) -> torch.Tensor:
        # The shape is part of the key: one image fitted to two sizes is two digests already, but a
        # source's bytes (a remix's MP4) are re-drawn at the one shape of its video.
        cache_key = (digest, params.shape_key())
        if self._encoded is not None:
            with self._lock:
                hit = self._encoded.get(cache_key)
            if hit is not None:
                if self.on_lookup is not None:
                    self.on_lookup(True)
                return hit
        if self.on_lookup is not None:
            self.on_lookup(False)
        latents = encode()  # type: ignore[operator]
        self.loads += 1
        if self._encoded is not None:
            with self._lock:
                self._encoded[cache_key] = latents
        return latents

    def finished(self, family: ModelFamily, rows: list[Row]) -> None:
        """Keep the final latents of the rows that just took their last step (``denoise``'s
        ``after_step``), under their jobs, for remixes."""
        if not self.keep_latents:
            return
        for row in rows:
            if row.done:
                self.storage.put(latents_key(row.key), latents_bytes(family.final_latents(row)))
