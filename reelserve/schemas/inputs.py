"""What a request brings besides its prompt, as the schemas name it: OpenAI's image reference object,
a multipart body's files, and the default share of the steps that re-draw a clip."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STRENGTH = 0.5  # remix and video to video: half the steps re-draw the source
MAX_LORA_SCALE = 4.0  # an adapter's scale in a request: from -4 to 4


class ImageReference(BaseModel):
    """OpenAI's reference object: an image by URL. Only a data URL is taken (the server fetches nothing)."""

    model_config = ConfigDict(extra="forbid")

    image_url: str = Field(min_length=1, description="a data URL, 'data:image/png;base64,...'")


@dataclass(frozen=True)
class Uploads:
    """The files of a multipart request, by field (JSON carries the same as data URLs)."""

    input_reference: bytes | None = None
    input_video: bytes | None = None


class LoraRequest(BaseModel):
    """One adapter a request asks for (``loras``), by name."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=128)
    scale: float = Field(default=1.0, ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)


class LoraRef(BaseModel):
    """One adapter a row runs with: its name (as shown), its content hash (what the worker loads and
    the cache keys on) and its scale."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    scale: float
