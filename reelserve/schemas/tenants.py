"""Tenants: who owns a job. A tenant is the sha256 of an API key, or ``ANONYMOUS_TENANT`` when auth is off."""

from __future__ import annotations

ANONYMOUS_TENANT = "anonymous"


def is_anonymous(tenant: str | None) -> bool:
    """True for the one tenant of a server without API keys (and for jobs that recorded none)."""
    return tenant is None or tenant == ANONYMOUS_TENANT
