"""The console's status line shows where the monitor answers and whether the alert channels deliver."""

from __future__ import annotations

from receiver import Receiver
from test_tui_helpers import console, running, status_text, until


async def test_status_line_shows_the_monitor_address_and_a_failing_alert_channel(tmp_path):
    hook = await Receiver().start()
    hook.fail_with = 503
    app = console(tmp_path, speed=20.0, alerts={"webhook_url": hook.url + "/secret-path-77", "retry_initial_s": 0.05,
                                                "retry_max_s": 0.2, "retry_attempts": 2})
    async with app.run_test(size=(200, 30)) as pilot:
        await running(pilot)
        url = app.running.monitor.url
        assert url is not None
        await until(pilot, lambda: f"monitor {url.removeprefix('http://')}" in status_text(app), "the address")
        await until(pilot, lambda: "alerts webhook FAILING" in status_text(app), "the failing channel")
        hook.fail_with = None
        await until(pilot, lambda: "alerts ok (1)" in status_text(app), "the channel delivering again")
        assert "secret-path-77" not in status_text(app)
        await pilot.press("q")
    await hook.stop()
