"""Bearer-key auth: optional for every ``/v1`` route, required (with its own keys) for ``/v1/admin``."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from reelserve.schemas import ErrorCode, ReelserveError

ANONYMOUS_TENANT = "anonymous"


def tenant_id(api_key: str) -> str:
    """The tenant of a bearer key: its sha256, so the key itself is never stored or logged."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class BearerAuth:
    """A FastAPI dependency; with no keys configured it lets everything through.

    It records the caller's tenant on ``request.state.tenant``: the sha256 of its key, or "anonymous"
    when auth is off. Read it with ``tenant_of``.
    """

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    async def __call__(self, request: Request) -> None:
        if not self._keys:
            request.state.tenant = ANONYMOUS_TENANT
            return
        request.state.tenant = tenant_id(_check_bearer(request, self._keys))


class AdminAuth:
    """The admin routes' dependency: a valid admin key, and with none configured, 403 for everyone."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    async def __call__(self, request: Request) -> None:
        if not self._keys:
            raise ReelserveError(ErrorCode.forbidden, "admin API disabled: no admin keys are configured")
        _check_bearer(request, self._keys)


def tenant_of(request: Request) -> str:
    return getattr(request.state, "tenant", ANONYMOUS_TENANT)


def _check_bearer(request: Request, keys: list[bytes]) -> str:
    """The request's bearer token if it is one of ``keys``; raises ``unauthorized`` otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ReelserveError(ErrorCode.unauthorized, "missing API key: send 'Authorization: Bearer <key>'")
    token = token.strip()
    # compare_digest against every key so timing does not reveal which prefix matched
    if not any(hmac.compare_digest(token.encode(), key) for key in keys):
        raise ReelserveError(ErrorCode.unauthorized, "invalid API key")
    return token
