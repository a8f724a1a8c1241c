"""bench/gpu/step_timing: the toy run times every model, resolution and non-compiled acceleration; the FLOPs
estimate matches a hand count and torch's own FLOP counter; the full-size configs have the published sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.gpu.step_timing import build_meta_transformer, build_transformer, forward_flops, main, make_inputs
from reelserve.planning.wan_sizes import MODELS, T2V_A14B, TI2V_5B, toy

CPU = torch.device("cpu")


def test_toy_run_reports_a_positive_step_time_for_every_model_resolution_and_acceleration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "toy.json"
    # `compiled` works on CPU too but takes minutes to compile; int8 needs CUDA and must say so.
    main(["--toy", "--accelerations", "eager,cfg-batched,int8", "--steps", "2", "--warmup", "1", "--out", str(out)])

    report = json.loads(out.read_text())
    assert report["machine"]["torch"] == torch.__version__
    rows = {(r["model"], r["resolution"], r["acceleration"]): r for r in report["results"]}
    assert len(rows) == 2 * 2 * 3
    for model in ("ti2v-5b", "a14b"):
        for resolution in ("480p", "720p"):
            for acceleration in ("eager", "cfg-batched"):
                row = rows[(model, resolution, acceleration)]
                assert row["ms_per_step"] > 0, row
                assert row["tflops_per_s"] > 0, row
            assert rows[(model, resolution, "int8")]["ms_per_step"] is None
            assert "needs CUDA" in rows[(model, resolution, "int8")]["note"]
    assert rows[("ti2v-5b", "720p", "eager")]["size"] == "96x96x9"
    assert rows[("ti2v-5b", "720p", "eager")]["latent"] == "48x3x6x6"
    assert rows[("a14b", "480p", "eager")]["latent"] == "16x3x8x8"

    table = capsys.readouterr().out
    assert "| ti2v-5b | 720p | 96x96x9" in table
    assert "cfg-batched" in table


def test_full_size_on_cpu_is_refused_with_a_pointer_to_toy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cpu", "--model", "ti2v-5b"])
    assert exit_info.value.code == 2
    assert "--toy" in capsys.readouterr().err


def test_forward_flops_matches_a_hand_count_for_a_tiny_config() -> None:
    config = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
              "ffn_dim": 64, "text_dim": 8, "freq_dim": 4, "out_channels": 4}
    # d = 32, latent 4 x 1 x 4 x 4 -> 1 x 2 x 2 = 4 tokens, 3 text tokens.
    flops = forward_flops(config, (4, 1, 4, 4), text_len=3)
    assert flops.projections == (
        8 * 4 * 32 * 32  # self-attention QKVO: 4 matmuls x 2 FLOPs x T d^2 = 32768
        + 4 * 4 * 32 * 32  # cross-attention Q, O = 16384
        + 4 * 3 * 32 * 32  # cross-attention K, V over 3 text tokens = 12288
        + 4 * 4 * 32 * 64  # feed-forward = 32768
    ) == 94208
    assert flops.attention == 4 * 4 * 4 * 32 + 4 * 4 * 3 * 32 == 3584  # 4 T^2 d + 4 T L d
    assert flops.embeddings == (
        2 * 4 * 16 * 32  # patch embedding, 4 channels x 2 x 2 patch = 16 inputs per token
        + 2 * 3 * (8 * 32 + 32 * 32)  # text embedder
        + 2 * 1 * (4 * 32 + 32 * 32 + 32 * 6 * 32)  # time embedder + 6-way projection, one timestep
        + 2 * 4 * 32 * 16  # output projection
    ) == 30464
    assert flops.total == 128256
    per_token = forward_flops(config, (4, 1, 4, 4), text_len=3, per_token_timesteps=True)
    assert per_token.embeddings - flops.embeddings == 3 * 2 * (4 * 32 + 32 * 32 + 32 * 6 * 32)


def test_doubling_frames_more_than_doubles_attention_flops() -> None:
    config, vae = TI2V_5B.transformer, TI2V_5B.vae
    short = forward_flops(config, vae.latent_shape(61, 1280, 704), TI2V_5B.text_len)
    long = forward_flops(config, vae.latent_shape(121, 1280, 704), TI2V_5B.text_len)
    assert vae.latent_frames(61) * 2 - 1 == vae.latent_frames(121) == 31
    assert long.attention > 2 * short.attention
    assert long.projections < 2.1 * short.projections  # linear in tokens, plus the fixed text K/V


@pytest.mark.parametrize("model", [TI2V_5B, T2V_A14B], ids=lambda m: m.name)
def test_forward_flops_equals_torchs_flop_counter_on_the_toy_model(model) -> None:
    small = toy(model)
    transformer = build_transformer(small.transformer, CPU, torch.float32)
    for width, height in small.resolutions.values():
        shape = small.latent_shape(width, height)
        inputs = make_inputs(small, shape, CPU, torch.float32)
        # The math backend runs attention as bmm, which the counter sees; the fused CPU kernel it does not.
        with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            transformer(inputs.latents, inputs.timestep, inputs.prompt, return_dict=False)
        assert counter.get_total_flops() == forward_flops(small.transformer, shape, small.text_len,
                                                          small.per_token_timesteps).total


def test_latent_geometry_of_720p() -> None:
    assert TI2V_5B.latent_shape(1280, 704) == (48, 31, 44, 80)  # 31 x 22 x 40 = 27,280 tokens
    assert T2V_A14B.latent_shape(1280, 720) == (16, 21, 90, 160)  # 21 x 45 x 80 = 75,600 tokens
    # 720 / 16 = 45 latent rows: a whole VAE latent, but not whole 2x2 patches.
    with pytest.raises(ValueError, match="height of 32"):
        TI2V_5B.latent_shape(1280, 720)
    with pytest.raises(ValueError, match="spatial factor"):
        T2V_A14B.vae.latent_shape(81, 1280, 724)


@pytest.mark.parametrize(("name", "expected"), [("ti2v-5b", 5.0e9), ("a14b", 14e9)])
def test_full_size_configs_build_on_meta_with_the_published_parameter_counts(name: str, expected: float) -> None:
    transformer = build_meta_transformer(MODELS[name].transformer)
    assert all(p.is_meta for p in transformer.parameters())
    count = sum(p.numel() for p in transformer.parameters())
    assert abs(count - expected) / expected < 0.10, count
    assert transformer.config.num_layers == MODELS[name].transformer["num_layers"]


def test_random_weights_are_seeded_and_rope_tables_are_real() -> None:
    config = toy(TI2V_5B).transformer
    first, second = (build_transformer(config, CPU, torch.float32, seed=3) for _ in range(2))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    fresh_rope = type(first.rope)(first.rope.attention_head_dim, first.rope.patch_size, first.rope.max_seq_len)
    assert torch.equal(first.rope.freqs_cos, fresh_rope.freqs_cos)
    assert torch.isfinite(next(first.blocks[0].parameters())).all()
