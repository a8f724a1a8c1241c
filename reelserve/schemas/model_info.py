"""What ``GET /v1/models`` says about the served model: every parameter's default and legal range,
in the form a client (the playground) needs to never offer a value the API would reject."""

from __future__ import annotations

from typing import Any

from reelserve.schemas.requests import MAX_PROMPT_CHARS, MAX_SEED, ModelLimits

# The request schema's own bounds (VideoCreateRequest), repeated here as data.
MAX_FPS = 120
MAX_GUIDANCE = 50.0


def model_object(
    name: str, limits: ModelLimits, accelerations: list[str], priorities: list[str], default_priority: str
) -> dict[str, Any]:
    """The OpenAI ``model`` object plus reelserve's ``parameters``, ``accelerations`` and priorities."""
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
    }
    if limits.two_experts:
        parameters["guidance_scale_2"] = {"type": "number", "min": 0.0, "max": MAX_GUIDANCE,
                                          "default": limits.default_guidance}
    return {
        "id": name,
        "object": "model",
        "owned_by": "reelserve",
        "parameters": parameters,
        "accelerations": list(accelerations),
    }
