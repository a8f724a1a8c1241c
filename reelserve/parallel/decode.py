"""A decode shared among a parallel group's ranks, rank 0 ending with the whole video.

Where the VAE decodes in tiles (``--vae-tiling``, a video larger than one tile), the tiles are what is
shared: rank r decodes tiles r, r + world, ... of every row, the others send theirs to rank 0, which
blends them as diffusers' ``AutoencoderKLWan.tiled_decode`` does. That is the case that matters most: one
720p video is a single row, yet some thirty tiles. Each tile is decoded by the very calls
``tiled_decode`` makes, so the video is the one a single process decodes, to the bit. Elsewhere the rows
are shared: rank r decodes rows r, r + world, ... (the VAE decodes each row on its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

from reelserve.models.latent_space import denormalise


@dataclass(frozen=True)
class Tile:
    """Rows ``first``..``stop`` (all of them, or one where the VAE slices its batch) at latent ``(i, j)``."""

    first: int
    stop: int
    i: int
    j: int


def tiles_of(vae: Any, shape: tuple[int, ...]) -> list[Tile] | None:
    """The tiles ``vae.decode`` would decode latents of ``shape`` in, in its order; None if it would not tile."""
    batch, _, _, height, width = shape
    ratio = vae.spatial_compression_ratio
    min_height, min_width = vae.tile_sample_min_height // ratio, vae.tile_sample_min_width // ratio
    if not (vae.use_tiling and (width > min_width or height > min_height)):
        return None
    cuts = [(b, b + 1) for b in range(batch)] if vae.use_slicing and batch > 1 else [(0, batch)]
    stride_height, stride_width = vae.tile_sample_stride_height // ratio, vae.tile_sample_stride_width // ratio
    return [Tile(first, stop, i, j) for first, stop in cuts
            for i in range(0, height, stride_height) for j in range(0, width, stride_width)]


def decode_tile(vae: Any, z: torch.Tensor, tile: Tile) -> torch.Tensor:
    """One tile of denormalised latents decoded, frame by frame with the VAE's causal cache (``tiled_decode``'s
    inner loop)."""
    ratio = vae.spatial_compression_ratio
    height, width = vae.tile_sample_min_height // ratio, vae.tile_sample_min_width // ratio
    vae.clear_cache()
    frames = []
    for k in range(z.shape[2]):
        vae._conv_idx = [0]
        part = z[tile.first : tile.stop, :, k : k + 1, tile.i : tile.i + height, tile.j : tile.j + width]
        frames.append(vae.decoder(vae.post_quant_conv(part), feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=(k == 0)))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


def assemble(vae: Any, shape: tuple[int, ...], decoded: dict[Tile, torch.Tensor]) -> torch.Tensor:
    """The decoded tiles blended into the video, as ``tiled_decode`` blends them: (B, 3, F, H, W)."""
    ratio, patch = vae.spatial_compression_ratio, vae.config.patch_size or 1
    sample_height, sample_width = shape[3] * ratio // patch, shape[4] * ratio // patch
    stride_height, stride_width = vae.tile_sample_stride_height // patch, vae.tile_sample_stride_width // patch
    blend_height = vae.tile_sample_min_height // patch - stride_height
    blend_width = vae.tile_sample_min_width // patch - stride_width
    videos = []
    for first, stop in dict.fromkeys((tile.first, tile.stop) for tile in decoded):
        grid = [[decoded[tile] for tile in decoded if (tile.first, tile.i) == (first, i)]
                for i in dict.fromkeys(tile.i for tile in decoded if tile.first == first)]
        blended = []
        for i, row in enumerate(grid):
            cut = []
            for j, tile in enumerate(row):  # blends in place, in tiled_decode's order: its results depend on it
                if i > 0:
                    tile = vae.blend_v(grid[i - 1][j], tile, blend_height)
                if j > 0:
                    tile = vae.blend_h(row[j - 1], tile, blend_width)
                cut.append(tile[:, :, :, :stride_height, :stride_width])
            blended.append(torch.cat(cut, dim=-1))
        video = torch.cat(blended, dim=3)[:, :, :, :sample_height, :sample_width]
        if vae.config.patch_size is not None:
            video = unpatchify(video, patch_size=vae.config.patch_size)
        videos.append(torch.clamp(video, min=-1.0, max=1.0))
    return torch.cat(videos)


class SharedDecode:
    """One rank's part in shared decodes. :param vae: this rank's VAE (every rank's the same)."""

    def __init__(self, vae: Any, rank: int, world: int) -> None:
        self.vae, self.rank, self.world = vae, rank, world

    def shared(self, shape: tuple[int, ...]) -> bool:
        """Whether latents of ``shape`` are worth sharing: more than one row, or tiles."""
        return shape[0] > 1 or tiles_of(self.vae, shape) is not None

    def send_share(self, latents: torch.Tensor) -> None:
        """A follower's part: its tiles (each after its shape) or its rows, sent to rank 0."""
        tiles = tiles_of(self.vae, tuple(latents.shape))
        if tiles is None:
            if self.rank < latents.shape[0]:
                dist.send(self._rows(latents).contiguous(), dst=0)
            return
        z = self._denormalised(latents)
        # All decoded before the first send: a send waits for rank 0's receive, which comes only after rank
        # 0's own share, so sending each as it is done would run the ranks one after another.
        done = [decode_tile(self.vae, z, tile).contiguous() for tile in tiles[self.rank :: self.world]]
        for out in done:
            dist.send(torch.tensor(out.shape, dtype=torch.int64, device=out.device), dst=0)
            dist.send(out, dst=0)

    def gather(self, latents: torch.Tensor) -> torch.Tensor:
        """Rank 0's part: its own share, the others' received, the whole video: (B, 3, F, H, W)."""
        shape = tuple(latents.shape)
        tiles = tiles_of(self.vae, shape)
        if tiles is None:
            return self._gather_rows(latents)
        z = self._denormalised(latents)
        decoded = {tile: decode_tile(self.vae, z, tile) for tile in tiles[:: self.world]}
        dtype = decoded[tiles[0]].dtype
        for rank in range(1, self.world):
            for tile in tiles[rank :: self.world]:
                size = torch.empty(5, dtype=torch.int64, device=z.device)
                dist.recv(size, src=rank)
                decoded[tile] = torch.empty(tuple(size.tolist()), dtype=dtype, device=z.device)
                dist.recv(decoded[tile], src=rank)
        return assemble(self.vae, shape, {tile: decoded[tile] for tile in tiles})

    def _gather_rows(self, latents: torch.Tensor) -> torch.Tensor:
        mine = self._rows(latents)
        video = mine.new_empty((latents.shape[0], *mine.shape[1:]))
        video[:: self.world] = mine
        for rank in range(1, min(self.world, latents.shape[0])):
            part = mine.new_empty((len(range(rank, latents.shape[0], self.world)), *mine.shape[1:]))
            dist.recv(part, src=rank)
            video[rank :: self.world] = part
        return video

    def _rows(self, latents: torch.Tensor) -> torch.Tensor:
        """This rank's rows decoded: (b, 3, F, H, W) in the VAE's output range."""
        mine = latents[self.rank :: self.world].to(self.vae.device, self.vae.dtype)
        return self.vae.decode(denormalise(self.vae, mine), return_dict=False)[0]

    def _denormalised(self, latents: torch.Tensor) -> torch.Tensor:
        return denormalise(self.vae, latents.to(self.vae.device, self.vae.dtype))
