"""The SSRF guard. IP literals and ``localhost`` resolve without DNS; where a name must resolve to
chosen addresses, ``socket.getaddrinfo`` is replaced for that test."""

import socket

import pytest

from reelserve.schemas.errors import ReelserveError
from reelserve.webhooks.ssrf import (
    UnsafeWebhookURL,
    WebhookHostUnresolved,
    check_webhook_url,
    check_webhook_url_async,
)

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.1.2.3:8080/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://LOCALHOST./hook", "loopback"),
    ("http://10.0.0.5/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]/hook", "loopback"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fc00::1]/hook", "private"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4-mapped
    ("http://[2002:7f00:1::]/hook", "loopback"),  # 6to4 wrapping 127.0.0.1
    ("http://100.64.0.1/hook", "carrier-grade NAT"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://240.0.0.1/hook", "reserved"),
    ("ftp://example.com/hook", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("example.com/hook", "scheme '(none)'"),
    ("http:///hook", "no host"),
    ("http://93.184.216.34:99999/", "not a valid URL"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[url for url, _ in REFUSED])
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookURL) as info:
        check_webhook_url(url)
    error = info.value
    assert reason in error.message
    assert error.param == "webhook_url" and error.message.startswith("webhook_url ")
    assert "allowed: an http or https URL" in error.message
    assert isinstance(error, ValueError) and isinstance(error, ReelserveError)
    assert error.http_status == 422


@pytest.mark.parametrize(
    "url",
    ["http://93.184.216.34/hook", "https://93.184.216.34:8443/a?b=c", "http://[2606:2800:220:1:248:1893:25c8:1946]/"],
)
def test_public_address_passes(url: str) -> None:
    check_webhook_url(url)


def test_cidr_on_the_allow_list_lets_loopback_through() -> None:
    check_webhook_url("http://127.0.0.1:8123/hook", allow=["127.0.0.0/8"])
    check_webhook_url("http://[::ffff:127.0.0.1]/hook", allow=["127.0.0.0/8"])
    check_webhook_url("http://[::1]/hook", allow=["::1/128"])
    check_webhook_url("http://10.1.2.3/hook", allow=["10.1.2.3"])  # a bare address is a /32


def test_allow_list_covers_only_what_it_names() -> None:
    with pytest.raises(UnsafeWebhookURL, match="private"):
        check_webhook_url("http://10.0.0.1/hook", allow=["127.0.0.0/8", "localhost"])
    with pytest.raises(UnsafeWebhookURL, match="scheme"):
        check_webhook_url("ftp://127.0.0.1/hook", allow=["127.0.0.0/8"])


def test_hostname_on_the_allow_list_passes_without_resolving(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> object:
        raise AssertionError("an allow-listed host must not be resolved")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    check_webhook_url("http://Hooks.Internal./x", allow=["hooks.internal"])


def fake_resolver(addresses: list[str]):  # type: ignore[no-untyped-def]
    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]

    return getaddrinfo


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver(["93.184.216.34", "10.0.0.7"]))
    with pytest.raises(UnsafeWebhookURL, match=r"'hooks.example.com' \(resolves to 10.0.0.7\)"):
        check_webhook_url("https://hooks.example.com/x")
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver(["93.184.216.34", "2606:2800:220:1::1"]))
    check_webhook_url("https://hooks.example.com/x")


def test_unresolvable_host_is_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(WebhookHostUnresolved, match="does not resolve") as info:
        check_webhook_url("https://nowhere.example/x")
    assert info.value.param == "webhook_url"


async def test_async_variant_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnsafeWebhookURL, match="link-local"):
        await check_webhook_url_async("http://169.254.169.254/")
    with pytest.raises(UnsafeWebhookURL, match="loopback"):
        await check_webhook_url_async("http://localhost:9/")
    await check_webhook_url_async("http://93.184.216.34/")
    await check_webhook_url_async("http://127.0.0.1:9/", allow=["127.0.0.0/8"])
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver(["192.168.0.2"]))
    with pytest.raises(UnsafeWebhookURL, match="private"):
        await check_webhook_url_async("https://rebound.example.com/x")
