"""``/v1/models``: the served model, each parameter's default and range (OpenAI's list shape)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from reelserve.engine.service import VideoService
from reelserve.api.errors import error_responses
from reelserve.schemas import ErrorCode, ReelserveError


def models_router(service: VideoService) -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["models"])

    @router.get("", responses=error_responses(401))
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": service.models_info()}

    @router.get("/{model_id}", responses=error_responses(401, 404))
    async def get_model(model_id: str) -> dict[str, Any]:
        infos = {info["id"]: info for info in service.models_info()}
        if model_id not in infos:
            served = ", ".join(f"'{name}'" for name in infos)
            raise ReelserveError(
                ErrorCode.not_found, f"model '{model_id}' is not served here; this server serves {served}",
                param="model",
            )
        return infos[model_id]

    return router
