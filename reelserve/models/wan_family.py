"""The Wan family: every layout reelserve serves (tiny and Wan2.1-style, micro and the
Wan2.2-TI2V-5B layout with ``expand_timesteps``, the A14B two-expert layouts with their boundary)
through the ``ModelFamily`` seam, step for step what ``WanPipeline.__call__`` does (text to video) and
``WanImageToVideoPipeline.__call__`` (image to video: ``models/image_conditioning.py``, the two kinds).
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from reelserve.models.family import Row, RowStart
from reelserve.models.image_conditioning import image_conditioning
from reelserve.models.latent_space import denormalise, normalise
from reelserve.models.lora import LoraBank
from reelserve.schemas import GenerationParams

Encode = Callable[[list[str]], torch.Tensor]


class WanFamily:
    """:param pipeline: a loaded ``WanPipeline``, or a ``WanImageToVideoPipeline`` (its modules; its
        ``__call__`` is never used).
    :param encode: prompts to embeddings, one row each (the runner passes its cached encoder).
    :param adapters: the bank behind the transformers' ``MultiLoraLinear`` layers, for rows with ``loras``."""

    def __init__(self, pipeline: Any, max_sequence_length: int, encode: Encode | None = None,
                 adapters: LoraBank | None = None) -> None:
        self.pipeline = pipeline
        # LoRA adapters per row (``models/lora.py``), installed in the transformers; None: none taken.
        self.adapters = adapters
        self.max_sequence_length = max_sequence_length
        self.encode = encode or (lambda prompts: encode_texts(pipeline, prompts, max_sequence_length))
        config = pipeline.config
        ratio = getattr(config, "boundary_ratio", None)
        # The A14B layout: the high-noise expert down to this timestep, the low-noise one after it.
        self.boundary = None if ratio is None else ratio * pipeline.scheduler.config.num_train_timesteps
        self.expand_timesteps = bool(getattr(config, "expand_timesteps", False))
        self.image = image_conditioning(pipeline)  # how a first frame conditions a row, if it can
        self._dtypes: dict[int, torch.dtype] = {}  # id(transformer) -> its dtype

    def prepare_rows(self, rows: list[tuple[str, GenerationParams]],
                     starts: dict[str, RowStart] | None = None) -> list[Row]:
        starts = starts or {}
        pipe, device = self.pipeline, self.pipeline._execution_device
        for key, params in rows:
            self.image.check(pipe, key, params, starts.get(key, RowStart()).condition)
        prompts = self.encode([p.prompt for _, p in rows])
        guided = [i for i, (_, p) in enumerate(rows) if p.guidance_scale > 1.0]
        negatives = self.encode([rows[i][1].negative_prompt for i in guided]).split(1) if guided else ()
        negative_of = dict(zip(guided, negatives, strict=True))
        prepared = []
        for i, (key, params) in enumerate(rows):
            latents = self._noise(params, device)
            scheduler = self._scheduler(params)
            scheduler.set_timesteps(params.num_inference_steps, device=device)
            start = starts.get(key, RowStart())
            first = first_step(params)
            scheduler.set_begin_index(first)
            timesteps = scheduler.timesteps[first:]
            if first or params.strength is not None:
                if start.source is None:
                    raise ValueError(f"row {key} has a strength but no source latents to start from")
                # WanVideoToVideoPipeline's start: the source noised to the first step run (the seed's noise).
                latents = scheduler.add_noise(start.source.to(device, torch.float32), latents, timesteps[:1])
            prepared.append(Row(key, params, latents, scheduler, timesteps, prompts[i : i + 1],
                                negative_of.get(i), condition=start.condition))
        return prepared

    def _scheduler(self, params: GenerationParams) -> Any:
        """The row's own scheduler (multistep ones keep past outputs per sample): the pipeline's, or with
        the row's ``flow_shift`` the same one with that shift."""
        if params.flow_shift is None:
            return copy.deepcopy(self.pipeline.scheduler)
        base = self.pipeline.scheduler
        if "flow_shift" not in base.config:
            raise ValueError(f"{type(base).__name__} takes no flow_shift")
        return type(base).from_config({**base.config, "flow_shift": params.flow_shift})

    def _noise(self, params: GenerationParams, device: torch.device) -> torch.Tensor:
        """The row's seed's noise, (1, C, F, h, w) float32, as both pipelines' ``prepare_latents`` draw it
        (C: the VAE's channels; an I2V transformer takes more, its condition's)."""
        pipe = self.pipeline
        frames = (params.num_frames - 1) // pipe.vae_scale_factor_temporal + 1
        spatial = pipe.vae_scale_factor_spatial
        shape = (1, self.image.noise_channels(pipe), frames, params.height // spatial, params.width // spatial)
        generator = torch.Generator(device=device).manual_seed(params.seed)
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    def encode_first_frame(self, pixels: np.ndarray, params: GenerationParams) -> torch.Tensor:
        """An image as the row's ``condition``, as ``WanImageToVideoPipeline.prepare_latents`` makes it for
        this layout: the first frame's latents (TI2V), or mask and latent condition (I2V-A14B)."""
        return self.image.encode(self.pipeline, pixels, params)

    def encode_video(self, frames: np.ndarray, params: GenerationParams) -> torch.Tensor:
        """A clip's latents (``frames``: (F, H, W, 3) uint8 at the row's shape) as
        ``WanVideoToVideoPipeline.prepare_latents`` makes them: preprocessed, encoded (the mode), normalised."""
        pipe, vae = self.pipeline, self.pipeline.vae
        video = pipe.video_processor.preprocess_video([Image.fromarray(frame) for frame in frames],
                                                      height=params.height, width=params.width)
        video = video.to(vae.device, vae.dtype)  # (1, 3, F, H, W)
        return normalise(vae, vae.encode(video).latent_dist.mode().to(pipe._execution_device, torch.float32))

    def group_key(self, row: Row) -> Hashable:
        """One call serves one expert (A14B: by the row's timestep) and guidance on or off alike."""
        return self._high_noise(row.timestep), row.negative_embeds is not None

    def _high_noise(self, t: torch.Tensor) -> bool:
        return self.boundary is None or bool(t >= self.boundary)

    def denoise_step(self, rows: list[Row]) -> torch.Tensor:
        t = rows[0].timestep
        high_noise = self._high_noise(t)
        model = self.pipeline.transformer if high_noise else self.pipeline.transformer_2
        dtype = self._dtype(model)
        latents = self.image.model_input(rows).to(dtype)
        timesteps = torch.stack([row.timestep for row in rows])  # each row its own: rows may be at any step
        # TI2V: every latent token carries its row's timestep; a first frame's, 0.
        timestep = self.image.timestep(rows, timesteps, latents.shape)
        first = rows[0]
        # diffusers' step caches keep the two branches apart by this context, as in the pipeline;
        # Pyramid Attention Broadcast reads the step's timestep off the pipeline.
        context = {"step_index": first.step, "sigma": float(first.scheduler.sigmas[first.step]),
                   "num_inference_steps": len(first.timesteps)}
        self.pipeline._current_timestep = t
        with self._adapters(rows):  # one plan of the rows' adapters serves both branches
            return self._guided(model, rows, latents, timestep, context, dtype, high_noise)

    def _guided(self, model: Any, rows: list[Row], latents: torch.Tensor, timestep: torch.Tensor,
                context: dict[str, Any], dtype: torch.dtype, high_noise: bool) -> torch.Tensor:
        """The cond branch, and with guidance the uncond one and their mix, each row at its own scale."""
        prompts = torch.cat([row.prompt_embeds for row in rows]).to(dtype)
        with model.cache_context("cond", **context):
            cond = model(hidden_states=latents, timestep=timestep, encoder_hidden_states=prompts, return_dict=False)[0]
        if rows[0].negative_embeds is None:
            return cond
        negatives = torch.cat([row.negative_embeds for row in rows]).to(dtype)  # type: ignore[misc]
        with model.cache_context("uncond", **context):
            uncond = model(hidden_states=latents, timestep=timestep, encoder_hidden_states=negatives,
                           return_dict=False)[0]
        return self._mix(rows, cond, uncond, high_noise)

    def _mix(self, rows: list[Row], cond: torch.Tensor, uncond: torch.Tensor, high_noise: bool) -> torch.Tensor:
        """Classifier-free guidance, each row at its own scale."""
        scales = [self._guidance(row, high_noise) for row in rows]
        scale = torch.tensor(scales, device=cond.device, dtype=cond.dtype).view(-1, 1, 1, 1, 1)
        return uncond + scale * (cond - uncond)

    def _adapters(self, rows: list[Row]) -> AbstractContextManager[None]:
        """The rows' adapters for the transformer calls inside (both branches of guidance alike)."""
        wanted = [tuple((ref.sha256, ref.scale) for ref in row.params.loras) for row in rows]
        if not any(wanted):
            return nullcontext()
        if self.adapters is None:
            raise ValueError("rows with LoRA adapters need a model loaded with an adapter bank")
        return self.adapters.rows(wanted)

    def _dtype(self, model: Any) -> torch.dtype:
        """``model.dtype``, read once: diffusers walks every submodule for it, 0.7 ms a read on the
        CPU (3 % of a micro batch at three reads a step). Loading and accelerating are done by now."""
        dtype = self._dtypes.get(id(model))
        if dtype is None:
            dtype = self._dtypes[id(model)] = model.dtype
        return dtype

    @staticmethod
    def _guidance(row: Row, high_noise: bool) -> float:
        second = row.params.guidance_scale_2
        return row.params.guidance_scale if high_noise or second is None else second

    def scheduler_step(self, rows: list[Row], prediction: torch.Tensor) -> None:
        for i, row in enumerate(rows):
            row.latents = row.scheduler.step(prediction[i : i + 1], row.timestep, row.latents, return_dict=False)[0]
            row.step += 1

    def x0_estimate(self, row: Row) -> torch.Tensor:
        """The row's current estimate of its clean latents: what its last step predicted. A multistep
        scheduler that predicts x0 (Wan's UniPC, DPM-Solver++) keeps it as its last model output;
        before the first step, or with another scheduler, the latents themselves (noisier)."""
        outputs = getattr(row.scheduler, "model_outputs", None)
        config = row.scheduler.config
        predicts_x0 = getattr(config, "predict_x0", False) or getattr(config, "algorithm_type", "") == "dpmsolver++"
        estimate = outputs[-1] if outputs and outputs[-1] is not None and predicts_x0 else row.latents
        return self.image.video_latents(row, estimate)

    def final_latents(self, row: Row) -> torch.Tensor:
        return self.image.video_latents(row)

    @property
    def frames_per_latent(self) -> int:
        """Video frames one latent frame stands for (the VAE's temporal stride)."""
        return int(self.pipeline.vae_scale_factor_temporal)

    def decode(self, rows: list[Row]) -> list[np.ndarray]:
        vae = self.pipeline.vae
        latents = torch.cat([self.image.video_latents(row) for row in rows]).to(vae.device, vae.dtype)
        return self._frames(self._decode_latents(latents))

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, F, h, w) to the VAE's video (B, 3, F, H, W)."""
        vae = self.pipeline.vae
        return vae.decode(denormalise(vae, latents), return_dict=False)[0]

    def _frames(self, video: torch.Tensor) -> list[np.ndarray]:
        frames = self.pipeline.video_processor.postprocess_video(video, output_type="np")
        return [np.asarray(clip) for clip in frames]


def first_step(params: GenerationParams) -> int:
    """The step of the schedule a row starts at: 0, or for a ``strength`` the steps it leaves out."""
    return params.num_inference_steps - params.steps_run


def encode_texts(pipeline: Any, prompts: list[str], max_sequence_length: int) -> torch.Tensor:
    """One batch of prompts through the pipeline's own ``encode_prompt``, without guidance."""
    embeds, _ = pipeline.encode_prompt(
        prompts, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
        device=pipeline._execution_device,
    )
    return embeds
