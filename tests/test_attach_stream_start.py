"""How an event stream begins: the engine's snapshot and its latest events before it, sent at once to a console
that has had no chance to read them yet. Whatever `control.stream_buffer_kb` is (16 KiB up), that beginning is room
besides the buffer, never a console that stopped reading; and a stream the engine ends while it begins is never
said to be a full control socket."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from conftest import db_value, ffe_env, make_settings, wait_until

from ffe_engine.clock import WallClock
from ffe_engine.control import EARLIER, EARLIER_EVENTS, SNAPSHOT
from ffe_engine.errors import ControlError
from ffe_engine.events import EventBus
from ffe_engine.remote import CONNECT_TRIES, RemoteEngine, attach

DROPPED = "event stream subscribers disconnected: not reading"


@pytest.mark.parametrize("buffer_kb", ["16", "256"])
async def test_a_console_attaches_to_an_engine_with_a_full_history_at_a_small_stream_buffer(tmp_path, spawn_ffe,
                                                                                           buffer_kb):
    # An unpaced market makes the engine's EARLIER_EVENTS decisions (about 1 KiB each) within seconds: the stream
    # begins with far more than the buffer and than the kernel's socket buffer takes.
    engine = spawn_ffe(tmp_path, "run", "--headless", "--data-dir", "data", "--log-dir", "logs",
                       env=ffe_env(FFE_CONTROL__STREAM_BUFFER_KB=buffer_kb), name="headless")
    settings = make_settings(tmp_path)
    db = tmp_path / "data" / "ffe.db"
    wait_until(lambda: settings.socket_path.exists() and db.exists()
               and db_value(db, "SELECT COUNT(*) FROM decisions") > EARLIER_EVENTS + 100, timeout=120,
               what="more decisions than an attaching console begins with")
    remote = RemoteEngine(settings.socket_path, EventBus(WallClock()), data_dir=settings.data_dir, timeout=30)
    try:
        await remote.connect()
        assert len(remote.earlier) == EARLIER_EVENTS
        seqs = [ev.seq for ev in remote.earlier]
        assert seqs == sorted(seqs) and remote.identity.get("pid") == engine.pid
    finally:
        remote.request_stop()
    assert DROPPED not in engine.stderr, engine.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait(timeout=60) == 0, engine.stderr


async def test_a_stream_the_engine_ends_while_it_begins_is_not_said_to_be_a_full_control_socket(tmp_path):
    # A socket that answers a status, then ends each event stream after its first lines, as an engine ends the
    # stream of a console that leaves control.stream_buffer_kb of events unread: the connection was served, so the
    # socket had room for it; max_connections is no cause of it.
    settings = make_settings(tmp_path, control={"request_timeout_s": 2.0})
    settings.socket_path.parent.mkdir(parents=True, exist_ok=True)
    streams = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal streams
        request = json.loads(await reader.readline())
        if request["cmd"] == "status":
            writer.write(b'{"ok": true, "result": {"state": "RUNNING"}, "engine": {"pid": 1}}\n')
        else:
            streams += 1
            writer.write(json.dumps({"event": SNAPSHOT, "snapshot": {"state": "RUNNING"},
                                     "engine": {"pid": 1, "instance": "x"}}).encode() + b"\n"
                         + json.dumps({"event": EARLIER, "count": 500}).encode() + b"\n"
                         + b'{"event": "engine_state", "seq": 1, "ts": 1.0, "aud')
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_unix_server(serve, path=str(settings.socket_path))
    try:
        with pytest.raises(ControlError) as raised:
            await attach(settings)
    finally:
        server.close()
    said = str(raised.value)
    assert streams == CONNECT_TRIES, said
    assert "max_connections" not in said and "busy" not in said and "socket full" not in said, said
    assert "closed its event stream" in said and "stream_buffer_kb" in said, said
    assert "not reading" in said and said.startswith(f"attaching failed {CONNECT_TRIES} times: "), said
