"""A model family is one module: this toy one (no diffusers, no weights) is served by the same
runner and loop as Wan, with batching, cancellation and out-of-memory splitting, in a few lines.
docs/architecture.md's "Add a model family" walks through the same steps."""

from __future__ import annotations

import numpy as np
import torch

from reelserve.engine.runner import PipelineRunner
from reelserve.models.family import Row
from reelserve.schemas import GenerationParams

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class FlatColourFamily:
    """Denoises a video towards one flat colour named in the prompt; each row from its own seed."""

    def __init__(self) -> None:
        self.evaluated: list[int] = []  # rows per step

    def prepare_rows(self, rows: list[tuple[str, GenerationParams]]) -> list[Row]:
        prepared = []
        for key, params in rows:
            generator = torch.Generator().manual_seed(params.seed)
            noise = torch.randn(1, 3, params.num_frames, params.height, params.width, generator=generator)
            colour = torch.tensor(COLOURS.get(params.prompt.split()[0], (0.5, 0.5, 0.5)))
            timesteps = torch.linspace(1.0, 0.0, params.num_inference_steps + 1)[:-1]
            prepared.append(Row(key, params, noise, None, timesteps, colour.view(1, 3, 1, 1, 1), None))
        return prepared

    def group_key(self, row: Row) -> None:
        return None  # any rows, at any steps, in one evaluation

    def denoise_step(self, rows: list[Row]) -> torch.Tensor:
        self.evaluated.append(len(rows))
        return torch.cat([row.latents - row.prompt_embeds for row in rows])  # the "noise" left

    def scheduler_step(self, rows: list[Row], prediction: torch.Tensor) -> None:
        for i, row in enumerate(rows):
            row.latents = row.latents - prediction[i : i + 1] / (len(row.timesteps) - row.step)
            row.step += 1

    def decode(self, rows: list[Row]) -> list[np.ndarray]:
        return [row.latents[0].permute(1, 2, 3, 0).clamp(0, 1).numpy() for row in rows]


def params(prompt: str, seed: int) -> GenerationParams:
    return GenerationParams(model="toy", prompt=prompt, width=8, height=4, num_frames=3, fps=8,
                            num_inference_steps=5, guidance_scale=1.0, seed=seed)


def test_the_runner_serves_a_toy_family_batched_and_cancellable() -> None:
    family = FlatColourFamily()
    runner = PipelineRunner(None, torch.device("cpu"), 0, family=family)
    batch = [("r", params("red please", 1)), ("g", params("green", 2)), ("b", params("blue", 3))]
    steps: list[int] = []
    outcome = runner.run(batch, on_step=lambda keys, step, total: steps.append(step),
                         should_stop=lambda key: key == "g" and steps[-1] >= 2)
    assert outcome.stopped_at == {"g": 2} and set(outcome.frames) == {"r", "b"}
    assert family.evaluated == [3, 3, 2, 2, 2]  # one forward per step for the live rows
    assert outcome.frames["r"].shape == (3, 4, 8, 3)
    assert np.allclose(outcome.frames["r"], [1.0, 0.0, 0.0]) and np.allclose(outcome.frames["b"], [0.0, 0.0, 1.0])
    [call] = outcome.calls
    assert (call.batch_size, call.steps) == (3, 5)
