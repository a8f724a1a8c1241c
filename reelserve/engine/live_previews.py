"""Live previews, the lane's side: after a step at which a row asks for one (every ``preview_every``
steps), its x0 estimate becomes a small animated WebP through the model's ``PreviewMap``
(``models/previews.py``: no VAE decode), handed to the loop (``previews.PreviewOut``). A run in which
no row asks makes none, and costs one integer test a row a step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from reelserve.models.previews import PreviewMap, fit_preview_map, preview_image

log = logging.getLogger(__name__)

OnPreview = Callable[[str, int, int, bytes], None]  # (job id, step done, total steps, WebP bytes)


class PreviewMaps:
    """One model's ``PreviewMap``, fitted once: at load (``fit``) when the server previews by default,
    else on the first preview asked for; shared by the model's lanes (they share its VAE)."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        self._map: PreviewMap | None = None
        self._lock = threading.Lock()

    def get(self) -> PreviewMap:
        with self._lock:
            if self._map is None:
                started = time.perf_counter()
                self._map = fit_preview_map(self._pipeline)
                log.info("live previews: latent-to-RGB map fitted in %.2f s (mean error %.3f on its samples)",
                         time.perf_counter() - started, self._map.fit_error)
            return self._map


class LivePreviews:
    """``denoise``'s ``after_step``: a preview of each row due one, handed to ``on_preview``. Never
    fails the batch: a preview that cannot be made is logged and skipped."""

    def __init__(self, family: Any, maps: PreviewMaps, on_preview: OnPreview) -> None:
        self.family, self.maps, self.on_preview = family, maps, on_preview

    def __call__(self, rows: list[Any]) -> None:
        for row in rows:
            every = row.params.preview_every
            if every <= 0 or row.step % every or row.done:  # the last step's picture is the video itself
                continue
            try:
                self.on_preview(row.key, row.step, len(row.timesteps), self.image(row))
            except Exception as exc:  # noqa: BLE001 - a preview is a courtesy; the video goes on
                log.warning("preview of %s at step %d failed (%s: %s)", row.key, row.step, type(exc).__name__, exc)

    def image(self, row: Any) -> bytes:
        params = row.params
        frames = self.maps.get().to_rgb(self.family.x0_estimate(row))
        return preview_image(frames, params.fps / self.family.frames_per_latent, (params.width, params.height))
