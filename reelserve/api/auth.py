"""Optional bearer-key auth for every ``/v1`` route."""

from __future__ import annotations

import hmac

from fastapi import Request

from reelserve.schemas import ErrorCode, ReelserveError


class BearerAuth:
    """A FastAPI dependency; with no keys configured it lets everything through."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    async def __call__(self, request: Request) -> None:
        if not self._keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ReelserveError(ErrorCode.unauthorized, "missing API key: send 'Authorization: Bearer <key>'")
        # compare_digest against every key so timing does not reveal which prefix matched
        if not any(hmac.compare_digest(token.strip().encode(), key) for key in self._keys):
            raise ReelserveError(ErrorCode.unauthorized, "invalid API key")
