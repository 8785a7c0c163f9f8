"""Where an engine's ids come from: client order ids, and decision and approval ids.

A client order id is the order's name at the venue and in the journal, and it must never be used twice: an exchange
answers a reused one with "duplicate", which the order path takes as the order being there (order-path.md). Each is
drawn at random, so a restart, a restored backup or a second engine on the same account cannot meet an id sent
before. Decision and approval ids are a run's random prefix and a running number: they tell runs apart and sort in
the order they were made.

Real runs draw from the operating system's randomness. A seed makes the ids a fixed sequence, the same on every run:
for tests and screenshots on a fresh data directory, never for an engine that trades: a second start with the same
seed would draw the same ids again. No configuration sets a seed; only code that builds an engine can pass one.
"""

from __future__ import annotations

import random
import uuid

CLIENT_ID_PREFIX = "ffe-"  # every order this engine sends carries it: tells its orders at the venue from others
RUN_HEX = 6  # hex digits of a run's prefix in decision and approval ids
ORDER_HEX = 24  # hex digits after the prefix: <= 36 characters of [a-z0-9-], which every major exchange accepts


class IdSource:
    def __init__(self, seed: int | None = None) -> None:
        self.seeded = seed is not None
        self._rng = random.Random(seed) if seed is not None else None
        self.run = self._hex(RUN_HEX)
        self._n = 0

    def _hex(self, digits: int) -> str:
        if self._rng is None:
            return uuid.uuid4().hex[:digits]
        return f"{self._rng.getrandbits(4 * digits):0{digits}x}"

    def client_order_id(self) -> str:
        return CLIENT_ID_PREFIX + self._hex(ORDER_HEX)

    def new(self, prefix: str) -> str:
        """A decision ("d") or approval ("a") id: the prefix, the run's and a number, e.g. d3f0c1a000042."""
        self._n += 1
        return self.numbered(prefix, self._n)

    def numbered(self, prefix: str, n: int) -> str:
        """The id with number n (one taken already: a backtest books a stretch of decisions, then names the last)."""
        return f"{prefix}{self.run}{n:06d}"

    @property
    def taken(self) -> int:
        """How many numbers were taken so far."""
        return self._n

    def skip(self, count: int = 1) -> None:
        """Take numbers without making the ids: a decision left unrecorded keeps the numbers of the ones after it
        as they would be with it recorded (a backtest numbers its decisions alike at every record level)."""
        self._n += count
