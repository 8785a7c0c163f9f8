"""The disaster drill: a live engine on the fake Binance (real ccxt, real `ffe` subprocesses), backed up while it
trades, trading on after the backup, SIGKILLed, its data and log directories deleted, restored from the backup and
started again.

Afterwards every fill the exchange made is in the database (those made after the backup recovered from the
exchange and marked so), no client order id was sent twice, and the engine's book is the exchange's. The drill
prints its RPO (records lost locally, recovered from the exchange) and RTO (seconds from the restore command to the
engine reconciled and answering); neither is asserted against the wall clock.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pytest

from ffe_engine import backup as bk
from ffe_engine.config import load_settings
from ffe_engine.control import request
from live_helpers import (BTC, POST_ORDER, fx, live_config, live_env, processes, rows,  # noqa: F401
                          run_ffe_async, stored_events, wait_for, wait_for_bar, write_config)
from test_live_restart import start_engine


async def order(sock, side: str, quantity: float) -> str:
    answer = await request(sock, "order", {"symbol": BTC, "side": side, "quantity": quantity})
    assert answer["ok"] and answer["result"]["accepted"], answer
    return answer["result"]["client_order_id"]


async def test_disaster_drill_backup_kill_delete_restore_start(tmp_path, fx, processes):
    write_config(tmp_path, live_config(fx, engine={"live_start_paused": False}, risk={"max_open_positions": 10},
                                       backup={"dir": str(tmp_path / "backups")}))
    env = live_env(fx)
    data, logs = tmp_path / "data", tmp_path / "logs"
    db, sock = data / "ffe.db", data / "ffe.sock"

    # 1. trade: two buys, the second filled by half and still open at the backup
    first = await start_engine(tmp_path, fx, processes, "first")
    await wait_for_bar(sock, fx)
    before = [await order(sock, "buy", 0.01)]
    fx.partial_fill_next(0.5)
    before.append(await order(sock, "buy", 0.01))
    await wait_for(lambda: rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (before[1],))
                   == [("open", 0.005)], what="the half-filled buy open in the journal")

    # 2. back up the running engine
    backup = await run_ffe_async(tmp_path, "backup", env=env, name="backup")
    assert backup.proc.returncode == 0, backup.stderr
    (archive,) = (tmp_path / "backups").glob("ffe-backup-*.tar.zst")
    assert "from the running engine" in backup.stdout

    # 3. trade on: the open buy fills at the exchange, a sell and a buy are placed and filled
    fx.fill(before[1])
    after = [await order(sock, "sell", 0.005), await order(sock, "buy", 0.02)]
    await wait_for(lambda: rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (before[1],))
                   == [("filled",)], what="the rest of the half-filled buy seen by the engine")

    # 4. the disaster: SIGKILL, and the records are gone
    await first.kill()
    shutil.rmtree(data)
    shutil.rmtree(logs)

    # 5. restore, start; the clock runs from the restore command to the engine reconciled and answering
    t0 = time.monotonic()
    restore = await run_ffe_async(tmp_path, "restore", str(archive), "--data-dir", str(data), "--log-dir",
                                  str(logs), env=env, name="restore")
    assert restore.proc.returncode == 0, restore.stderr
    second = await start_engine(tmp_path, fx, processes, "second")  # answers once its start reconciled
    rto = time.monotonic() - t0

    # the start recovered the orders made after the backup from the exchange, then reconciled with nothing
    # unexplained: RUNNING, nothing to accept
    (recovered,) = stored_events(db, "recovered")
    assert recovered["status"] == "recovered" and recovered["orders"] == after, recovered
    reconciled = [e for e in stored_events(db, "reconcile") if e["seq"] > recovered["seq"]]
    assert reconciled and reconciled[0]["differences"] == [], reconciled
    status = (await request(sock, "status"))["result"]
    assert status["state"] == "RUNNING" and status["reconcile_blocked"] == [], status

    # every fill the exchange made is in the database, order by order
    venue_filled = {o.client_id: o.filled for o in fx.orders}
    db_filled = dict(rows(db, "SELECT client_order_id, SUM(quantity) FROM fills GROUP BY client_order_id"))
    assert db_filled.keys() == venue_filled.keys() == set(before + after)
    for cid, qty in venue_filled.items():
        assert db_filled[cid] == pytest.approx(qty), cid
    # those made after the backup are marked as recovered from the exchange; the others are the engine's own
    intents = {cid: json.loads(i) for cid, i in rows(db, "SELECT client_order_id, intent FROM orders")}
    assert {cid for cid, i in intents.items() if "recovered" in i} == set(after)
    assert all(intents[cid]["recovered"]["backup"] == archive.name for cid in after)

    # no client order id went to the exchange twice
    sent = Counter(r.params.get("newClientOrderId") for r in fx.requests_to(POST_ORDER))
    assert sent == Counter(before + after)

    # the engine's book is the exchange's: the position is the account's BTC, no order open on either side
    btc = fx.balances["BTC"]
    assert [(p["symbol"], p["quantity"]) for p in status["positions"]] == [(BTC, pytest.approx(btc.total))]
    assert rows(db, "SELECT symbol, quantity FROM positions") == [(BTC, pytest.approx(btc.total))]
    assert status["orders"] == [] and fx.open_orders() == []
    assert status["cash"] == pytest.approx(fx.balances["USDT"].total, abs=0.01)

    # the journal and the trail the restored engine went on writing are whole: a backup of them verifies
    assert await second.stop() == 0, second.stderr
    settings = load_settings(config_path=tmp_path / "config.toml", data_dir=data,
                             log_dir=logs)
    checked = bk.verify(bk.take_stopped(settings, tmp_path / "after", time.time()).path)
    assert checked.fills == len(before) + len(after) + 1 and checked.orders == len(before) + len(after)

    # the fills of the orders placed after the backup, and the rest of the one open at it
    fills_lost = recovered["fills"] + 1
    print(f"\nRPO: {len(recovered['orders'])} orders and {fills_lost} fills made after the backup were lost locally; "
          f"all recovered from the exchange, none lost for good")
    print(f"RTO: {rto:.2f}s from `ffe restore` to the engine reconciled and answering")
    print(f"backup: {backup.stdout.strip()}")
    assert fx.secret not in second.stderr + first.stderr + restore.stderr + backup.stderr
