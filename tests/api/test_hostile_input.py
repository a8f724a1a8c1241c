"""Hostile input never reaches a 500: each answer is a 4xx in the API's error shape naming the field,
and nothing is created. The cases are what fuzzing (schemathesis) and simple floods found."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ALICE, TENANT_KEYS, RunningServer, auth, serve

LIMIT = 64 * 1024
UPLOAD_LIMIT = 4 * LIMIT  # what a create request may carry: a first frame or a clip


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = {**TENANT_KEYS, "max_body_bytes": LIMIT, "max_upload_bytes": UPLOAD_LIMIT, "header_timeout_s": 1.0,
                "body_timeout_s": 1.0}
    with serve(tmp_path_factory.mktemp("hostile") / "data", **settings) as running:
        running.client.headers.update(auth(ALICE))
        yield running


def job_count(running: RunningServer) -> int:
    return len(running.server.store.list(10_000, None))


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        ('{"prompt": "x", "seconds": 1e308}', 422, "seconds"),
        ('{"prompt": "x", "seconds": Infinity}', 422, "seconds"),
        ('{"prompt": "x", "seconds": -Infinity}', 422, "seconds"),
        ('{"prompt": "x", "guidance_scale": NaN}', 422, "guidance_scale"),
        ('{"prompt": "x", "deadline_seconds": 1e308}', 422, "deadline_seconds"),
        ('{"prompt": "x", "cache": ' + DEEP + "}", 400, "body"),
        (DEEP, 400, "body"),
        ('{"prompt": "x", "seed": ' + "9" * 5000 + "}", 400, "body"),
        ('{"prompt": "x", "width": ' + "9" * 400 + "}", 422, "width"),
        ('{"prompt": "x", "seed": "42"}', 422, "seed"),
        ('{"prompt": "x", "num_frames": "17"}', 422, "num_frames"),
        ('{"prompt": "x", "num_frames": 17.0}', 422, "num_frames"),
        ('{"prompt": "x", "guidance_scale": "5"}', 422, "guidance_scale"),
        ('{"prompt": "x", "allow_degrade": "true"}', 422, "allow_degrade"),
        ('{"prompt": "x", "seconds": "two"}', 422, "seconds"),
        ('{"prompt": "x\\ud800"}', 400, "body"),
        ("", 400, "body"),
        ("[1]", 400, "body"),
    ],
)
def test_hostile_json_is_a_4xx_naming_the_field(guarded: RunningServer, raw: str, status: int, param: str) -> None:
    before = job_count(guarded)
    response = guarded.client.post("/v1/videos", content=raw, headers={"content-type": "application/json"})
    error = error_of(response, status)
    assert error["param"] == param and error["message"], error
    assert job_count(guarded) == before


def test_seconds_as_a_string_is_the_openai_spelling(guarded: RunningServer) -> None:
    """The one number a string may carry: OpenAI's own ``seconds`` is a string ("4")."""
    response = guarded.client.post("/v1/videos", json={"prompt": "x", "seconds": "2", "fps": 8})
    assert response.status_code == 200, response.text
    assert response.json()["num_frames"] == 17


@pytest.mark.parametrize(
    ("form", "param"),
    [
        ({"prompt": "x", "cache": DEEP}, "cache"),
        ({"prompt": "x", "cache": "[" * 150 + "]" * 150}, "cache"),
        ({"prompt": "x", "cache": '{"enabled": "yes"}'}, "cache.enabled"),
        ({"prompt": "x", "cache": "not json"}, "cache"),
        ({"prompt": "x", "seed": "9" * 5000}, "seed"),
        ({"prompt": "x", "seconds": "1e308"}, "seconds"),
        ({"prompt": "x", "seconds": "inf"}, "seconds"),
    ],
)
def test_hostile_forms_are_422_naming_the_field(guarded: RunningServer, form: dict[str, str], param: str) -> None:
    before = job_count(guarded)
    error = error_of(guarded.client.post("/v1/videos", data=form), 422)
    assert error["param"] == param, error
    assert job_count(guarded) == before


def test_a_file_part_is_refused(guarded: RunningServer) -> None:
    response = guarded.client.post("/v1/videos", data={"prompt": "x"}, files={"seed": ("seed.txt", b"1")})
    assert error_of(response, 422)["param"] == "seed"


@pytest.mark.parametrize("after", ["", "nope", "video_" + "0" * 32, "x" * 3000, "%00", "' OR 1=1 --"])
def test_bad_cursors_are_422(guarded: RunningServer, after: str) -> None:
    assert error_of(guarded.client.get("/v1/videos", params={"after": after}), 422)["param"] == "after"


@pytest.mark.parametrize(
    ("range_header", "status"),
    [("bytes=9-2", 416), ("bytes=999999999-", 416), ("bytes=-0", 416), ("bytes=abc", 400), ("items=0-1", 400),
     ("bytes=0-1,4-5", 400), ("bytes=-", 400), ("bytes=" + "9" * 30 + "-", 400), ("garbage", 400)],
)
def test_bad_ranges_answer_in_the_error_shape(guarded: RunningServer, range_header: str, status: int) -> None:
    job = guarded.client.post("/v1/videos/sync", json={"prompt": "ranges", "seed": 1}).json()
    response = guarded.client.get(f"/v1/videos/{job['id']}/content", headers={"range": range_header})
    error = error_of(response, status)
    assert error["param"] == "Range" and error["code"] in ("invalid_range", "range_not_satisfiable")
    if status == 416:
        assert response.headers["content-range"].startswith("bytes */")


def test_a_good_range_is_served(guarded: RunningServer) -> None:
    job = guarded.client.post("/v1/videos/sync", json={"prompt": "ranges", "seed": 1}).json()
    whole = guarded.client.get(f"/v1/videos/{job['id']}/content").content
    part = guarded.client.get(f"/v1/videos/{job['id']}/content", headers={"range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == whole[4:12]
    tail = guarded.client.get(f"/v1/videos/{job['id']}/content", headers={"range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == whole[-5:]


def test_a_body_over_the_limit_is_413_before_it_is_read(guarded: RunningServer) -> None:
    before = job_count(guarded)
    declared = guarded.client.post("/v1/videos", content=b"{" + b" " * UPLOAD_LIMIT + b"}",
                                   headers={"content-type": "application/json"})
    assert error_of(declared, 413)["param"] == "body"
    # A route that takes no upload keeps the small limit: a remix body as large as a create's is refused.
    remix = guarded.client.post("/v1/videos/video_" + "0" * 32 + "/remix", content=b"{" + b" " * LIMIT + b"}",
                                headers={"content-type": "application/json"})
    assert error_of(remix, 413)["param"] == "body"
    # Under the upload limit a create request is read (and this one refused for what it says, not its size).
    read = guarded.client.post("/v1/videos", content=b"{" + b" " * (2 * LIMIT) + b"}",
                               headers={"content-type": "application/json"})
    assert error_of(read, 422)["param"] == "prompt"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"prompt": "'
        for _ in range(UPLOAD_LIMIT // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    chunked = guarded.client.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
    assert error_of(chunked, 413)["code"] == "payload_too_large"
    assert job_count(guarded) == before


def test_a_huge_declared_body_is_refused_at_once(guarded: RunningServer) -> None:
    """100 MB declared: the 413 comes before a byte of the body is sent; what follows is dropped."""
    with socket.create_connection(_address(guarded), timeout=10) as sock:
        sock.sendall(b"POST /v1/videos HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + ALICE.encode() + b"\r\ncontent-length: 100000000\r\n\r\n")
        answer = _read_response(sock)
        sock.sendall(b"x" * 65536)  # the server reads on, and drops it, until the body deadline
    assert answer.startswith(b"HTTP/1.1 413") and answer.endswith(b"}") and b'"payload_too_large"' in answer


def test_slow_headers_are_cut_off(guarded: RunningServer) -> None:
    with socket.create_connection(_address(guarded), timeout=10) as sock:
        sock.sendall(b"GET /v1/videos HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
        started = time.monotonic()
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    assert time.monotonic() - started < 8


def test_a_silent_connection_is_closed(guarded: RunningServer) -> None:
    with socket.create_connection(_address(guarded), timeout=10) as sock:
        assert _read_until_closed(sock) == b""  # nothing asked, nothing answered: just closed


def test_a_slow_body_is_cut_off(guarded: RunningServer) -> None:
    before = job_count(guarded)
    with socket.create_connection(_address(guarded), timeout=10) as sock:
        sock.sendall(b"POST /v1/videos HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + ALICE.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"prompt\"")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    assert job_count(guarded) == before


def test_made_up_methods_and_paths_share_one_metric_series(guarded: RunningServer) -> None:
    for i in range(20):
        guarded.client.request(f"BREW{i}", f"/random/{i}")
    text = guarded.client.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("reelserve_http_requests_total{")]
    assert not any("BREW" in line or "/random/" in line for line in lines)
    assert any('method="other"' in line and 'route="unmatched"' in line for line in lines)


def test_the_openapi_document_lists_every_status(guarded: RunningServer) -> None:
    paths = guarded.client.get("/openapi.json").json()["paths"]
    create = paths["/v1/videos"]["post"]["responses"]
    assert {"200", "202", "400", "401", "413", "422", "429", "503"} <= set(create)
    assert create["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    for path, method in [("/v1/videos/{video_id}", "get"), ("/v1/videos/{video_id}", "delete"),
                         ("/v1/videos/{video_id}/cancel", "post"), ("/v1/videos/{video_id}/events", "get")]:
        assert {"200", "401", "404"} <= set(paths[path][method]["responses"]), (path, method)
    content = paths["/v1/videos/{video_id}/content"]["get"]["responses"]
    assert {"200", "206", "400", "404", "409", "416"} <= set(content)


def _address(running: RunningServer) -> tuple[str, int]:
    url = httpx.URL(running.url)
    assert url.port is not None
    return url.host, url.port


def _read_response(sock: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received

