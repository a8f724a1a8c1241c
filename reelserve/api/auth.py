"""Who is calling, and what they may touch.

``BearerAuth`` authenticates every ``/v1`` route (optional when no keys are configured) and records
the ``Caller``; ``AdminAuth`` guards ``/v1/admin`` with its own keys; ``JobAccess`` is the one
object-level check: every route with a ``{video_id}`` answers 404 for a job its caller may not see,
exactly as for an unknown id, so a job's existence never leaks across tenants.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request

from reelserve.engine.service import VideoService
from reelserve.schemas import ErrorCode, ReelserveError
from reelserve.schemas.errors import job_not_found
from reelserve.schemas.tenants import ANONYMOUS_TENANT

JOB_PATH_PARAM = "video_id"


def tenant_id(api_key: str) -> str:
    """The tenant of a bearer key: its sha256, so the key itself is never stored or logged."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: its tenant (a key's sha256, or "anonymous" with auth off), and whether
    its key is an admin key (admins may act on every job)."""

    tenant: str
    admin: bool = False

    def may_access(self, job_tenant: str | None) -> bool:
        """A job is its tenant's; jobs made before tenants were recorded belong to "anonymous"."""
        return self.admin or (job_tenant or ANONYMOUS_TENANT) == self.tenant

    @property
    def sees_everything(self) -> bool:
        """Listing unscoped: admins, and everyone when auth is off (all jobs are "anonymous")."""
        return self.admin or self.tenant == ANONYMOUS_TENANT


class BearerAuth:
    """A FastAPI dependency; with no API keys configured it lets everything through as "anonymous".

    Admin keys are accepted too, as admins. The caller goes on ``request.state.caller``; read it with
    ``caller_of``.
    """

    def __init__(self, keys: list[str], admin_keys: list[str] | None = None) -> None:
        self._keys = [k.encode() for k in keys]
        self._admin_keys = [k.encode() for k in admin_keys or []]

    async def __call__(self, request: Request) -> None:
        token = _bearer_token(request)
        if token is not None and _matches(token, self._admin_keys):
            request.state.caller = Caller(tenant_id(token), admin=True)
            return
        if not self._keys:
            request.state.caller = Caller(ANONYMOUS_TENANT)
            return
        if token is None:
            raise ReelserveError(ErrorCode.unauthorized, "missing API key: send 'Authorization: Bearer <key>'")
        if not _matches(token, self._keys):
            raise ReelserveError(ErrorCode.unauthorized, "invalid API key")
        request.state.caller = Caller(tenant_id(token))


class AdminAuth:
    """The admin routes' dependency: a valid admin key, and with none configured, 403 for everyone."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    async def __call__(self, request: Request) -> None:
        if not self._keys:
            raise ReelserveError(ErrorCode.forbidden, "admin API disabled: no admin keys are configured")
        token = _bearer_token(request)
        if token is None:
            raise ReelserveError(ErrorCode.unauthorized, "missing API key: send 'Authorization: Bearer <key>'")
        if not _matches(token, self._keys):
            raise ReelserveError(ErrorCode.unauthorized, "invalid API key")


class JobAccess:
    """Router dependency of the videos routes: for a route with a ``{video_id}`` (every per-job route,
    present and future), the job must exist and be the caller's, or the caller an admin; otherwise
    ``not_found`` with the very message an unknown id gets. Runs after ``BearerAuth``."""

    def __init__(self, service: VideoService) -> None:
        self._service = service

    async def __call__(self, request: Request) -> None:
        video_id = request.path_params.get(JOB_PATH_PARAM)
        if video_id is None:
            return
        caller = caller_of(request)
        job = await self._service.get(video_id)  # raises not_found for an unknown id
        if not caller.may_access(job.tenant):
            raise job_not_found(video_id)
        request.state.job = job  # read just now: a route that only shows it need not read it again


def caller_of(request: Request) -> Caller:
    """The caller ``BearerAuth`` recorded. Fails closed: a route reached without it is a wiring bug,
    and answers 401 rather than acting for nobody in particular."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        raise ReelserveError(ErrorCode.unauthorized, "missing API key: send 'Authorization: Bearer <key>'")
    return caller  # type: ignore[no-any-return]


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _matches(token: str, keys: list[bytes]) -> bool:
    # compare_digest against every key so timing does not reveal which prefix matched
    encoded = token.encode()
    return any([hmac.compare_digest(encoded, key) for key in keys])
