"""A small HTTP/1.1 server on asyncio streams, for the monitor's GET /health and GET /metrics.

What the endpoint needs is small: a request line and headers, a handler per path, one response with its length,
then the connection closes. A full web framework would do it too, but importing one costs every engine start
about a tenth of a second (aiohttp builds its TLS contexts at import), most of it for features never used here.
Bounded: a request head over `max_head` bytes, or not complete within `read_timeout_s`, is answered 400 or
dropped, so a slow or hostile client holds one connection for a few seconds at most.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from http import HTTPStatus
from typing import Awaitable, Callable

from . import logs

log = logs.get_logger("ffe.httpd")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()  # more header lines, (name, value)


Handler = Callable[[dict[str, str]], Awaitable[Response]]  # the request's headers (names in lower case)


class HttpServer:
    def __init__(self, routes: dict[str, Handler], *, read_timeout_s: float = 5.0, max_head: int = 16384) -> None:
        self.routes = routes
        self.read_timeout_s = read_timeout_s
        self.max_head = max_head
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (the one chosen when `port` is 0). OSError when the address cannot be had."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=self.max_head)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):  # a client that keeps its connection open must not hold up the stop
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            response, head_only = await self._answer(reader)
            if response is not None:
                reason = HTTPStatus(response.status).phrase
                more = "".join(f"{name}: {value}\r\n" for name, value in response.headers)
                head = (f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}\r\n{more}"
                        f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n")
                writer.write(head.encode("latin-1") + (b"" if head_only else response.body))
                await asyncio.wait_for(writer.drain(), self.read_timeout_s)
        except (OSError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to tell it
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self.read_timeout_s)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response | None, bool]:
        """The response to the request on `reader` (None: no request came), and whether it is to a HEAD."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout_s)
        except asyncio.LimitOverrunError:
            return Response(431, b"request head too large\n"), False
        except (asyncio.IncompleteReadError, TimeoutError):
            return None, False
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return Response(400, b"bad request\n"), False
        method, target = parts[0], parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    return Response(400, b"bad header\n"), False
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        handler = self.routes.get(path)
        if handler is None:
            return Response(404, b"not found\n"), method == "HEAD"
        if method not in ("GET", "HEAD"):
            return Response(405, b"GET only\n"), False
        try:
            return await handler(headers), method == "HEAD"
        except Exception as exc:  # a failing handler is answered, and said in the log; the server goes on
            log.error("http handler failed", path=path, error=f"{type(exc).__name__}: {exc}")
            return Response(500, b"internal error\n"), False
