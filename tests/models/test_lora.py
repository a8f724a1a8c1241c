"""LoRA adapters per row, unmerged: a row co-batched with rows of other adapter sets equals the same
request run alone with the adapters loaded by diffusers' own LoRA loading (PEFT) within float
tolerance, and a row without adapters equals the base model exactly."""

from __future__ import annotations

import io
from pathlib import Path
import numpy as np
import pytest
import torch
from lora_files import lora_file
from safetensors.torch import save

from reelserve.engine.denoise_loop import denoise
from reelserve.models.lora import LoraBank, LoraFormatError, check_fits, install, linear_shapes, read_lora
from reelserve.models.specs import TINY_MAX_SEQUENCE_LENGTH
from reelserve.models.tiny import build_tiny_pipeline
from reelserve.models.wan_family import WanFamily
from reelserve.schemas import GenerationParams
from reelserve.schemas.inputs import LoraRef

def params(seed: int, adapters: tuple[tuple[str, float], ...] = ()) -> GenerationParams:
    loras = tuple(LoraRef(name=name, sha256=name, scale=scale) for name, scale in adapters)
    return GenerationParams(model="tiny", prompt="a red circle moving right", width=32, height=32, num_frames=5,
                            fps=8, num_inference_steps=4, guidance_scale=5.0, seed=seed, loras=loras)


def run(family: WanFamily, rows: list[tuple[str, GenerationParams]]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        frames, _ = denoise(family, family.prepare_rows(rows), mixed_steps=True)
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("loras")
    for name, seed in (("a", 1), ("b", 2)):
        lora_file(directory / f"{name}.safetensors", seed)
    return {name: directory / f"{name}.safetensors" for name in ("a", "b")}


@pytest.fixture(scope="module")
def ours(files: dict[str, Path]) -> WanFamily:
    pipe = build_tiny_pipeline(0)
    bank = LoraBank(lambda name: read_lora(files[name].read_bytes()), torch.device("cpu"), torch.float32)
    install(pipe.transformer, bank)
    return WanFamily(pipe, TINY_MAX_SEQUENCE_LENGTH, adapters=bank)


def diffusers_alone(files: dict[str, Path], p: GenerationParams) -> np.ndarray:
    """``p`` alone on a pipeline with its adapters loaded and set by diffusers (PEFT layers)."""
    pipe = build_tiny_pipeline(0)
    for ref in p.loras:
        pipe.load_lora_weights(str(files[ref.name]), adapter_name=ref.name)
    if p.loras:
        pipe.set_adapters([ref.name for ref in p.loras], adapter_weights=[ref.scale for ref in p.loras])
    return run(WanFamily(pipe, TINY_MAX_SEQUENCE_LENGTH), [("x", p.model_copy(update={"loras": ()}))])["x"]


def test_co_batched_rows_equal_diffusers_lora_loading_and_the_plain_row_the_base(
        files: dict[str, Path], ours: WanFamily) -> None:
    rows = [("none", params(1)), ("a", params(2, (("a", 1.0),))), ("b", params(3, (("b", 0.6),))),
            ("ab", params(4, (("a", 0.5), ("b", 1.3))))]
    together = run(ours, rows)
    # The same batch on the plain model: the row without adapters is exactly its row there.
    plain = run(WanFamily(build_tiny_pipeline(0), TINY_MAX_SEQUENCE_LENGTH),
                [(key, p.model_copy(update={"loras": ()})) for key, p in rows])
    assert np.array_equal(together["none"], plain["none"])
    for key, p in rows[1:]:
        reference = diffusers_alone(files, p)
        assert np.abs(together[key] - reference).max() <= 1e-4, key
        assert np.abs(together[key] - plain[key]).max() > 1e-2, key  # the adapter made a difference


def test_community_format_with_alpha_reads_as_diffusers_reads_it(tmp_path: Path) -> None:
    """Wan's original key names (``diffusion_model.blocks.N.self_attn.q.lora_down``) with an alpha: the
    converter folds alpha / rank into the pair."""
    generator = torch.Generator().manual_seed(0)
    down, up = torch.randn(4, 32, generator=generator), torch.randn(32, 4, generator=generator)
    tensors = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
               "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(8.0)}
    weights = read_lora(save(tensors))
    a, b = weights.pairs["blocks.0.attn1.to_q"]
    assert torch.allclose(b @ a, (up @ down) * 2.0, atol=1e-5)  # alpha 8 / rank 4


def test_files_that_are_no_lora_for_this_model_are_refused(files: dict[str, Path]) -> None:
    shapes = linear_shapes(build_tiny_pipeline(0).transformer)
    check_fits(read_lora(files["a"].read_bytes()), shapes)
    with pytest.raises(LoraFormatError, match="another model"):
        check_fits(read_lora(files["a"].read_bytes()), {k: (i + 1, o) for k, (i, o) in shapes.items()})
    with pytest.raises(LoraFormatError, match="safetensors"):
        read_lora(files["a"].read_bytes()[:100])  # truncated
    pickled = io.BytesIO()
    torch.save({"transformer.x.lora_A.weight": torch.zeros(1)}, pickled)
    with pytest.raises(LoraFormatError, match="safetensors"):
        read_lora(pickled.getvalue())  # a pickle is never unpickled


def test_the_bank_keeps_adapters_by_count_and_bytes(files: dict[str, Path]) -> None:
    events: list[str] = []
    size = read_lora(files["a"].read_bytes()).nbytes
    bank = LoraBank(lambda name: read_lora(files[name].read_bytes()), torch.device("cpu"), torch.float32,
                    max_adapters=4, max_bytes=size + size // 2, on_event=events.append)
    bank.weights("a")
    bank.weights("a")
    bank.weights("b")  # over the bytes: "a" goes
    bank.weights("a")
    assert events == ["load", "hit", "load", "evict", "load", "evict"]



def test_adapters_ride_along_when_cfg_batching_stacks_both_branches(files: dict[str, Path]) -> None:
    """CFG batching runs cond and uncond as one call of twice the rows: each copy of a row keeps its adapters."""
    from reelserve.accel.accelerate import accelerate
    from reelserve.accel.options import AccelerationOptions
    from reelserve.engine.runner import PipelineRunner

    rows = [("none", params(1)), ("ab", params(4, (("a", 0.5), ("b", 1.3))))]
    outcomes = []
    for cfg_batching in (False, True):
        pipe = build_tiny_pipeline(0)
        bank = LoraBank(lambda name: read_lora(files[name].read_bytes()), torch.device("cpu"), torch.float32)
        install(pipe.transformer, bank)
        accelerated = accelerate(pipe, AccelerationOptions(cfg_batching=cfg_batching), device=torch.device("cpu"),
                                 model="tiny")
        runner = PipelineRunner(pipe, torch.device("cpu"), TINY_MAX_SEQUENCE_LENGTH, accelerated=accelerated,
                                adapters=bank)
        outcomes.append(runner.run(rows).frames)
    for key, _ in rows:
        assert np.abs(outcomes[0][key] - outcomes[1][key]).max() <= 1e-5, key
