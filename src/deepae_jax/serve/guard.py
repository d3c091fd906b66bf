"""Slow or many clients cannot hold the service: read timeouts and a connection cap.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), open connections
(``limit_concurrency``: a 503 past it) and the size of an unfinished header block
(``h11_max_incomplete_event_size``), but not the time a client takes to send its headers: a
client that connects and sends half a request line would hold its connection forever. The
protocol of :func:`guarded_protocol` closes a connection whose request headers are not complete
``header_timeout`` seconds after it started sending them (or after it connected); the body's
read timeout is the app's (``serve.app``'s body middleware: 408).
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on every request's header block."""

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # headers of a request still to come
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # nothing was answered: no request was read

    return HeaderTimeoutH11


def uvicorn_config(app, log_level: str, header_timeout: float, max_connections: int,
                   max_header_bytes: int):
    """The uvicorn.Config of the service: the guarded protocol, a 5 s keep-alive, at most
    ``max_connections`` connections (503 past them) and header blocks of ``max_header_bytes``."""
    import uvicorn
    return uvicorn.Config(app, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=5, http=guarded_protocol(header_timeout),
                          timeout_keep_alive=5, limit_concurrency=max_connections,
                          h11_max_incomplete_event_size=max_header_bytes)
