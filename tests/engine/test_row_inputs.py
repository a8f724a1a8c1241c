"""The worker's side of a job's inputs: first frames and clips read from storage, encoded once by
digest (the image-latent cache), and each finished row's final latents kept for remixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reelserve.engine.denoise_loop import denoise
from reelserve.engine.row_inputs import RowInputs, latents_bytes, latents_from
from reelserve.engine.storage_keys import latents_key, reference_key, source_latents_key
from reelserve.inputs.images import to_png
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_ti2v_5b_layout
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams
from reelserve.storage.local import LocalStorage

SIZE = 32


def params(seed: int, **inputs: object) -> GenerationParams:
    return GenerationParams(model="tiny", prompt="a red circle", width=SIZE, height=SIZE, num_frames=5, fps=8,
                            num_inference_steps=4, guidance_scale=1.0, seed=seed, **inputs)


def test_a_first_frame_is_encoded_once_for_every_row_that_starts_from_it(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    family = WanFamily(build_ti2v_5b_layout(0), TINY_MAX_SEQUENCE_LENGTH)
    picture = np.random.default_rng(1).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    for job in ("a", "b"):
        storage.put(reference_key(job), to_png(picture))
    inputs = RowInputs(storage)
    rows = [("a", params(1, input_reference="sha256:same")), ("b", params(2, input_reference="sha256:same")),
            ("text", params(3))]
    with torch.inference_mode():
        starts = inputs.starts(family, rows)
        again = inputs.starts(family, rows[:1])
        expected = family.encode_first_frame(picture, rows[0][1])
    assert set(starts) == {"a", "b"} and inputs.loads == 1  # one digest, one read and encode, for both rows and again
    assert torch.equal(starts["a"].condition, expected) and torch.equal(again["a"].condition, expected)


def test_a_source_is_read_from_its_latents_and_finished_rows_keep_theirs(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    family = WanFamily(build_ti2v_5b_layout(0), TINY_MAX_SEQUENCE_LENGTH)
    inputs = RowInputs(storage, keep_latents=True, max_entries=0)
    with torch.inference_mode():
        (first,) = family.prepare_rows([("first", params(1))])
        denoise(family, [first], after_step=lambda group: inputs.finished(family, group))
        kept = latents_from(storage.get(latents_key("first")))
        assert torch.equal(kept, family.final_latents(first))
        storage.put(source_latents_key("remix"), latents_bytes(kept))  # as the front stages a remix of it
        remix = params(2, source="sha256:kept", strength=0.5)
        starts = inputs.starts(family, [("remix", remix)])
    assert torch.equal(starts["remix"].source, kept) and inputs.loads == 1
