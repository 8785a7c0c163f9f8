"""The local control socket: `ffe ctl ...` talks to a running engine through it.

One JSON object per line each way. Request: {"cmd": "pause", "args": {...}}. Answer: {"ok": true, "result": ...}
or {"ok": false, "error": "..."}. The socket is a Unix socket in the data directory, readable by its owner only.
"""

from __future__ import annotations

import asyncio
import json
import os
from enum import Enum
from pathlib import Path
from typing import Any

import structlog

from .api import STREAM, dispatch
from .engine import Engine
from .errors import ControlError
from .events import encode

log = structlog.get_logger("ffe.control")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return {k: _jsonable(getattr(x, k)) for k in x.__dataclass_fields__}
    if isinstance(x, Enum):
        return x.value
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


class ControlServer:
    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()  # a stale socket from a previous run: the data-dir lock says we are the only one
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Every event from now on, one JSON line each, until the client goes away (ffe attach)."""
        sub = self.engine.bus.subscribe(maxlen=20_000)
        try:
            writer.write(encode({"event": "snapshot", "snapshot": _jsonable(self.engine.snapshot())}) + b"\n")
            await writer.drain()
            while True:
                batch = await sub.get_batch(timeout=1.0)
                if batch:
                    writer.write(b"".join(event_line(ev) for ev in batch))
                    await writer.drain()
        finally:
            self.engine.bus.unsubscribe(sub)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = json.loads(line)
                except ValueError as exc:
                    answer: dict[str, Any] = {"ok": False, "error": f"not a JSON request: {exc}"}
                else:
                    if isinstance(req, dict) and req.get("cmd") == STREAM:
                        await self._stream(writer)
                        return
                    answer = await self._answer(req)
                writer.write((json.dumps(answer, default=str) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, req: Any) -> dict[str, Any]:
        try:
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ControlError('a request is {"cmd": NAME, "args": {...}}')
            result = await dispatch(self.engine, req["cmd"], req.get("args"))
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # the engine failed to carry it out: the caller is told what, the socket stays up
            log.warning("control command failed", cmd=req.get("cmd"), error=f"{type(exc).__name__}: {exc}")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "result": _jsonable(result)}


def event_line(ev) -> bytes:
    """One event for a remote console: name, seq, ts and the event's fields."""
    rec = {"event": ev.name, "seq": ev.seq, "ts": ev.ts, "audit": ev.audit}
    rec.update(ev.payload())
    return encode(rec) + b"\n"


async def request(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    try:
        writer.write((json.dumps({"cmd": cmd, "args": args or {}}) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return json.loads(line)
    finally:
        writer.close()
