"""What ``GET /v1/models`` says about the served model: every parameter's default and legal range,
in the form a client (the playground) needs to never offer a value the API would reject."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from reelserve.schemas.inputs import DEFAULT_STRENGTH, MAX_LORA_SCALE
from reelserve.schemas.requests import MAX_FLOW_SHIFT, MAX_PROMPT_CHARS, MAX_SEED, GenerationParams, ModelLimits

# The request schema's own bounds (VideoCreateRequest), repeated here as data.
MAX_FPS = 120
MAX_GUIDANCE = 50.0


class ModelCard(BaseModel):
    """What a model can draw, said to its users: a plain description, prompts that work, and the clip
    shapes its weights were trained (and evaluated) at. Other legal shapes still run, with a warning,
    but a client offers the trained ones by default."""

    about: str = ""
    examples: list[str] = []
    trained_sizes: list[tuple[int, int]] = []  # (width, height); empty: no statement
    trained_frames: list[int] = []

    def shape_warning(self, params: GenerationParams) -> str | None:
        """A warning for a clip shape the weights never saw, or None."""
        size = (params.width, params.height)
        untrained = []
        if self.trained_sizes and size not in self.trained_sizes:
            untrained.append(f"size {params.width}x{params.height} (trained: {_sizes(self.trained_sizes)})")
        if self.trained_frames and params.num_frames not in self.trained_frames:
            trained = ", ".join(map(str, self.trained_frames))
            untrained.append(f"num_frames {params.num_frames} (trained: {trained})")
        if not untrained:
            return None
        return (f"{' and '.join(untrained)}: the model was not trained at this shape and may not follow "
                "the prompt; send a trained shape for the results it was measured at.")


def model_inputs(limits: ModelLimits) -> dict[str, Any]:
    """What the model takes besides a prompt: ``text`` (a prompt alone makes a video), ``image`` (a
    first frame: "optional", "required" or absent), ``video`` (a clip to re-draw, and remixes)."""
    inputs: dict[str, Any] = {"text": limits.image_input != "required"}
    if limits.image_input != "none":
        inputs["image"] = limits.image_input
    inputs["video"] = limits.video_input
    inputs["remix"] = limits.video_input
    return inputs


def _sizes(sizes: list[tuple[int, int]]) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sizes)


def model_object(
    name: str, limits: ModelLimits, accelerations: list[str], priorities: list[str], default_priority: str,
    card: ModelCard | None = None,
) -> dict[str, Any]:
    """The OpenAI ``model`` object plus reelserve's ``parameters``, ``accelerations`` and priorities,
    and the model card's ``about`` and ``examples``; a parameter the card states trained values for
    lists them as ``offered`` (the legal range stays wider)."""
    m, k = limits.spatial_multiple, limits.temporal_multiple
    parameters: dict[str, Any] = {
        "prompt": {"type": "string", "max_length": MAX_PROMPT_CHARS},
        "negative_prompt": {"type": "string", "max_length": MAX_PROMPT_CHARS, "default": ""},
        "width": {"type": "integer", "multiple_of": m, "min": m, "max": limits.max_width,
                  "default": limits.default_width},
        "height": {"type": "integer", "multiple_of": m, "min": m, "max": limits.max_height,
                   "default": limits.default_height},
        # Frames are k·n + 1 (the VAE's temporal stride); seconds = (frames - 1) / fps.
        "num_frames": {"type": "integer", "form": f"{k}n+1", "min": 1, "max": limits.max_frames,
                       "default": limits.default_frames},
        "fps": {"type": "integer", "min": 1, "max": MAX_FPS, "default": limits.default_fps},
        "num_inference_steps": {"type": "integer", "min": 1, "max": limits.max_steps, "default": limits.default_steps},
        "guidance_scale": {"type": "number", "min": 0.0, "max": MAX_GUIDANCE, "default": limits.default_guidance},
        "seed": {"type": "integer", "min": 0, "max": MAX_SEED, "default": None},
        "priority": {"type": "string", "enum": priorities, "default": default_priority},
        "preview_every": {"type": "integer", "min": 0, "max": limits.max_steps, "default": limits.default_preview_every},
    }
    if limits.flow_shift:
        parameters["flow_shift"] = {"type": "number", "min": 0.0, "exclusive_min": True, "max": MAX_FLOW_SHIFT,
                                    "default": None,
                                    "about": "the sampler's timestep shift; default: the adapter's, else the model's scheduler's"}
    if limits.image_input != "none":
        parameters["input_reference"] = {"type": "image", "formats": ["png", "jpeg", "webp"],
                                         "required": limits.image_input == "required"}
    if limits.image_input != "none" or limits.video_input:
        parameters["input_fit"] = {"type": "string", "enum": ["crop", "pad", "resize"], "default": None}
    if limits.video_input:
        parameters["input_video"] = {"type": "video", "formats": ["mp4", "webm"]}
        parameters["strength"] = {"type": "number", "min": 0.0, "exclusive_min": True, "max": 1.0,
                                  "default": DEFAULT_STRENGTH}
    parameters["loras"] = {"type": "array", "max_items": limits.max_loras, "default": [],
                           "items": {"name": "an adapter of GET /v1/adapters",
                                     "scale": {"type": "number", "min": -MAX_LORA_SCALE, "max": MAX_LORA_SCALE,
                                               "default": 1.0}}}
    if limits.two_experts:
        parameters["guidance_scale_2"] = {"type": "number", "min": 0.0, "max": MAX_GUIDANCE,
                                          "default": limits.default_guidance}
    card = card or ModelCard()
    if card.trained_sizes:
        parameters["width"]["offered"] = sorted({w for w, _ in card.trained_sizes})
        parameters["height"]["offered"] = sorted({h for _, h in card.trained_sizes})
    if card.trained_frames:
        parameters["num_frames"]["offered"] = sorted(card.trained_frames)
    return {
        "id": name,
        "object": "model",
        "owned_by": "reelserve",
        "parameters": parameters,
        "accelerations": list(accelerations),
        "inputs": model_inputs(limits),
        "about": card.about,
        "examples": list(card.examples),
    }
