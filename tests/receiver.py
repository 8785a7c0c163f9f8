"""A real HTTP receiver on 127.0.0.1 standing in for an alert channel or a heartbeat service: it records every
request (path, headers, JSON body) and answers by a schedule the test controls (ok, fail with a status, or hang)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    at: float = 0.0  # when it arrived (time.monotonic)


@dataclass
class Receiver:
    requests: list[Received] = field(default_factory=list)  # every request, answered or not
    delivered: list[Received] = field(default_factory=list)  # the requests answered 200
    fail_with: int | None = None  # answer this status instead of 200 while set
    fail_next: int = 0  # answer 503 to this many requests, then go back to the schedule
    hang: bool = False  # never answer
    hold: asyncio.Event | None = None  # while given and not set, a request waits for it before it is answered
    hold_kind: str = ""  # when set, only a request whose JSON body has this kind waits for `hold`
    retry_after: str | None = None  # the Retry-After header of the answers that fail (fail_with, fail_next)
    telegram: bool = False  # answer like the Bot API ({"ok": true})
    redirect: bool = False  # answer 302 to /login (a webhook behind a sign-in proxy), which answers a GET 200
    answer: tuple[int, str] | None = None  # answer this status and body instead (not counted as delivered)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        rec = Received(request.method, request.path, body, dict(request.headers), time.monotonic())
        self.requests.append(rec)
        if self.hang:
            await asyncio.Event().wait()
        if self.redirect and request.path != "/login":
            return web.Response(status=302, headers={"Location": "/login"})
        if request.path == "/login":
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        held = not self.hold_kind or isinstance(body, dict) and body.get("kind") == self.hold_kind
        if self.hold is not None and held:
            await self.hold.wait()
        if self.answer is not None:
            return web.Response(status=self.answer[0], text=self.answer[1])
        failing = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="down", headers=failing)
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text="down", headers=failing)
        self.delivered.append(rec)
        if self.telegram:
            return web.json_response({"ok": True, "result": {}})
        return web.Response(text="ok")

    def delivered_of(self, kind: str) -> list[dict]:
        """The JSON bodies delivered of one alert kind (a webhook's), in the order they came."""
        return [r.body for r in self.delivered if isinstance(r.body, dict) and r.body.get("kind") == kind]

    def texts(self) -> list[str]:
        """The alert texts delivered, whatever the channel's format."""
        out = []
        for r in self.delivered:
            b = r.body if isinstance(r.body, dict) else {}
            out.append(str(b.get("text") or b.get("content") or ""))
        return out

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
