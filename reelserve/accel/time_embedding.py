"""The time embedding of a row computed once, not once per token, when every token shares its timestep.

With ``expand_timesteps`` (Wan2.2-TI2V-5B, the micro model) the pipeline gives every latent token
its own timestep, so that image to video can hold the first frame at timestep 0, and the
transformer runs its time MLP (``time_embedder``, then ``time_proj`` to six modulation vectors) on
every token. In text to video all of a row's tokens have the same timestep: the MLP then repeats
the same input per token. On the micro model (80 tokens a row) that is about a tenth of the
transformer's FLOPs; on the 5B at 480p about 1.5 %.

``SharedTimeEmbedding`` wraps the condition embedder's ``forward``: when each row's timesteps are
all equal it embeds one per row and hands it on as a sequence of one token, which the blocks'
modulation broadcasts over the row's tokens. (It was expanded to every token, a view; but each block
then added its modulation table to a per-token copy, ``[rows, tokens, 6, dim]``, and took its
shifts, scales and gates as strided slices of it: on the micro model a batch-8 forward took 66 ms,
about 8 of them there. Broadcasting computes every element the same way: the same bits.)
Otherwise (a row with a held first frame) it runs as asked. The MLP's matrix products then have
fewer rows, which can round differently (equal bits for 8 and more rows here, not for 1-3): the
videos equal the per-token path within float rounding, as CFG batching's do (tested; 3.4e-5 at
most on micro's [0, 1] pixels against diffusers' call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class SharedTimeEmbedding:
    """Wraps one transformer's ``condition_embedder.forward``. ``shared`` counts the calls that
    embedded one timestep per row, ``full`` those that ran per token as asked."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.embedder: torch.nn.Module = transformer.condition_embedder
        self._inner: Callable[..., Any] = self.embedder.forward
        self.shared = 0
        self.full = 0
        self.embedder.forward = self._forward

    def remove(self) -> None:
        del self.embedder.forward  # the class's own again

    def _forward(self, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 encoder_hidden_states_image: torch.Tensor | None = None,
                 timestep_seq_len: int | None = None) -> Any:
        if timestep_seq_len is not None and timestep_seq_len > 1:
            per_row = timestep.view(-1, timestep_seq_len)
            if bool((per_row == per_row[:, :1]).all()):
                temb, projected, text, image = self._inner(
                    per_row[:, 0].contiguous(), encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=1
                )
                self.shared += 1
                return temb, projected, text, image  # [rows, 1, ...]: the blocks broadcast it
        self.full += 1
        return self._inner(timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=timestep_seq_len)
