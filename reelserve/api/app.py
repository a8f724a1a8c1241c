"""Builds the FastAPI app around a ``VideoService``."""

from __future__ import annotations

import asyncio

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from reelserve import __version__
from reelserve.adapters import AdapterRegistry
from reelserve.api.adapters import adapters_router, admin_adapters_router
from reelserve.api.admin import admin_router
from reelserve.api.auth import AdminAuth, BearerAuth
from reelserve.api.body_limit import BodyLimitMiddleware
from reelserve.api.content import ContentDelivery
from reelserve.api.errors import error_responses, install_error_handlers
from reelserve.api.metrics_middleware import RequestMetricsMiddleware
from reelserve.api.models import models_router
from reelserve.api.pages import install_pages
from reelserve.api.stats import stats_router
from reelserve.api.videos import videos_router
from reelserve.engine.service import CacheAdmin, OpsStats, VideoService
from reelserve.metrics import Metrics

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    service: VideoService,
    metrics: Metrics,
    *,
    api_keys: list[str] | None = None,
    sync_max_wait_s: float = 600.0,
    lifespan: Lifespan | None = None,
    cache_admin: CacheAdmin | None = None,
    admin_keys: list[str] | None = None,
    content_delivery: ContentDelivery = "api",
    presign_ttl_s: int = 3600,
    dashboard: OpsStats | None = None,
    max_body_bytes: int = 4 * 2**20,
    max_upload_bytes: int = 48 * 2**20,
    adapters: AdapterRegistry | None = None,
    model_name: str = "",
) -> FastAPI:
    """The app. ``/v1/admin/cache`` and ``/v1/admin/stats`` exist when ``cache_admin`` and ``dashboard``
    are given, and answer 403 to everyone until ``admin_keys`` are configured. Admin keys also work on
    every ``/v1`` route, and may act on any tenant's job."""
    # FastAPIOffline: /docs (Swagger UI) loads its scripts from files in that package, not from a CDN,
    # so it renders with no network. ReDoc is off: its bundle still fetches a logo from its CDN.
    app = FastAPIOffline(title="reelserve", version=__version__, lifespan=lifespan, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes, max_upload_bytes=max_upload_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: it counts the 413s too
    bearer = [Depends(BearerAuth(api_keys or [], admin_keys or []))]
    app.include_router(videos_router(service, sync_max_wait_s, content_delivery, presign_ttl_s), dependencies=bearer)
    app.include_router(models_router(service), dependencies=bearer)
    if adapters is not None:
        app.include_router(adapters_router(adapters, model_name), dependencies=bearer)
    admin = [Depends(AdminAuth(admin_keys or []))]
    admin_errors = error_responses(401, 403, 422)
    if cache_admin is not None:
        app.include_router(admin_router(cache_admin), dependencies=admin, responses=admin_errors)
    if adapters is not None:
        app.include_router(admin_adapters_router(adapters, model_name), dependencies=admin, responses=admin_errors)
    if dashboard is not None:
        app.include_router(stats_router(dashboard), dependencies=admin, responses=admin_errors)

    install_pages(app)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready yet (loading the model)"}})
    async def readyz() -> JSONResponse:
        ready = service.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        return Response(await asyncio.to_thread(metrics.render), media_type="text/plain; version=0.0.4")

    return app
