"""What a user asks for (``VideoCreateRequest``) and what the engine runs (``GenerationParams``).

A request is model-agnostic; ``resolve_request`` checks it against one model's ``ModelLimits``
and fills defaults. It never rounds: a value the model cannot take is rejected, naming the field.
"""

from __future__ import annotations

import enum
import functools
import re
import secrets
from fractions import Fraction

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from reelserve.schemas.errors import invalid
from reelserve.schemas.inputs import ImageReference, LoraRef, LoraRequest
from reelserve.schemas.suggest import frame_counts, multiples, nearest, nearest_sizes, spelled

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**63 - 1
MAX_SECONDS = 3600.0  # no model comes near: a bound that keeps seconds*fps finite
MAX_FLOW_SHIFT = 20.0  # past Wan's 720p value (12 for the A14B T2V): nearly every step at high noise
MAX_DEADLINE_S = 366 * 86400.0  # longer than any tier allows; the tier's own bound is checked on placement
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_DECIMAL_RE = re.compile(r"\d{1,6}(\.\d{1,6})?")
_SECONDS_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
        {"type": "string", "pattern": "^\\d{1,6}(\\.\\d{1,6})?$", "description": "OpenAI's spelling, e.g. \"4\""},
        {"type": "null"},
    ],
    "description": "duration; frames = seconds*fps + 1",
}


def _not_blank(value: str) -> str:
    """A prompt must say something: whitespace alone is refused."""
    if not value.strip():
        raise ValueError("must contain more than whitespace")
    return value


class CacheOptions(BaseModel):
    """Per-request control of the result cache (``VideoCreateRequest.cache``); None means the server's default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="false: this request neither reads nor writes the cache")
    semantic: bool | None = Field(
        default=None, description="also accept a cached video of a prompt close in meaning (same other params)"
    )
    min_similarity: float | None = Field(
        default=None, ge=0.5, le=1.0, description="cosine similarity a semantic match needs"
    )


class VideoCreateRequest(BaseModel):
    """Body of ``POST /v1/videos`` (JSON or form). Unknown fields are rejected, and so are non-finite
    numbers. The API validates JSON strictly (a number sent as a string is refused); ``seconds`` alone
    also takes a decimal string, because OpenAI's API spells it so (``"4"``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, allow_inf_nan=False)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    size: str | None = Field(default=None, description="'WxH', e.g. '832x480'")
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    num_frames: int | None = Field(default=None, gt=0)
    seconds: Annotated[float | None, WithJsonSchema(_SECONDS_SCHEMA)] = Field(
        default=None, gt=0, le=MAX_SECONDS, description="duration; frames = seconds*fps + 1"
    )
    fps: int | None = Field(default=None, gt=0, le=120)
    num_inference_steps: int | None = Field(default=None, gt=0)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    guidance_scale_2: float | None = Field(default=None, ge=0, le=50)
    flow_shift: float | None = Field(default=None, gt=0, le=MAX_FLOW_SHIFT, description="the sampler's timestep "
                                     "shift (higher: more steps at high noise); default the adapter's, else the model's")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    preview_every: int | None = Field(
        default=None, ge=0, description="send a live preview (SSE 'preview' event, GET .../preview) every this many "
        "steps; 0: none; None: the server's default",
    )
    cache: CacheOptions | None = None
    priority: str | None = Field(
        default=None, description="tier name, e.g. 'realtime', 'standard', 'batch'; within what the API key allows"
    )
    deadline_seconds: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_S,
        description="finish within this many seconds of acceptance, or be told at once",
    )
    allow_degrade: bool | None = Field(
        default=None, description="may the server run fewer steps or frames under load; None: the tier's default"
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL the final video object is POSTed to, signed per Standard Webhooks",
    )
    input_reference: str | ImageReference | None = Field(
        default=None, description="the first frame (image to video): in JSON a data URL 'data:image/png;base64,...' "
        "or {\"image_url\": data URL}; in multipart, the image file. PNG, JPEG or WebP",
    )
    input_fit: Literal["crop", "pad", "resize"] | None = Field(
        default=None, description="how an input_reference or input_video of another size is made the video's size; "
        "without it, another size is refused",
    )
    input_video: str | None = Field(
        default=None, description="a clip to re-draw (video to video): in JSON a data URL 'data:video/mp4;base64,...'; "
        "in multipart, the MP4 file. The video has its frame count unless num_frames says otherwise",
    )
    strength: float | None = Field(
        default=None, gt=0, le=1, description="with input_video: the share of the steps that re-draw it "
        "(1: from almost pure noise); default 0.5",
    )
    loras: list[LoraRequest] | None = Field(
        default=None, max_length=16, description="LoRA adapters to run with, by name (GET /v1/adapters), each "
        "with a scale (default 1); rows of any adapters share the server's batches",
    )

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_openai_spells_it(cls, value: object) -> object:
        if isinstance(value, str):
            if not _DECIMAL_RE.fullmatch(value):
                raise ValueError(f'must be a number of seconds, e.g. 4 or "4"; got {value[:20]!r}')
            return float(value)
        return value

    _prompt_not_blank = field_validator("prompt")(_not_blank)


class VideoRemixRequest(BaseModel):
    """Body of ``POST /v1/videos/{id}/remix``: OpenAI's ``prompt``, plus how much to re-draw and the usual
    per-request parameters. The size, clip length and frame rate are the source video's."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    strength: float | None = Field(
        default=None, gt=0, le=1, description="share of the steps that re-draw the source (default 0.5): "
        "lower keeps more of it",
    )
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    num_inference_steps: int | None = Field(default=None, gt=0)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    guidance_scale_2: float | None = Field(default=None, ge=0, le=50)
    flow_shift: float | None = Field(default=None, gt=0, le=MAX_FLOW_SHIFT)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    preview_every: int | None = Field(default=None, ge=0)
    cache: CacheOptions | None = None
    priority: str | None = None
    deadline_seconds: float | None = Field(default=None, gt=0, le=MAX_DEADLINE_S)
    allow_degrade: bool | None = None
    webhook_url: str | None = Field(default=None, max_length=2048)

    _prompt_not_blank = field_validator("prompt")(_not_blank)


class ModelLimits(BaseModel):
    """What one model accepts, and what it uses when a request leaves a field out."""

    spatial_multiple: int
    temporal_multiple: int = 4
    max_width: int
    max_height: int
    max_frames: int
    max_steps: int
    default_width: int
    default_height: int
    default_frames: int
    default_fps: int
    default_steps: int
    default_guidance: float
    two_experts: bool = False
    # What besides a prompt the model takes: a first frame ("none", "optional", or "required" for an
    # image-to-video-only model), and a clip to re-draw (remix, input_video).
    image_input: Literal["none", "optional", "required"] = "none"
    video_input: bool = True
    max_loras: int = 0  # the server's setting: adapters one request may name (0: none taken)
    flow_shift: bool = True  # the served weights' sampler takes a timestep shift (``sampler_traits``)
    default_preview_every: int = 0  # the server's setting, not the model's: 0, no previews unless asked


class Role(enum.Flag):
    """What a generation parameter is for; every field of ``GenerationParams`` declares its roles,
    and the batch key and the cache signature are derived from them (``fields_with``)."""

    BATCH = enum.auto()  # shapes the pipeline call: rows of one call share it (the batch key)
    # The tensors' shape (also BATCH, and declared first, so a batch key starts with its shape key):
    # a row of another batch key of this shape may join a running batch (continuous batching).
    SHAPE = enum.auto()
    ROW = enum.auto()  # may differ between the rows of one call
    PIXELS = enum.auto()  # changes the output: part of the cache signature
    PUBLIC = enum.auto()  # shown on the video object and described in the model's parameters


class ShapeKey(str):
    """Where a batch key is asked for: matches every batch key of one shape (``GenerationParams.shape_key``:
    the same model and tensor shape), whatever its other fields (steps, guidance). Continuous batching
    takes these: rows of one shape can share the engine's calls at any step."""

    def matches(self, batch_key: str) -> bool:
        return batch_key.startswith(self + "|") or batch_key == self


@functools.cache
def _fields_with(params: type[GenerationParams], role: Role) -> tuple[str, ...]:
    return tuple(name for name in params.model_fields if role in params.roles(name))


class GenerationParams(BaseModel):
    """A fully resolved request: everything the pipeline needs, nothing left to default."""

    model_config = ConfigDict(frozen=True)

    model: Annotated[str, Role.BATCH | Role.SHAPE | Role.PIXELS | Role.PUBLIC]
    prompt: Annotated[str, Role.ROW | Role.PIXELS | Role.PUBLIC]
    negative_prompt: Annotated[str, Role.ROW | Role.PIXELS | Role.PUBLIC] = ""
    width: Annotated[int, Role.BATCH | Role.SHAPE | Role.PIXELS | Role.PUBLIC]
    height: Annotated[int, Role.BATCH | Role.SHAPE | Role.PIXELS | Role.PUBLIC]
    num_frames: Annotated[int, Role.BATCH | Role.SHAPE | Role.PIXELS | Role.PUBLIC]
    fps: Annotated[int, Role.ROW | Role.PIXELS | Role.PUBLIC]  # only the encoder reads it
    num_inference_steps: Annotated[int, Role.BATCH | Role.PIXELS | Role.PUBLIC]
    guidance_scale: Annotated[float, Role.BATCH | Role.PIXELS | Role.PUBLIC]
    guidance_scale_2: Annotated[float | None, Role.BATCH | Role.PIXELS | Role.PUBLIC] = None
    # The sampler's shift (None: the model's own); each row has its own scheduler, so any shifts share a call.
    flow_shift: Annotated[float | None, Role.ROW | Role.PIXELS | Role.PUBLIC] = None
    seed: Annotated[int, Role.ROW | Role.PIXELS | Role.PUBLIC]
    # Every this many steps the running row's preview goes out (0: none); it changes no pixel.
    preview_every: Annotated[int, Role.ROW | Role.PUBLIC] = 0
    # Image to video: "sha256:" and the digest of the first frame's pixels as fitted, and how it was
    # fitted (None: it had the video's size). The image itself is stored with the job (``job_inputs``).
    input_reference: Annotated[str | None, Role.ROW | Role.PIXELS | Role.PUBLIC] = None
    input_fit: Annotated[str | None, Role.ROW | Role.PIXELS | Role.PUBLIC] = None
    # Remix and video to video: the digest of the clip the row re-draws (a video's final latents, or
    # a clip's frames), stored with the job; ``strength`` of the run re-draws it (None: from noise).
    # A strength changes the steps run, so rows of one call share it (a joiner need not).
    source: Annotated[str | None, Role.ROW | Role.PIXELS] = None
    strength: Annotated[float | None, Role.BATCH | Role.PIXELS | Role.PUBLIC] = None
    # LoRA adapters, unmerged and per row: rows of any adapter sets share a call.
    loras: Annotated[tuple[LoraRef, ...], Role.ROW | Role.PIXELS | Role.PUBLIC] = ()

    @classmethod
    def roles(cls, name: str) -> Role:
        """The roles field ``name`` declares (an empty ``Role`` if it declares none)."""
        return next((m for m in cls.model_fields[name].metadata if isinstance(m, Role)), Role(0))

    @classmethod
    def fields_with(cls, role: Role) -> tuple[str, ...]:
        """The fields declaring ``role``, in declaration order (worked out once per class and role:
        a request's batch key alone asks about ten times on its way through the server)."""
        return _fields_with(cls, role)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def steps_run(self) -> int:
        """The steps the run takes: all of them, or with a ``strength`` (re-drawing a clip) the last
        ``int(steps · strength)`` of the schedule, as diffusers' ``WanVideoToVideoPipeline`` counts
        them. At least one: a request that runs none is refused, but degrading may cut steps later."""
        steps = self.num_inference_steps
        return steps if self.strength is None else max(1, min(int(steps * self.strength), steps))

    @property
    def seconds(self) -> str:
        """Clip length as the OpenAI API spells it: a string, integral when it is one."""
        value = Fraction(self.num_frames - 1, self.fps)
        return str(value.numerator) if value.denominator == 1 else f"{float(value):.3f}".rstrip("0")

    def batch_key(self) -> str:
        """Requests with equal keys can share one pipeline call: every ``Role.BATCH`` field."""
        return "|".join(f"{name}={getattr(self, name)!r}" for name in self.fields_with(Role.BATCH))

    def shape_key(self) -> ShapeKey:
        """Rows with equal shape keys can share the engine's calls once running, whatever their steps
        and guidance (``waiting.ShapeKey``: it matches their batch keys)."""
        return ShapeKey("|".join(f"{name}={getattr(self, name)!r}" for name in self.fields_with(Role.SHAPE)))


def resolve_request(req: VideoCreateRequest, model: str, limits: ModelLimits) -> GenerationParams:
    """Check ``req`` against ``limits`` and fill defaults; raises ``ReelserveError`` naming the field."""
    width, height = _resolve_size(req, limits)
    fps = req.fps if req.fps is not None else limits.default_fps
    num_frames = _resolve_frames(req, fps, limits)
    steps = req.num_inference_steps if req.num_inference_steps is not None else limits.default_steps
    if steps > limits.max_steps:
        raise invalid(
            "num_inference_steps",
            f"num_inference_steps: {model} runs at most {limits.max_steps} steps; got {steps}, "
            f"try {limits.max_steps} or fewer (default {limits.default_steps})",
        )
    guidance = req.guidance_scale if req.guidance_scale is not None else limits.default_guidance
    guidance_2 = req.guidance_scale_2
    if guidance_2 is not None and not limits.two_experts:
        raise invalid("guidance_scale_2", f"guidance_scale_2 is only for two-expert models; {model} has one")
    if limits.two_experts and guidance_2 is None:
        guidance_2 = guidance
    return GenerationParams(
        model=model,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt or "",
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        num_inference_steps=steps,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        flow_shift=req.flow_shift,
        seed=req.seed if req.seed is not None else secrets.randbelow(MAX_SEED),
        preview_every=_resolve_preview_every(req, steps, limits),
    )


def _resolve_preview_every(req: VideoCreateRequest, steps: int, limits: ModelLimits) -> int:
    """A request's own value must be a step of its run; the server's default applies as it is (a
    run shorter than it sends no preview)."""
    if req.preview_every is None:
        return limits.default_preview_every
    if req.preview_every > steps:
        raise invalid(
            "preview_every", f"preview_every: a preview every {req.preview_every} steps never comes in a run of "
            f"{steps} steps; send 1 to {steps} (a preview every that many steps), or 0 for none",
        )
    return req.preview_every


def _resolve_size(req: VideoCreateRequest, limits: ModelLimits) -> tuple[int, int]:
    if req.size is not None and (req.width is not None or req.height is not None):
        raise invalid("size", "size: give either size or width and height, not both")
    if req.size is not None:
        match = _SIZE_RE.match(req.size)
        if not match:
            raise invalid(
                "size", f"size: must look like 'WxH', e.g. '{limits.default_width}x{limits.default_height}'; "
                f"got {req.size[:40]!r}"
            )
        width, height = int(match[1]), int(match[2])
        field_w = field_h = "size"
    else:
        width = req.width if req.width is not None else limits.default_width
        height = req.height if req.height is not None else limits.default_height
        field_w, field_h = "width", "height"
    m = limits.spatial_multiple
    for name, value, field, maximum in (
        ("width", width, field_w, limits.max_width),
        ("height", height, field_h, limits.max_height),
    ):
        if value % m or not m <= value <= maximum:
            raise invalid(field, _size_message(field, name, value, width, height, limits))
    return width, height


def _size_message(field: str, name: str, value: int, width: int, height: int, limits: ModelLimits) -> str:
    m = limits.spatial_multiple
    if field == "size":
        near = nearest_sizes(width, height, m, limits.max_width, limits.max_height)
        return (f"size: width and height must be multiples of {m} up to {limits.max_width}x{limits.max_height}; "
                f"got {width}x{height}, nearest: {near}")
    maximum = limits.max_width if name == "width" else limits.max_height
    near = spelled(nearest(value, multiples(m, maximum)))
    return f"{name}: must be a multiple of {m} from {m} to {maximum}; got {value}, nearest: {near}"


def _resolve_frames(req: VideoCreateRequest, fps: int, limits: ModelLimits) -> int:
    k = limits.temporal_multiple
    if req.num_frames is not None and req.seconds is not None:
        raise invalid("num_frames", "num_frames: give either num_frames or seconds, not both")
    if req.seconds is not None:
        frames_f = req.seconds * fps
        valid_seconds = [(n - 1) / fps for n in frame_counts(k, limits.max_frames) if n > 1]
        try_seconds = spelled(nearest(req.seconds, valid_seconds))
        longest = (limits.max_frames - 1) // k * k
        if frames_f + 1 > limits.max_frames:
            raise invalid(
                "seconds", f"seconds: at {fps} fps this model makes at most {longest / fps:g} s "
                f"({longest + 1} frames); got {req.seconds:g}, try {try_seconds}"
            )
        if frames_f != int(frames_f) or int(frames_f) % k:
            raise invalid(
                "seconds", f"seconds: at {fps} fps, seconds·{fps} must be a whole multiple of {k} "
                f"(frames = seconds·fps + 1); got {req.seconds:g}, nearest: {try_seconds}"
            )
        return int(frames_f) + 1
    num_frames = req.num_frames if req.num_frames is not None else limits.default_frames
    if (num_frames - 1) % k or not 1 <= num_frames <= limits.max_frames:
        near = spelled(nearest(num_frames, frame_counts(k, limits.max_frames)))
        raise invalid(
            "num_frames", f"num_frames: must be {k}k+1 (1, {1 + k}, {1 + 2 * k}, …) up to {limits.max_frames}; "
            f"got {num_frames}, nearest: {near}"
        )
    return num_frames
