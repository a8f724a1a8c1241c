"""``/v1/adapters`` (the LoRA adapters a caller may name in ``loras``) and ``/v1/admin/adapters`` (add
one by upload, safetensors only and checked against the served model's layers; remove one). The
admin routes are guarded by ``AdminAuth``; a removed adapter's running rows finish with it."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import ValidationError

from reelserve.adapters import NAME_PATTERN, AdapterInfo, AdapterRegistry
from reelserve.api.auth import caller_of, tenant_id
from reelserve.api.errors import error_responses, validation_error
from reelserve.api.request_body import FORM_TYPES, media_type
from reelserve.schemas import ErrorCode, ReelserveError, invalid
from reelserve.schemas.requests import MAX_FLOW_SHIFT

_UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["name", "file"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "file": {"type": "string", "format": "binary", "description": "the LoRA, .safetensors"},
        "owner_api_key": {"type": "string", "description": "the API key whose tenant owns it; absent: public"},
        "description": {"type": "string"},
        "steps": {"type": "integer", "minimum": 1, "description": "default steps for requests that set none"},
        "guidance": {"type": "number", "minimum": 0, "description": "default guidance for requests that set none"},
        "shift": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_FLOW_SHIFT,
                  "description": "default flow_shift for requests that set none"},
    }}}}}}
AdapterName = Path(pattern=NAME_PATTERN)


def adapters_router(registry: AdapterRegistry, model: str) -> APIRouter:
    router = APIRouter(prefix="/v1/adapters", tags=["adapters"])

    @router.get("", operation_id="listAdapters", responses=error_responses(401))
    async def list_adapters(request: Request) -> dict[str, Any]:
        """The adapters the caller may name in ``loras``: the public ones and its own (an admin key: all)."""
        caller = caller_of(request)
        shown = await asyncio.to_thread(registry.visible, caller.tenant, model, caller.sees_everything)
        return {"object": "list", "data": [info.public_view(caller.tenant) for info in shown]}

    return router


def admin_adapters_router(registry: AdapterRegistry, model: str) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/adapters", tags=["admin"])

    @router.post("", operation_id="addAdapter", openapi_extra=_UPLOAD_DOC, responses=error_responses(400, 413, 503))
    async def add_adapter(request: Request) -> dict[str, Any]:
        """Register an adapter for the served model (replacing one of the same name: rows running the
        old one finish with it). A file that is no LoRA for this model is a 422 naming ``file``."""
        if media_type(request) not in FORM_TYPES:
            raise ReelserveError(ErrorCode.invalid_request, "send multipart/form-data with the file and its name",
                                 param="body")
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise invalid("file", "file: send the adapter's .safetensors file as a file part named 'file'")
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "owner_api_key"}
        owner = form.get("owner_api_key")
        try:
            info = AdapterInfo(sha256="", model=model, bytes=0, owner=tenant_id(owner) if isinstance(owner, str) and
                               owner else None, **fields)
        except ValidationError as exc:
            raise validation_error(exc) from None
        data = await upload.read()
        try:
            added = await asyncio.to_thread(registry.add, info, data)
        except ValueError as exc:
            raise invalid("file", f"file: {exc}") from None
        return added.public_view(info.owner)

    @router.delete("/{name}", operation_id="deleteAdapter", responses=error_responses(404))
    async def delete_adapter(name: str = AdapterName) -> dict[str, Any]:
        if not await asyncio.to_thread(registry.delete, name):
            raise ReelserveError(ErrorCode.not_found, f"no adapter named '{name}'", param="name")
        return {"name": name, "object": "adapter.deleted", "deleted": True}

    return router
