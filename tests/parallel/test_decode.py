"""A decode shared among ranks. Where the VAE tiles, the tiles are shared: decoded one by one and blended
by ``decode.py``, they make the very video diffusers' tiled decode makes (to the bit, with and without
patching or batch slicing); in a group of two, one row's tiles are split between the ranks and rank 0
ends with the single process's video. Elsewhere the rows are shared."""

from __future__ import annotations

import functools

import pytest
import torch

from parallel_builds import SMALL_TILES, build
from reelserve.models.latent_space import denormalise
from reelserve.models.tiny import build_ti2v_5b_layout, build_tiny_pipeline
from reelserve.models.wan_family import WanFamily
from reelserve.parallel.decode import assemble, decode_tile, tiles_of
from reelserve.parallel.family import ParallelWanFamily
from reelserve.parallel.layout import ParallelLayout
from reelserve.parallel.commands import GroupSpec
from reelserve.parallel.ranks import ParallelRanks

LAYOUTS = {"tiny": build_tiny_pipeline, "ti2v-5b": build_ti2v_5b_layout}


def latents(vae: object, rows: int, size: int = 48) -> torch.Tensor:
    """Normalised latents of ``rows`` 5-frame ``size``x``size`` videos."""
    ratio = vae.spatial_compression_ratio  # type: ignore[attr-defined]
    channels = vae.config.z_dim  # type: ignore[attr-defined]
    return torch.randn(rows, channels, 2, size // ratio, size // ratio, generator=torch.Generator().manual_seed(rows))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("slicing", [False, True])
def test_tiles_decoded_one_by_one_blend_into_diffusers_tiled_decode(layout: str, slicing: bool) -> None:
    vae = LAYOUTS[layout](0).vae
    vae.enable_tiling(**SMALL_TILES)
    if slicing:
        vae.enable_slicing()
    z = denormalise(vae, latents(vae, rows=2))
    tiles = tiles_of(vae, tuple(z.shape))
    assert tiles is not None and len(tiles) == (2 if slicing else 1) * 9
    with torch.inference_mode():
        expected = vae.decode(z, return_dict=False)[0]
        ours = assemble(vae, tuple(z.shape), {tile: decode_tile(vae, z, tile) for tile in tiles})
    assert torch.equal(ours, expected)


def test_no_tiles_where_the_vae_would_not_tile() -> None:
    vae = build_tiny_pipeline(0).vae
    assert tiles_of(vae, (1, 16, 2, 6, 6)) is None  # tiling off
    vae.enable_tiling(**SMALL_TILES)
    assert tiles_of(vae, (1, 16, 2, 4, 4)) is None  # one tile's size: decoded whole
    assert tiles_of(vae, (1, 16, 2, 6, 6)) is not None


@pytest.mark.parametrize(("model", "batches"), [("tiny", (1, 3)), ("ti2v-5b", (1,))])
def test_two_ranks_share_the_tiles_and_rank_0_ends_with_one_process_video(model: str, batches: tuple[int, ...]) -> None:
    """For each batch size (rows) in turn, on one group."""
    pipeline, _, _ = build(f"{model}-tiled", 0)
    inputs = {rows: latents(pipeline.vae, rows) for rows in batches}
    calls = [0]
    pipeline.vae.decoder.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with torch.inference_mode():
        alone = {rows: WanFamily(pipeline, 16)._decode_latents(z) for rows, z in inputs.items()}
    single_calls, calls[0] = calls[0], 0
    ranks = ParallelRanks(GroupSpec(ParallelLayout(ulysses=2), functools.partial(build, f"{model}-tiled"), threads=1),
                          pipeline, None)
    ranks.start()
    try:
        with torch.inference_mode():
            shared = {rows: ParallelWanFamily(pipeline, 16, ranks)._decode_latents(z) for rows, z in inputs.items()}
    finally:
        ranks.close()
    for rows in batches:
        assert torch.equal(shared[rows], alone[rows]), rows
    assert 0 < calls[0] <= single_calls // 2 + 2 * len(batches)  # rank 0 decoded about half the tiles (frames each)
