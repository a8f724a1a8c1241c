"""What a request brings besides its prompt, as the schemas name it: OpenAI's image reference object,
a multipart body's files, and the default share of the steps that re-draw a clip."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STRENGTH = 0.5  # remix and video to video: half the steps re-draw the source


class ImageReference(BaseModel):
    """OpenAI's reference object: an image by URL. Only a data URL is taken (the server fetches nothing)."""

    model_config = ConfigDict(extra="forbid")

    image_url: str = Field(min_length=1, description="a data URL, 'data:image/png;base64,...'")


@dataclass(frozen=True)
class Uploads:
    """The files of a multipart request, by field (JSON carries the same as data URLs)."""

    input_reference: bytes | None = None
    input_video: bytes | None = None
