"""Every setting in one place. Each field is a ``reelserve serve`` flag and a ``REELSERVE_*`` env var."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reelserve.cache.policy import DEFAULT_SENSITIVE_PATTERNS
from reelserve.parallel.layout import ParallelLayout
from reelserve.schemas.slo import DEFAULT_DEGRADE_LEVELS, DEFAULT_TIERS, DegradeLevel, TenantPolicy, Tier
from reelserve.model_overrides import parse_overrides, served_models
from reelserve.secret_files import read_secret_files
from reelserve.webhooks.signing import decode_secret


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REELSERVE_", extra="ignore")
    _more_models: list[str] = PrivateAttr(default_factory=list)  # a repeated --model's others
    _overrides: dict[str, dict[str, object]] = PrivateAttr(default_factory=dict)  # --model-overrides, parsed

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    data_dir: Path = Field(Path("reelserve-data"), description="Jobs database and videos live here.")
    model: str = Field(
        "micro", description="Model to serve (see `reelserve models`). Repeat --model (or comma-separate) to serve "
        "several from one server, each with its own queue and batching, under --device-memory-mb; the first is "
        "the default for requests that name none.",
    )
    model_overrides: str = Field(
        "", description="With several models: flags that differ per model, 'MODEL:flag=value,...;MODEL:...' (e.g. "
        "'micro:preset=fast;tiny:max_batch_size=8,cfg_batching=false'): accelerations, --preset, --dtype, "
        "--max-batch-size, --max-wait-ms, --warmup-runs, --cpu-threads, --pipeline-lanes.",
    )
    device_memory_mb: int | None = Field(
        None, ge=1, description="With several models: the device memory their weights may take together. Models "
        "that do not fit wait off the device (host memory from a GPU, a spill file on CPU) and are brought in on "
        "demand, the least recently used idle one going out; unset: every model stays loaded.",
    )
    model_path: str | None = Field(
        None, description="Local directory or hub id for from_pretrained models (overrides the default)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the pipeline runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto is float32 on CPU, bfloat16 on CUDA."
    )
    cpu_offload: bool = Field(False, description="Offload idle sub-models to CPU (CUDA only).")
    vae_tiling: bool = Field(False, description="Decode the VAE in tiles to cap memory.")
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="Torch's CPU threads for each pipeline lane; unset: measured at warm-up together with "
        "--pipeline-lanes (1, 2, 4, ... up to the cores this process may use; the most videos per second wins).",
    )
    pipeline_lanes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Copies of the pipeline (sharing weights) that run batches at once, each on its own thread "
        "with --cpu-threads threads. Unset: measured at warm-up on CPU (with --cpu-threads also unset), else 1.",
    )
    parallel: str = Field(
        "",
        description="Split each denoising step across processes, one per device, in one process group: e.g. "
        "'cfg=2' (the guidance's two branches), 'ulysses=2' or 'ring=2' (the tokens), 'cfg=2,ulysses=2'. NCCL on "
        "GPUs (rank r on cuda:r), gloo on CPU. Empty: one process (docs/parallel.md).",
    )
    parallel_timeout_s: float = Field(
        300.0, gt=0, description="A collective, or the parallel group's start, that takes longer loses the group: "
        "it is built again and the batch's jobs run again.",
    )
    # Accelerations (docs/accelerations.md). Unset ones come from --preset, else are off.
    preset: Literal["quality", "balanced", "fast"] | None = Field(
        None, description="Bundle of accelerations and default step count: quality, balanced or fast."
    )
    attention_backend: str | None = Field(None, description="diffusers attention backend (native, flex, flash, sage, ...).")
    cfg_batching: bool | None = Field(None, description="Run the cond and uncond passes as one batched forward.")
    shared_time_embedding: bool | None = Field(
        None, description="Embed a row's timestep once, not per token, when its tokens share it (expand_timesteps)."
    )
    compile: bool | None = Field(None, description="torch.compile the repeated transformer blocks; warm-up compiles each batch size.")
    step_cache: Literal["none", "fbcache", "taylorseer", "magcache", "pab"] | None = Field(
        None, description="Reuse transformer work across denoising steps."
    )
    step_cache_threshold: float | None = Field(
        None, gt=0, description="The step cache's knob; unset: the value calibrated for the model."
    )
    quantization: Literal["none", "int8"] | None = Field(None, description="int8 transformer weights (VAE untouched).")
    backend: Literal["torch", "onnx"] | None = Field(None, description="What executes the transformer.")
    vae_slicing: bool = Field(False, description="Decode one video of a batch at a time to cap memory.")
    channels_last: bool | None = Field(None, description="VAE 3-D convolutions in channels-last memory format.")
    fused_ffn: bool | None = Field(
        None, description="On the CPU in float32: the transformer's feed-forward on oneDNN, its GELU fused."
    )
    group_offload: bool = Field(False, description="Stream transformer block groups from CPU (CUDA only).")
    warmup_runs: int = Field(1, ge=0, le=10, description="Pipeline runs before /readyz turns ready.")
    max_batch_size: int = Field(
        4, ge=1, le=64, description="Most requests in one pipeline call (one batch, on one lane)."
    )
    continuous_batching: bool = Field(
        True, description="While every lane is busy, waiting requests of a running batch's shape join it at its "
        "next step (up to max-batch-size rows) and each video is written as soon as its row finishes. Off: a "
        "batch runs as it started. Not with a step cache (its state is per step).",
    )
    preemption: bool = Field(
        True, description="While every lane is busy and a job of a more urgent tier waits with another shape, a "
        "running batch makes way at its next step: its rows are parked whole, their jobs go back to the front of "
        "the queue, and they resume from the step they reached. Not with a step cache.",
    )
    parked_rows_mb: int = Field(
        512, ge=0, description="Most MiB of parked rows kept in memory; past it a parked row goes to storage (and "
        "is read back when its job runs again).",
    )
    checkpoint_steps: int = Field(
        0, ge=0, description="Every this many steps a running row's state is written to storage, so that after a "
        "worker is killed the next run of its job resumes from the last checkpoint instead of step 0; 0: off.",
    )
    preview_every: int = Field(
        0, ge=0, description="Every this many steps a running video's live preview goes out (an SSE 'preview' "
        "event, and GET /v1/videos/{id}/preview), for requests that leave preview_every out; 0: only for "
        "requests that ask. Previews are made without the VAE, from a latent-to-RGB map fitted at load.",
    )
    max_wait_ms: int | None = Field(
        None, ge=0, le=60_000, description="How long a batch that is not full waits for compatible requests to "
        "join; unset: 5 % of what the last batch of its shape took, from 2 ms to 2 s (50 ms before the first), "
        "and none for a request that came more than a batch's time after the one before it of its shape."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer keys; empty disables auth. Prefer --api-keys-file or the env var: "
        "a flag shows in the process list.",
    )
    api_keys_file: Path | None = Field(None, description="File of bearer keys, one a line ('#' comments).")
    text_embedding_cache_entries: int = Field(
        1024, ge=0, description="Prompts whose text-encoder output is kept for reuse; 0 disables the cache."
    )
    text_embedding_cache_mb: int = Field(
        256, ge=0, description="Most MiB of text embeddings kept (on the model's device, padding trimmed)."
    )
    adapters: bool = Field(
        False, description="Serve LoRA adapters per request (loras), unmerged and co-batched; on when "
        "--adapters-dir is set. Every linear layer of the transformer then takes adapters (the fused "
        "feed-forward steps aside).",
    )
    adapters_dir: Path | None = Field(
        None, description="A directory of LoRA .safetensors files (diffusers/PEFT or Wan community format), each "
        "registered at start as a public adapter named by its file; a <name>.json beside it may say its "
        "description, steps, guidance and shift.",
    )
    max_loras: int = Field(4, ge=1, le=16, description="Adapters one request may name.")
    lora_cache_adapters: int = Field(16, ge=1, description="Adapters kept loaded on the device at once (LRU).")
    lora_cache_mb: int = Field(256, ge=1, description="Most MiB of adapters kept loaded on the device (LRU).")
    sync_max_wait_s: float = Field(600.0, gt=0, description="Longest wait the sync endpoint allows.")
    log_level: str = Field("info", description="uvicorn log level.")

    # The result cache (README "Caching").
    redis_url: str | None = Field(
        None,
        description="Redis (redis://host:port/db) for the shared cache tier; for `api`/`worker` also jobs, "
        "queue and events. Unset: in process only.",
    )
    cache_enabled: bool = Field(True, description="Hand out a finished video again for an identical request.")
    cache_ttl_s: int = Field(
        7 * 24 * 3600, ge=1, description="Seconds a cache entry lives unread; each hit restarts it."
    )
    cache_l1_entries: int = Field(10_000, ge=1, description="Most entries in the in-process cache tier.")
    cache_l1_mb: int = Field(64, ge=1, description="Most MiB of entry metadata in the in-process tier.")
    cache_bloom: bool = Field(True, description="Answer most misses from a bloom filter, without asking Redis.")
    cache_scope: Literal["global", "per-tenant"] = Field(
        "global", description="global: all callers share results; per-tenant: only callers with the same API key."
    )
    cache_semantic_default: bool = Field(
        False, description="Match prompts by meaning (MiniLM embeddings) for requests that do not say."
    )
    cache_min_similarity: float = Field(
        0.92, ge=0.5, le=1.0, description="Cosine similarity a semantic match needs, unless the request says."
    )
    cache_sensitive_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVE_PATTERNS),
        description="Regexes (comma-separated, or a JSON array when one has a comma); a prompt matching one "
        "is never cached. Default: e-mail addresses and phone numbers.",
    )
    cache_sensitive_hook: str | None = Field(
        None, description="'module:function' called with each prompt; true means never cache it."
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer keys for /v1/admin (and any job); empty: admin API disabled.",
    )
    admin_keys_file: Path | None = Field(None, description="File of admin keys, one a line ('#' comments).")

    # What one request may take (docs/security.md).
    max_body_bytes: int = Field(
        4 * 2**20, ge=1024, description="Largest request body; a larger one is answered 413 before it is read."
    )
    max_upload_bytes: int = Field(
        48 * 2**20, ge=1024, description="Largest body of a create request, which may carry a first frame or a "
        "clip (each also has its own limit: 16 MiB an image, 32 MiB a clip)."
    )
    keep_latents_s: float = Field(
        3600.0, ge=0, description="Seconds a completed video keeps its final latents for remixes (expires_at); "
        "0: none kept, a remix re-encodes the MP4."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Seconds a request may take to send its headers; then 408 and closed."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds a request may take to send its body after its headers."
    )
    keep_alive_s: int = Field(5, ge=1, le=600, description="Seconds an idle keep-alive connection stays open.")
    tenant_queue_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Most of a tier's max_queue one API key may hold, so no key locks the others out; 1: no cap.",
    )

    # Scheduling (README "Priorities, deadlines and load").
    tiers: Annotated[list[Tier], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_TIERS),
        description="Priority tiers as a JSON array of {name, level, default_deadline_s, max_deadline_s, max_queue, "
        "on_late, allow_degrade, reserved_share}. Default: realtime, standard, batch.",
    )
    default_tier: str = Field("standard", description="Tier of requests whose key and body name none.")
    tenants: Annotated[dict[str, TenantPolicy], NoDecode] = Field(
        default_factory=dict,
        description="Per API key, as JSON: {\"<key>\": {\"tier\", \"allowed_tiers\", \"requests_per_minute\", "
        "\"max_concurrent_jobs\", \"queue_share\", \"webhook_secret\"}}.",
    )
    tenants_file: Path | None = Field(None, description="File holding the --tenants JSON (it names keys).")
    rate_limit_rpm: int = Field(0, ge=0, description="Requests per minute per API key unless it says; 0: unlimited.")
    rate_limit_concurrent: int = Field(
        0, ge=0, description="Queued + running jobs per API key unless it says; 0: unlimited."
    )
    degrade_levels: Annotated[list[DegradeLevel], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_DEGRADE_LEVELS),
        description="Load-based degradation as a JSON array of {name, min_queue_delay_s, max_steps, max_frames, "
        "cache_only_tiers}; [] turns it off.",
    )
    circuit_failures: int = Field(
        5, ge=0, description="Consecutive failed pipeline calls that stop admission until a probe succeeds; 0: never."
    )
    circuit_cooldown_s: float = Field(30.0, gt=0, description="Seconds the circuit stays open before a probe.")

    # Where videos are kept (README "Storage").
    storage: Literal["local", "s3"] = Field(
        "local", description="local: <data-dir>/files (or a shared filesystem); s3: an S3 bucket."
    )
    s3_bucket: str | None = Field(None, description="Bucket of --storage s3 (it must exist).")
    s3_prefix: str = Field("reelserve/", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible store (MinIO, R2...).")
    s3_region: str | None = Field(None, description="Bucket region; boto3's default chain when unset.")
    content_delivery: Literal["api", "presigned"] = Field(
        "api", description="api: the API streams content; presigned: it redirects to a presigned URL (s3 only)."
    )
    presigned_url_ttl_s: int = Field(3600, ge=1, le=7 * 86400, description="Lifetime of a presigned URL.")

    # Distributed mode (`reelserve api` / `reelserve worker`; docs/deploy.md). They share `redis_url`.
    redis_namespace: str = Field(
        "reelserve", pattern=r"^[^{}]+$", description="Prefix (and Cluster hash tag) of every Redis key: job store, queue, events, result cache and stats."
    )
    job_retention_s: float = Field(
        7 * 86400, gt=0, description="Seconds a finished job's record is kept in Redis (distributed mode)."
    )
    claim_idle_s: float = Field(
        60.0, ge=0.3, description="A worker's job untouched this long is taken over by another (its worker is presumed dead)."
    )
    max_deliveries: int = Field(
        3, ge=1, le=100, description="Times a job is handed to a worker before it fails with worker_lost."
    )
    drain_timeout_s: float = Field(
        600.0, ge=0, description="On SIGTERM a worker parks its running rows for other workers to resume; rows it "
        "cannot park (a step cache runs) it finishes, for at most this long."
    )
    worker_name: str | None = Field(None, description="This worker's consumer name; unset: <hostname>-<pid>.")

    # Webhooks (README "Webhooks").
    webhook_secret: str | None = Field(
        None, description="whsec_<base64> key signing webhooks of keys without their own; unset: webhooks need one."
    )
    webhook_secret_file: Path | None = Field(None, description="File holding --webhook-secret.")
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts or CIDRs a webhook may reach although not public (e.g. 10.0.0.0/8).",
    )
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="Attempts per webhook, with exponential backoff.")
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="Seconds one webhook attempt may take.")

    @field_validator("tiers", "tenants", "degrade_levels", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("tiers")
    @classmethod
    def _tier_names_unique(cls, value: list[Tier]) -> list[Tier]:
        names = [tier.name for tier in value]
        if not value or len(set(names)) != len(names):
            raise ValueError(f"tiers need at least one tier and unique names; got {names}")
        return value

    @field_validator("api_keys", "admin_keys", "webhook_allow", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("cache_sensitive_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("cache_sensitive_patterns")
    @classmethod
    def _compile_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("cache_sensitive_hook")
    @classmethod
    def _hook_names_a_function(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError(f"must look like 'package.module:function'; got {value!r}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            decode_secret(value)  # ValueError says what is wrong with it
        return value

    @model_validator(mode="after")
    def _several_models(self) -> Settings:
        """``model`` is the default model; the others of a repeated --model are kept apart."""
        names = served_models(self.model, self.model_path)
        self.model, self._more_models = names[0], names[1:]
        self._overrides = parse_overrides(self.model_overrides, names, type(self).model_fields)
        return self

    @property
    def models(self) -> list[str]:
        """Every model served, the default first."""
        return [self.model, *self._more_models]

    def for_model(self, name: str) -> Settings:
        """These settings as ``name`` runs with them: its --model-overrides over them, ``model`` its name."""
        return self.model_copy(update={"model": name, **self._overrides.get(name, {})})

    @field_validator("parallel")
    @classmethod
    def _parallel_layout(cls, value: str) -> str:
        return str(ParallelLayout.parse(value))  # a ValueError names what to write instead

    @property
    def parallel_layout(self) -> ParallelLayout:
        return ParallelLayout.parse(self.parallel)

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        """Secrets may come from files (the recommended way, with the env vars: flags show in ``ps``)."""
        read_secret_files(self, ("api_keys", "admin_keys", "webhook_secret", "tenants"))
        return self

    @model_validator(mode="after")
    def _storage_complete(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage 's3' needs s3_bucket (--s3-bucket / REELSERVE_S3_BUCKET)")
        if self.content_delivery == "presigned" and self.storage != "s3":
            raise ValueError("content_delivery 'presigned' needs storage 's3'")
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def cost_model_path(self) -> Path:
        return self.data_dir / "cost_model.json"

    @property
    def serves_adapters(self) -> bool:
        return self.adapters or self.adapters_dir is not None

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"
