"""Liveness of the engine's main loop: when it last completed a turn, and when each symbol's last bar was done.

A live process is not a live engine: a loop stuck on a venue call or a lock still answers the control socket.
The loop stamps every turn (a bar processed, or a wait for the next bar that reached its one-second bound), so
"no turn for N seconds" means the loop is hung. The watchdog of a service manager is fed from the stamp itself
(`on_turn`), so it goes quiet exactly when the loop does.

Ages are in real seconds (the engine clock's monotonic time), even in a paced replay whose clock shows market
time: a hang is a matter of the operator's time, not the market's.
"""

from __future__ import annotations

from typing import Callable

TURN_S = 1.0  # the longest a loop turn waits for the next bar before it stamps and waits again


class Liveness:
    def __init__(self, now: Callable[[], float], wall: Callable[[], float]) -> None:
        self._now = now
        self._wall = wall
        self.created = now()
        self.last_turn: float | None = None  # monotonic seconds
        self.last_turn_wall: float | None = None  # the same moment, seconds since the epoch (for /metrics)
        self.turns = 0
        self.last_bar: dict[str, float] = {}  # symbol -> monotonic seconds its last bar was processed
        self.on_turn: Callable[[], None] | None = None

    def turn(self) -> None:
        self.last_turn = self._now()
        self.last_turn_wall = self._wall()
        self.turns += 1
        if self.on_turn is not None:
            self.on_turn()

    def started(self) -> None:
        """The engine's start is done: a loop that has not turned yet, and a symbol without a bar yet, are aged from
        now, not from before a start that took long (a live one waits on the exchange)."""
        self.created = self._now()

    def bar(self, symbol: str) -> None:
        self.last_bar[symbol] = self._now()

    def now(self) -> float:
        return self._now()

    def loop_age(self) -> float:
        """Seconds since the last completed turn (since creation when the loop has not turned yet)."""
        return self._now() - (self.last_turn if self.last_turn is not None else self.created)

    def bar_age(self, symbol: str) -> float:
        return self._now() - self.last_bar.get(symbol, self.created)
