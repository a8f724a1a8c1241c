"""``/v1/admin/cache``: look at and empty the result cache. Guarded by ``AdminAuth`` (its own keys)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from reelserve.api.errors import error_responses
from reelserve.api.request_body import parse_json_body
from reelserve.engine.service import CacheAdmin
from reelserve.schemas import invalid


class InvalidateRequest(BaseModel):
    """Exactly one of the two: every entry of a prompt (after normalisation), or of a model."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1)


def admin_router(admin: CacheAdmin) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/cache", tags=["admin"])

    @router.get("/stats")
    async def cache_stats() -> dict[str, Any]:
        return await admin.cache_stats()

    @router.delete("/entries/{key}")
    async def delete_entry(key: str) -> dict[str, int]:
        return {"removed": await admin.invalidate_key(key)}

    @router.post(
        "/invalidate",
        responses=error_responses(400, 413),
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": InvalidateRequest.model_json_schema()}}}},
    )
    async def invalidate(request: Request) -> dict[str, int]:
        body = await _parse_invalidate(request)
        if (body.prompt is None) == (body.model is None):
            raise invalid("prompt" if body.prompt is None else "model", "give exactly one of 'prompt' or 'model'")
        if body.prompt is not None:
            return {"removed": await admin.invalidate_prompt(body.prompt)}
        assert body.model is not None
        return {"removed": await admin.invalidate_model(body.model)}

    @router.post("/flush")
    async def flush() -> dict[str, int]:
        return {"removed": await admin.flush()}

    return router


async def _parse_invalidate(request: Request) -> InvalidateRequest:
    return await parse_json_body(request, InvalidateRequest)
