"""Which webhook URLs the server may call: not its own network.

A client chooses the webhook URL, and the server POSTs to it from inside the deployment; without this
check a client could make the server call its own admin ports, the cloud metadata service
(169.254.169.254) or anything else on the private network (server-side request forgery).

Check at submission (a 422 the client can act on) and again before every delivery attempt: DNS can
change between the two (DNS rebinding), so a name that resolved to a public address at submission may
resolve to 127.0.0.1 an hour later. A small window remains between the check and the HTTP client's own
lookup; redirects are never followed, so a receiver cannot bounce the request inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

from reelserve.schemas.errors import ErrorCode, ReelserveError

WEBHOOK_URL_FIELD = "webhook_url"
ALLOWED_SCHEMES = ("http", "https")
# Shared address space (RFC 6598): carrier-grade NAT, often the inside of a cloud network.
# ``ipaddress`` calls it neither private nor global, so it is named here.
CGNAT_NETWORK = ipaddress.ip_network("100.64.0.0/10")

_WHAT_IS_ALLOWED = (
    "allowed: an http or https URL whose host resolves only to public addresses, "
    "or a host or network on the server's webhook allow-list"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeWebhookURL(ReelserveError, ValueError):
    """A webhook URL the server refuses to call: a 422 on the ``webhook_url`` field.

    Also a ``ValueError``, so a pydantic validator may raise it directly."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            ErrorCode.invalid_parameter, f"{WEBHOOK_URL_FIELD} {reason}; {_WHAT_IS_ALLOWED}", param=WEBHOOK_URL_FIELD
        )


class WebhookHostUnresolved(UnsafeWebhookURL):
    """The host did not resolve. Refused at submission; at delivery time worth retrying, since DNS
    failures are often brief."""


class _Target(NamedTuple):
    host: str  # lower case, no brackets, no trailing dot
    port: int


def check_webhook_url(url: str, allow: Sequence[str] = ()) -> None:
    """Raise ``UnsafeWebhookURL`` unless the server may POST to ``url``.

    ``allow`` holds hostnames (matched exactly, case-insensitively) and CIDRs (``127.0.0.0/8``,
    ``10.1.2.3``): a host named there, or an address inside one of the networks, passes even though it
    is not public. Resolves the host with a blocking ``getaddrinfo``; from async code use
    ``check_webhook_url_async``."""
    target = _parse(url)
    if _host_allowed(target.host, allow):
        return
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookHostUnresolved(f"host {target.host!r} does not resolve ({exc})") from None
    _check_addresses(target.host, (info[4][0] for info in infos), allow)


async def check_webhook_url_async(url: str, allow: Sequence[str] = ()) -> None:
    """``check_webhook_url`` without blocking the event loop (the lookup runs in the loop's executor)."""
    target = _parse(url)
    if _host_allowed(target.host, allow):
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookHostUnresolved(f"host {target.host!r} does not resolve ({exc})") from None
    _check_addresses(target.host, (info[4][0] for info in infos), allow)


def _parse(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookURL(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeWebhookURL(f"has scheme {scheme or '(none)'!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeWebhookURL("has no host")
    try:
        host.encode("idna")
    except UnicodeError:
        raise UnsafeWebhookURL(f"host {host!r} is not a valid hostname") from None
    return _Target(host, port or (443 if scheme == "https" else 80))


def _host_allowed(host: str, allow: Sequence[str]) -> bool:
    return any(entry.strip().lower().rstrip(".") == host for entry in allow)


def _allowed_networks(allow: Sequence[str]) -> list[IPNetwork]:
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue  # a hostname entry, matched by _host_allowed
    return networks


def _check_addresses(host: str, addresses: Iterable[str], allow: Sequence[str]) -> None:
    # Every address, not the first: the HTTP client may connect to any of them.
    networks = _allowed_networks(allow)
    for text in addresses:
        address = _unwrap(ipaddress.ip_address(text))
        if any(address in network for network in networks if network.version == address.version):
            continue
        kind = non_public_kind(address)
        if kind is not None:
            shown = host if host == str(address) else f"{host!r} (resolves to {address})"
            raise UnsafeWebhookURL(f"host {shown} is not public ({kind} address)")


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped (``::ffff:a.b.c.d``) or 6to4 IPv6 address: that is where
    such a connection really goes."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return embedded
    return address


def non_public_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address (``"loopback"``, ``"private"``, ...), or
    ``None`` if it is one."""
    # Most specific first: 127.0.0.1, 169.254.0.1 and 240.0.0.1 are also "private" to ``ipaddress``.
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address.version == 4 and address in CGNAT_NETWORK),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-global", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)
