"""The monitor's HTTP server (ffe_engine/httpd.py) against real clients on a real socket: what it answers, and that
a bad, oversized, slow or lingering client neither gets more nor holds up the others or the stop."""

from __future__ import annotations

import asyncio

import aiohttp

from ffe_engine.httpd import HttpServer, Response


async def hello(headers: dict[str, str]) -> Response:
    return Response(200, f"hello {headers.get('x-name', '?')}\n".encode())


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def broken(headers: dict[str, str]) -> Response:
    raise RuntimeError("a bug in a handler")


def test_routes_methods_and_bad_requests():
    async def main() -> None:
        server = HttpServer({"/hello": hello, "/broken": broken})
        port = await server.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/hello?x=1", headers={"X-Name": "ops"}) as r:
                    assert (r.status, await r.text()) == (200, "hello ops\n")
                    assert r.headers["Content-Type"].startswith("text/plain")
                async with s.get(f"http://127.0.0.1:{port}/other") as r:
                    assert r.status == 404
                async with s.post(f"http://127.0.0.1:{port}/hello", data=b"x") as r:
                    assert r.status == 405
                async with s.head(f"http://127.0.0.1:{port}/hello") as r:
                    assert r.status == 200 and await r.read() == b""
                async with s.get(f"http://127.0.0.1:{port}/broken") as r:
                    assert r.status == 500
                async with s.get(f"http://127.0.0.1:{port}/hello") as r:  # and it goes on serving
                    assert r.status == 200
            assert (await raw(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            assert (await raw(port, b"GET /hello HTTP/1.1\r\nno colon here\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            huge = b"GET /hello HTTP/1.1\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n"
            assert (await raw(port, huge)).startswith(b"HTTP/1.1 431 ")
        finally:
            await server.close()

    asyncio.run(main())


def test_a_silent_client_is_dropped_and_does_not_hold_up_the_others_or_the_stop():
    async def main() -> None:
        server = HttpServer({"/hello": hello}, read_timeout_s=0.3)
        port = await server.start("127.0.0.1", 0)
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        silent_writer.write(b"GET /hel")  # and nothing more
        await silent_writer.drain()
        answer = await raw(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello ?\n")
        assert await asyncio.wait_for(silent_reader.read(), 10) == b""  # dropped, without an answer
        lingering_reader, lingering_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.close(), 10)  # a connection still open does not hold up the stop
        assert await asyncio.wait_for(lingering_reader.read(), 10) == b""
        silent_writer.close()
        lingering_writer.close()

    asyncio.run(main())
