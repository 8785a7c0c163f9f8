"""ffe engine: the trading engine, with no user interface (it never imports textual)."""

__version__ = "0.3.0"
