"""The local control socket: `ffe ctl ...` talks to a running engine through it.

One JSON object per line each way. Request: {"cmd": "pause", "args": {...}}. Answer: {"ok": true, "result": ...}
or {"ok": false, "error": "..."}. The socket is a Unix socket in the data directory, readable by its owner only.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from .engine import ControlError, Engine
from .events import encode

COMMANDS = ("status", "pause", "resume", "halt", "flatten", "approve", "reject", "mode", "accept", "order",
            "subscribe")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return {k: _jsonable(getattr(x, k)) for k in x.__dataclass_fields__}
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


async def dispatch(engine: Engine, cmd: str, args: dict[str, Any]) -> Any:
    by = str(args.get("by") or "ctl")
    if cmd == "status":
        return engine.snapshot()
    if cmd == "pause":
        return (await engine.pause(reason="ffe ctl pause", by=by)).value
    if cmd == "resume":
        return (await engine.resume(by=by, confirm=bool(args.get("confirm")))).value
    if cmd == "halt":
        return await engine.halt(reason="ffe ctl halt", by=by)
    if cmd == "flatten":
        return await engine.flatten(by=by)
    if cmd == "approve":
        return await engine.approve(str(args["id"]), by=by)
    if cmd == "reject":
        return await engine.reject(str(args["id"]), by=by)
    if cmd == "mode":
        return await engine.set_approval_mode(str(args["mode"]), by=by)
    if cmd == "accept":
        await engine.accept_reconcile(by=by)
        return "accepted"
    if cmd == "order":
        return await engine.operator_order(str(args["symbol"]), str(args["side"]), float(args["quantity"]), by=by)
    raise ControlError(f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})")


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
                    if req.get("cmd") == "subscribe":
                        await self._stream(writer)
                        return
                    result = await dispatch(self.engine, str(req.get("cmd", "")), dict(req.get("args") or {}))
                    answer = {"ok": True, "result": _jsonable(result)}
                except (ControlError, KeyError, ValueError, TypeError) as exc:
                    answer = {"ok": False, "error": str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"}
                writer.write((json.dumps(answer, default=str) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


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
