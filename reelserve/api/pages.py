"""The browser pages: the playground at ``/`` and the operator dashboard at ``/admin``.

Plain files under ``api/static`` (no build step, nothing from a CDN). They are public: the pages
hold no data, and call the same JSON API as every other client, with the key the user enters.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install_pages(app: FastAPI) -> None:
    router = APIRouter(tags=["pages"], include_in_schema=False)

    @router.get("/")
    async def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    @router.get("/admin")
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "admin.html", headers={"cache-control": "no-cache"})

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
