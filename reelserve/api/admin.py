"""``/v1/admin/cache``: look at and empty the result cache. Guarded by ``AdminAuth`` (its own keys)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelserve.api.errors import validation_error
from reelserve.engine.service import CacheAdmin
from reelserve.schemas import ErrorCode, ReelserveError, invalid


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

    @router.post("/invalidate")
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
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ReelserveError(ErrorCode.invalid_request, "body must be JSON") from None
    if not isinstance(data, dict):
        raise ReelserveError(ErrorCode.invalid_request, "body must be a JSON object")
    try:
        return InvalidateRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
