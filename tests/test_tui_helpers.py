"""Shared by the console tests (no tests here): a console on a real engine and a seeded simulated market under
tmp_path, and ways to read what is on its screen."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

from conftest import make_settings

from ffe_engine.clock import SimClock
from ffe_engine.ids import IdSource
from ffe_engine.market.simulated import SimulatedFeed
from ffe_tui.app import ConsoleApp

START_TS = 1_700_000_040_000  # a fixed first live bar (2023-11-14 22:14 UTC): the same market every run
SIZES = [(80, 24), (120, 40)]
SIZE_IDS = ["80x24", "120x40"]


def console(tmp_path: Path, *, speed: float = 8.0, max_bars: int | None = None, approval: str = "auto",
            ttl: float = 120.0, keys: dict[str, str] | None = None, chart: bool = True, feed_class=SimulatedFeed,
            clock: SimClock | None = None, ids: IdSource | None = None, **overrides: Any) -> ConsoleApp:
    """The console as `ffe run` builds it, on a market paced at `speed` bars per second (both symbols per bar), and
    with `ids`, order and decision ids from that source (random otherwise, as in a real run)."""
    settings = make_settings(tmp_path, engine={"warmup_bars": 100, "approval": approval, "approval_ttl_s": ttl},
                             market={"speed": speed, "seed": 7}, tui={"keys": keys or {}, "chart": chart}, **overrides)
    clock = clock or SimClock(paced=True)
    feed = feed_class(list(settings.engine.symbols), settings.engine.timeframe_ms, seed=7, clock=clock, speed=speed,
                      start_ts=START_TS, max_bars=max_bars)
    return ConsoleApp(settings, feed=feed, clock=clock, ids=ids)


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ffe.db"


def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "audit.jsonl"


def screen_text(app: ConsoleApp) -> str:
    """The characters on the terminal right now (every screen on the stack, as the operator sees them)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


def banner_text(app: ConsoleApp) -> str:
    """The banner's rows on screen, their wrapping undone (one space for every run of blanks and line ends)."""
    lines = screen_text(app).split("\n")
    region = app.panes["banner"].region
    rows = " ".join(lines[y][region.x:region.right] for y in range(region.y, min(region.bottom, len(lines))))
    return re.sub(r"\s+", " ", rows).strip()


def status_text(app: ConsoleApp) -> str:
    return "\n".join(screen_text(app).split("\n")[:2])


def notices(app: ConsoleApp) -> set[str]:
    """The identities of the notifications on screen now (to tell the ones raised after, with `said_since`)."""
    return {n.identity for n in list(app._notifications)}


def said_since(app: ConsoleApp, before: set[str], words: str) -> bool:
    """Whether a notification raised since `before` (notices) says `words`. By identity, not by count: an older
    notification that times out meanwhile leaves the list, and a count taken before would then skip the new one."""
    return any(words in str(n.message) for n in list(app._notifications) if n.identity not in before)


async def until(pilot, predicate: Callable[[], Any], what: str, timeout: float = 30.0,
                progress: Callable[[], Any] | None = None) -> Any:
    """Let the app run until predicate() is truthy; fail after `timeout` seconds (a hang, never a speed check).
    With `progress` (the bars taken so far, say), a hang is `timeout` seconds without it changing: a busy machine
    takes longer over a market of many bars, and is waited for while it goes on."""
    deadline = time.monotonic() + timeout
    seen = progress() if progress is not None else None
    while True:
        value = predicate()
        if value:
            return value
        if not pilot.app.is_running:  # it will not come now: say why the console ended
            raise AssertionError(f"the console ended before {what}: {pilot.app.start_error or 'no start error'}")
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, time.monotonic() + timeout
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n--- screen ---\n"
                                 f"{screen_text(pilot.app)}")
        await pilot.pause(0.05)


def bars_taken(app: ConsoleApp) -> int:
    """The bars the console's engine has taken so far (its progress over the market)."""
    return app.engine.bars if app.engine is not None else 0


async def running(pilot) -> None:
    """Wait for the engine to be open and its state on the status line."""
    await until(pilot, lambda: pilot.app.snap is not None and "RUNNING" in status_text(pilot.app),
                "the engine RUNNING on the status line")


async def pause(pilot, state: str) -> None:
    """`p` in the console, until the engine is in `state` (PAUSED, or RUNNING again) on the status line."""
    await pilot.press("p")
    await until(pilot, lambda: pilot.app.snap is not None and pilot.app.snap["state"] == state
                and state in status_text(pilot.app), f"the engine {state} on the status line")
