"""Every setting in one place. Each field is a ``reelserve serve`` flag and a ``REELSERVE_*`` env var."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REELSERVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    data_dir: Path = Field(Path("reelserve-data"), description="Jobs database and videos live here.")
    model: str = Field("micro", description="Model to serve (see `reelserve models`).")
    model_path: str | None = Field(
        None, description="Local directory or hub id for from_pretrained models (overrides the default)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the pipeline runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto is float32 on CPU, bfloat16 on CUDA."
    )
    cpu_offload: bool = Field(False, description="Offload idle sub-models to CPU (CUDA only).")
    vae_tiling: bool = Field(False, description="Decode the VAE in tiles to cap memory.")
    warmup_runs: int = Field(1, ge=0, le=10, description="Pipeline runs before /readyz turns ready.")
    max_batch_size: int = Field(4, ge=1, le=64, description="Most requests in one pipeline call.")
    max_wait_ms: int = Field(
        50, ge=0, le=60_000, description="How long a batch waits for compatible requests to join."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated bearer keys; empty disables auth."
    )
    sync_max_wait_s: float = Field(600.0, gt=0, description="Longest wait the sync endpoint allows.")
    log_level: str = Field("info", description="uvicorn log level.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"
