"""The HTTP server around the app: uvicorn, with deadlines on reading a request.

uvicorn closes a connection idle between requests (``timeout_keep_alive``), but not one that sends
its headers, or its body, a byte at a time: each byte restarts nothing and nothing ends it, so a few
hundred slow clients hold their sockets for ever (slowloris). ``DeadlineProtocol`` gives each request
``header_timeout_s`` from its first byte (or from the connection's start) to finish its headers, and
``body_timeout_s`` from then to finish its body. Past either, the client gets a 408 in the API's
error shape when a request had begun, and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from reelserve.schemas import ErrorCode, ReelserveError


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus read deadlines; subclassed per server by ``deadline_protocol``."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting: str | None = None  # "headers" or "body": what the armed deadline waits for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm, keep or drop the deadline for what the connection now waits for from the client."""
        state = self.conn.their_state
        if state is h11.IDLE and self.timeout_keep_alive_task is None:
            self._arm("headers", self.header_timeout_s)  # a new connection, or a request begun
        elif state is h11.SEND_BODY:
            self._arm("body", self.body_timeout_s)
        else:  # idle between requests (keep-alive's own timer), body complete, or closing
            self._disarm()

    def _arm(self, awaiting: str, seconds: float) -> None:
        if self._awaiting == awaiting:
            return  # a deadline runs from the start of what it waits for: new bytes do not extend it
        self._disarm()
        self._awaiting = awaiting
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._awaiting = None, None

    def _expired(self) -> None:
        awaiting, self._deadline, self._awaiting = self._awaiting, None, None
        if self.transport.is_closing():
            return
        if awaiting == "body" and self.cycle is not None and not self.cycle.response_started:
            # The app stops waiting for the body (it reads a disconnect) and may send nothing more.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._send_408(f"the request body did not arrive within {self.body_timeout_s:g} s")
        elif awaiting == "headers" and self.conn.their_state is h11.IDLE and self._started_request():
            self._write_raw_408(f"the request headers did not arrive within {self.header_timeout_s:g} s")
        self.transport.close()

    def _started_request(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _send_408(self, message: str) -> None:
        body, headers = _timeout_body(message)
        try:
            response = h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
            self.transport.write(self.conn.send(response))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass  # h11 cannot answer in this state; closing is answer enough

    def _write_raw_408(self, message: str) -> None:
        # h11 answers only a request it has parsed; these headers never finished, so write the bytes.
        body, headers = _timeout_body(message)
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\n" + head + b"\r\n" + body)


def _timeout_body(message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = ReelserveError(ErrorCode.request_timeout, message).body().model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return body, headers


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[DeadlineProtocol]:
    """A ``DeadlineProtocol`` with these deadlines (uvicorn instantiates the class it is given)."""
    return type(  # type: ignore[return-value]
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout_s: float = 10.0,
    body_timeout_s: float = 30.0,
    keep_alive_s: int = 5,
    log_level: str = "info",
) -> uvicorn.Config:
    """The one way every reelserve process (and every test server) is served."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=deadline_protocol(header_timeout_s, body_timeout_s),
        timeout_keep_alive=keep_alive_s,
    )
