"""The kill switch and the flatten do not wait for another control under way: pressed while an approve's order is
on the wire (the exchange holding create_order), HALTED is stored at once (a flatten's positions to close with it),
and `ffe ctl halt` and `ffe ctl flatten` answer well within their time with what is done and what is still under
way, never "no answer" for an engine that stored HALTED. The rest follows once the approve has ended: the approved
order cancelled, the pending approvals rejected, a flatten's closing orders placed, each said by its kill_switch
event. Real engines over real SQLite files, the paper venue behind an exchange that holds create_order on the wire,
the real control socket, and `ffe ctl` as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from ffe_engine.clock import ManualClock
from ffe_engine.control import ControlServer
from ffe_engine.model import EngineState

from conftest import db_rows, run_ffe, wait_until
from pipeline_helpers import BUY, paper_venue, pipelines
from test_approval_ends_once import SlowVenue, manual, on_the_wire

_ = pipelines  # a fixture

BTC, ETH = "BTC/USDT", "ETH/USDT"
ANSWER_S = 4.0  # `ffe ctl --timeout`: with no answer within it, ctl says "no answer" and exits 1


@contextlib.asynccontextmanager
async def served(p):
    """The pipeline's engine on its real control socket, as `ffe run` serves it."""
    server = ControlServer(p.engine, p.settings.socket_path, data_dir=p.settings.data_dir)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def ctl(cwd, *args: str):
    """`ffe ctl ARGS` as a subprocess, run while the engine's loop goes on. Its exit 0 with the engine's answer is
    the proof that the answer came within `--timeout` (the process's own start, slow on a loaded machine, is no part
    of it)."""
    return await asyncio.to_thread(run_ffe, cwd, "ctl", *args, "--data-dir", "data", "--timeout", f"{ANSWER_S:g}")


def kill_events(db) -> list[dict]:
    return [json.loads(d) for (d,) in db_rows(db, "SELECT data FROM events WHERE event = 'kill_switch' ORDER BY seq")]


async def until(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_ffe_ctl_halt_answers_at_once_while_an_approve_s_order_is_on_the_wire(tmp_path, pipelines):
    # The reported case: approved with `a` while the exchange holds create_order; the kill switch pressed from a
    # shell 2 s later. HALTED is stored at the press, and the answer says so with what waits for the approve.
    s = manual(tmp_path)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    await p.bars(1)
    [aid] = p.engine.pending
    async with served(p):
        approving = await on_the_wire(p, aid)
        halt = await ctl(tmp_path, "halt")
        assert halt.returncode == 0, halt.stdout + halt.stderr
        headline = halt.stdout.splitlines()[0]
        assert headline.startswith("KILL SWITCH: HALTED by ctl: cancelled 0 failed 0"), headline
        assert f"under way: the approve of {aid}" in headline, headline
        assert db_rows(s.db_path, "SELECT state, reason, by FROM engine_state") == [("HALTED", "ffe ctl halt", "ctl")]
        assert not approving.done() and p.engine.state is EngineState.HALTED
        assert kill_events(s.db_path) == []  # its full report is the kill_switch event, once the approve is done

        p.venue.release.set()
        res = await asyncio.wait_for(approving, timeout=10)
        cid = res["client_order_id"]
        await until(lambda: kill_events(s.db_path), "the kill switch's report")
    [event] = kill_events(s.db_path)
    assert event["by"] == "ctl" and event["action"] == "halt" and cid in event["cancelled"], event
    assert db_rows(s.db_path, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
    assert p.engine.pending == {}


async def test_a_second_halt_while_the_first_waits_for_the_approve_answers_at_once(tmp_path, pipelines):
    # K then y in the attached console, and `ffe ctl halt` from a shell: the second finds the engine HALTED and the
    # controls still held by the approve; it answers at once too, and neither sends a cancel twice.
    s = manual(tmp_path)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    await p.bars(1)
    [aid] = p.engine.pending
    async with served(p):
        approving = await on_the_wire(p, aid)
        first = asyncio.ensure_future(p.engine.halt(reason="kill switch", by="operator"))
        await until(lambda: p.engine.state is EngineState.HALTED, "HALTED at the press")
        halt = await ctl(tmp_path, "halt")
        assert halt.returncode == 0, halt.stdout + halt.stderr
        assert "under way" in halt.stdout.splitlines()[0], halt.stdout
        assert db_rows(s.db_path, "SELECT state, by FROM engine_state") == [("HALTED", "operator")]
        p.venue.release.set()
        res = await asyncio.wait_for(approving, timeout=10)
        await asyncio.wait_for(first, timeout=10)
        await until(lambda: len(kill_events(s.db_path)) == 2, "both kill switches' reports")
    cancelled = [e["cancelled"] for e in kill_events(s.db_path)]
    assert sorted(cancelled, key=len) == [[], [res["client_order_id"]]], cancelled


async def test_ffe_ctl_flatten_stores_halted_at_once_and_closes_once_the_approve_has_ended(tmp_path, pipelines):
    # A position held (ETH), an approve on the wire (BTC): the flatten is HALTED at the press with what it closes
    # stored (a restart goes on with it), answers at once saying its closing orders wait for the approve, and
    # places them once the approve has ended: the approve's BTC as well.
    s = manual(tmp_path)
    p = await pipelines(s, script={BTC: (BUY, 0.8), ETH: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue),
                        clock=ManualClock())
    await p.bars(1)
    by_symbol = {a["symbol"]: aid for aid, a in p.engine.pending.items()}
    assert (await p.engine.approve(by_symbol[ETH]))["accepted"]
    await p.bars(1)
    assert p.engine.portfolio.holding(ETH) is not None
    async with served(p):
        approving = await on_the_wire(p, by_symbol[BTC])
        flat = await ctl(tmp_path, "flatten", "--yes")
        assert flat.returncode == 0, flat.stdout + flat.stderr
        headline = flat.stdout.splitlines()[0]
        assert headline.startswith("FLATTEN, then HALTED, by ctl: cancelled 0 failed 0 closing 0"), headline
        assert f"under way: the approve of {by_symbol[BTC]}" in headline and "closing orders" in headline, headline
        assert db_rows(s.db_path, "SELECT state, reason, by FROM engine_state") == [("HALTED", "flatten", "ctl")]
        [(stored,)] = db_rows(s.db_path, "SELECT value FROM kv WHERE key = 'flatten_under_way'")
        assert ETH in json.loads(stored), stored
        assert not approving.done()

        p.venue.release.set()
        await asyncio.wait_for(approving, timeout=10)
        await until(lambda: any(e["action"] == "flatten" for e in kill_events(s.db_path)), "the flatten's report")
    [event] = [e for e in kill_events(s.db_path) if e["action"] == "flatten"]
    assert event["by"] == "ctl" and event["closing"] and event["failed"] == [], event
    await p.bars(2)
    assert p.engine.portfolio.holding(ETH) is None
    assert p.engine.state is EngineState.HALTED


async def test_a_flatten_pressed_while_an_approve_is_on_the_wire_is_halted_at_the_press(tmp_path, pipelines):
    # The console's F and y, in its process: no strategy order may pass while the flatten waits for the approve.
    s = manual(tmp_path)
    p = await pipelines(s, script={BTC: (BUY, 0.8)}, venue=paper_venue(s, SlowVenue), clock=ManualClock())
    await p.bars(1)
    [aid] = p.engine.pending
    approving = await on_the_wire(p, aid)
    flattening = asyncio.ensure_future(p.engine.flatten(by="operator"))
    await asyncio.sleep(0.3)
    assert p.engine.state is EngineState.HALTED
    assert await p.rows("SELECT state, reason, by FROM engine_state") == [("HALTED", "flatten", "operator")]
    p.venue.release.set()
    await asyncio.wait_for(approving, timeout=10)
    await asyncio.wait_for(flattening, timeout=10)
