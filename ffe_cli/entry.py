"""The `ffe` executable's first step, before anything else is imported: the stop signals and SIGUSR1 are taken
from here on. Until an engine's own handlers replace them (most of a second later, the settings read and the
engine's modules imported), they are recorded instead of ending the process on the spot: a headless run then acts
on them as soon as it can (a stop gives the start up in order, SIGUSR1 halts the engine once started); every
other command gets them back as if they had just arrived."""

import signal
import sys
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class EarlySignals:
    def __init__(self) -> None:
        self.received: list[int] = []
        self.before: dict[int, Any] = {sig: signal.signal(sig, self._record) for sig in SIGNALS}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def hand_over(self) -> tuple[list[int], dict[int, Any]]:
        """For a caller whose own handlers have replaced these: the signals received so far, in order, and the
        handlers from before, to be put back once it is done."""
        return list(self.received), dict(self.before)

    def release(self) -> None:
        """The handlers from before, back; the signals received meanwhile, delivered to them now."""
        for sig, handler in self.before.items():
            signal.signal(sig, handler)
        for sig in self.received:
            signal.raise_signal(sig)


def main() -> int:
    early = EarlySignals()
    from .main import main as cli

    code = cli(early=early)
    # Done: a ^C while the interpreter shuts down would end the process killed by SIGINT, the command's exit code
    # (and what it said it did) lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
