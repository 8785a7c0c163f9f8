"""DISK_LOW is said once until the disk has 10% more room again (monitor.disk_free_min_mb), across restarts too: an
engine restarted while the disk stays low (a deploy, systemd after a crash) does not warn again at every start; a
start that finds the room back ends it, and the next time the disk runs low is news.

Real parts: engines started one after another on one data directory (its SQLite database), their monitors
delivering to a webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

from conftest import db_value, engine_session, make_settings
from receiver import Receiver
from test_alert_returns import FAST
from test_monitor import until

LOW = {"disk_free_min_mb": 1e9}  # more than any disk here: low from the start
ROOM = {"disk_free_min_mb": 0.0}  # not watched: room enough


def _raised(settings) -> int:
    """The DISK_LOW alerts the engines raised (the outbox keeps each)."""
    return int(db_value(settings.db_path, "SELECT COUNT(*) FROM alert_outbox WHERE kind = 'DISK_LOW'") or 0)


async def _start_and_look(tmp_path, hook: Receiver, monitor: dict) -> int:
    """One start: its monitor looks at the disks (as it does every second), its alerts are written; how many
    DISK_LOW alerts were raised so far, this start's included."""
    settings = make_settings(tmp_path, alerts={"webhook_url": hook.url, **FAST}, monitor=monitor)
    async with engine_session(settings) as host:
        host.monitor.notifier.tick()
        await host.store.flush()
    return _raised(settings)


async def test_disk_low_is_not_said_again_by_a_restart_while_the_disk_stays_low(tmp_path):
    hook = await Receiver().start()
    try:
        assert await _start_and_look(tmp_path, hook, LOW) == 1
        await until(lambda: hook.delivered_of("DISK_LOW"), what="DISK_LOW")
        assert await _start_and_look(tmp_path, hook, LOW) == 1  # still low: said already
        assert await _start_and_look(tmp_path, hook, LOW) == 1
        assert await _start_and_look(tmp_path, hook, ROOM) == 1  # room again: the episode ends
        assert await _start_and_look(tmp_path, hook, LOW) == 2  # low again: news
    finally:
        await hook.stop()
