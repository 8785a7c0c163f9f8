"""Prometheus metrics of a running engine (GET /metrics), following the client's naming guide: `ffe_` prefix,
`_total` counters, `_seconds` units, ratios in 0..1, and bounded labels only (venue, symbol, gate code, channel,
error class; never an order or decision id).

Order, reconciliation and breaker counts follow the events the engine publishes (the monitor is an event sink) and
venue timings come from the breaker, kept as plain numbers; the gate denials are the gatekeeper's own counts. All
of it, and the engine's state, is turned into metric families at scrape time (`_Snapshot`): the trading loop does
no metrics work per bar and takes no client metric's lock, and a scrape shows the state at that moment.

The Prometheus client is imported at the first scrape, not at the start: every `ffe run` would pay for it (tens of
milliseconds of CPU) and most are never scraped.
"""

from __future__ import annotations

import functools
import math
import shutil
from typing import TYPE_CHECKING, Any, Callable, Iterator, cast

from bisect import bisect_left

from . import __version__
from .events import BreakerChanged, Event, OrderEvent, ReconcileEvent
from .outage import differences
from .risk import GATE_ORDER

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

STATES = ("RUNNING", "PAUSED", "HALTED")
COUNTED = frozenset({OrderEvent.name, ReconcileEvent.name, BreakerChanged.name})
BREAKER_STATES = ("closed", "open", "half_open")
# The venue round trip is milliseconds on a healthy exchange, seconds when it is not.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@functools.cache
def _le() -> list[str]:
    """The buckets' `le` labels, written as the client writes them."""
    from prometheus_client.utils import floatToGoString

    return [floatToGoString(b) for b in DURATION_BUCKETS]  # type: ignore[no-untyped-call]


class Timings:
    """A histogram of durations in DURATION_BUCKETS: a count per bucket (not cumulative), the sum and the count."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one: above the largest bound
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1  # a bucket holds durations <= its bound
        self.total += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as Prometheus reads a histogram: (le, how many took at most that long)."""
        out: list[tuple[str, float]] = []
        running = 0
        for le, count in zip(_le(), self.counts):
            running += count
            out.append((le, float(running)))
        out.append(("+Inf", float(self.n)))
        return out


class EngineMetrics:
    """The registry of one engine. `sink` is added to the engine's bus; `observe_venue` to its breaker."""

    def __init__(self, engine: Any, *, mode: str, audit: Any = None,
                 alert_status: Callable[[], dict[str, dict[str, Any]]] | None = None,
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.engine = engine
        self.audit = audit
        self.alert_status = alert_status
        self.health = health
        self.mode = mode
        self._registry: CollectorRegistry | None = None
        # The counts are plain numbers, exported by `_Snapshot` at scrape time: an order or a venue call costs an
        # addition, not a client metric's lock (prometheus-client's way to export state kept elsewhere).
        self.orders_submitted = 0
        self.orders_rejected = 0
        self.orders_in_doubt = 0
        self.reconcile_mismatches = 0
        self.breaker_transitions: dict[tuple[str, str], int] = {}
        self.venue_timings: dict[str, Timings] = {}
        self.venue_errors: dict[tuple[str, str], int] = {}
        self._in_doubt: set[str] = set()

    @property
    def registry(self) -> CollectorRegistry:
        """The client's registry, made at the first scrape."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry, Info, disable_created_metrics

            # A `_created` series per counter doubles the scrape and no shipped rule or panel reads it.
            disable_created_metrics()  # type: ignore[no-untyped-call]
            r = CollectorRegistry(auto_describe=True)
            Info("ffe_build", "The running ffe version and trading mode.", registry=r).info(
                {"version": __version__, "mode": self.mode})
            r.register(cast("Collector", _Snapshot(self)))
            self._registry = r
        return self._registry

    # ------------------------------------------------------------------ inputs
    def observe_venue(self, venue: str) -> Callable[[float, BaseException | None], None]:
        timings = self.venue_timings[venue] = Timings()  # shown from the start, at zero
        errors = self.venue_errors

        def observe(seconds: float, error: BaseException | None) -> None:
            timings.observe(seconds)
            if error is not None:
                key = (venue, type(error).__name__)
                errors[key] = errors.get(key, 0) + 1
        return observe

    def sink(self, ev: Event, line: bytes) -> None:
        if ev.name not in COUNTED:
            return
        if isinstance(ev, OrderEvent):
            status = ev.status
            if status == "new":
                self.orders_submitted += 1
            elif status in ("rejected", "refused"):
                self.orders_rejected += 1
            if status == "in_doubt":
                if ev.client_order_id not in self._in_doubt:
                    self._in_doubt.add(ev.client_order_id)
                    self.orders_in_doubt += 1
            else:
                self._in_doubt.discard(ev.client_order_id)
        elif isinstance(ev, ReconcileEvent):
            if ev.status == "differences":
                self.reconcile_mismatches += len(ev.differences)
        elif isinstance(ev, BreakerChanged) and ev.state != ev.previous:  # the same state: a new probe time
            key = (ev.venue, ev.state)
            self.breaker_transitions[key] = self.breaker_transitions.get(key, 0) + 1

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    @staticmethod
    def content_type() -> str:
        from prometheus_client import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST


class _Snapshot:
    """The engine's state at scrape time (a collector of the client's registry)."""

    def __init__(self, m: EngineMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m = self.m
        e = m.engine
        yield CounterMetricFamily("ffe_orders_submitted", "Orders sent to the venue.", value=m.orders_submitted)
        yield CounterMetricFamily("ffe_orders_rejected", "Orders refused by a gate, the engine state or the venue.",
                                  value=m.orders_rejected)
        yield CounterMetricFamily("ffe_orders_in_doubt", "Orders whose answer was lost (looked up by client order id).",
                                  value=m.orders_in_doubt)
        yield CounterMetricFamily("ffe_reconcile_mismatches", "Unexplained differences found by reconciliation.",
                                  value=m.reconcile_mismatches)
        transitions = CounterMetricFamily("ffe_breaker_transitions", "Circuit breaker state changes.",
                                          labels=["venue", "state"])
        for (venue, to), n in sorted(m.breaker_transitions.items()):
            transitions.add_metric([venue, to], float(n))
        yield transitions
        durations = HistogramMetricFamily("ffe_venue_request_duration_seconds", "Venue request round trips.",
                                          labels=["venue"])
        for venue, t in sorted(m.venue_timings.items()):
            durations.add_metric([venue], t.buckets(), sum_value=t.total)
        yield durations
        errors = CounterMetricFamily("ffe_venue_errors", "Venue requests that failed, by error class.",
                                     labels=["venue", "error"])
        for (venue, error), n in sorted(m.venue_errors.items()):
            errors.add_metric([venue, error], float(n))
        yield errors
        state = GaugeMetricFamily("ffe_engine_state", "1 for the engine's current state.", labels=["state"])
        for s in STATES:
            state.add_metric([s], 1.0 if e.state.value == s else 0.0)
        yield state
        yield GaugeMetricFamily("ffe_kill_switch_engaged", "1 while the engine is HALTED (kill switch).",
                                value=1.0 if e.state.value == "HALTED" else 0.0)
        disk = GaugeMetricFamily("ffe_disk_free_bytes", "Free space on the file system of the data and the log "
                                 "directory (when it is full the engine stops HALTED).", labels=["dir"])
        for name, where in (("data", e.settings.data_dir), ("logs", e.settings.log_dir)):
            try:
                disk.add_metric([name], float(shutil.disk_usage(where).free))
            except OSError:  # not there (yet), or not to be looked at: no figure rather than a wrong one
                pass
        yield disk
        live = e.liveness
        yield GaugeMetricFamily("ffe_loop_last_turn_timestamp_seconds",
                                "When the main loop last completed a turn (seconds since the epoch; 0 = never).",
                                value=live.last_turn_wall or 0.0)
        yield GaugeMetricFamily("ffe_loop_age_seconds", "Seconds since the main loop last completed a turn.",
                                value=live.loop_age())
        bars = GaugeMetricFamily("ffe_bar_age_seconds", "Seconds since the symbol's last bar was processed.",
                                 labels=["symbol"])
        for sym in e.symbols:
            bars.add_metric([sym], live.bar_age(sym))
        yield bars
        br = GaugeMetricFamily("ffe_breaker_state", "1 for the circuit breaker's current state, per venue.",
                               labels=["venue", "state"])
        b = e.breaker
        for s in BREAKER_STATES:
            br.add_metric([b.venue, s], 1.0 if b.state == s else 0.0)
        yield br
        pos = GaugeMetricFamily("ffe_position_quantity", "Open position size in base units (0 when flat).",
                                labels=["symbol"])
        positions = e.portfolio.positions
        for sym in e.symbols:
            p = positions.get(sym)
            pos.add_metric([sym], p.quantity if p is not None else 0.0)
        yield pos
        pf = e.portfolio
        # NaN (not known) while the cash in memory may count a recovered fill twice (Engine.cash_unreconciled).
        unknown = e.cash_unreconciled()
        yield GaugeMetricFamily("ffe_equity", "Account equity in the quote currency.",
                                value=math.nan if unknown else pf.equity())
        yield GaugeMetricFamily("ffe_drawdown_ratio", "Drawdown from the equity peak (0..1).",
                                value=math.nan if unknown else pf.drawdown_pct() / 100.0)
        risk = e.settings.risk
        yield GaugeMetricFamily("ffe_drawdown_limit_ratio", "The drawdown that pauses the engine (0..1).",
                                value=risk.max_drawdown_pct / 100.0)
        denials = CounterMetricFamily("ffe_risk_gate_denials", "Risk gate checks that failed, by gate (every caller).",
                                      labels=["gate"])
        counted = e.gatekeeper.denials
        for code in GATE_ORDER:  # every gate shows, at zero until it denies
            denials.add_metric([code], float(counted.get(code, 0)))
        yield denials
        yield GaugeMetricFamily("ffe_open_orders_in_doubt", "Orders in doubt right now.",
                                value=float(sum(1 for o in e.orders.live.values() if o.status.value == "in_doubt")))
        yield GaugeMetricFamily("ffe_approvals_pending", "Trades waiting for the operator's approval.",
                                value=float(len(e.pending)))
        yield GaugeMetricFamily("ffe_reconcile_differences", "Unexplained differences holding the engine (an exchange "
                                "that could not be reached, or refused the clock, is none).",
                                value=float(len(differences(e.reconcile_blocked))))
        audit = m.audit
        yield GaugeMetricFamily("ffe_audit_last_write_timestamp_seconds",
                                "When the audit file was last appended to (seconds since the epoch; 0 = not yet).",
                                value=(audit.last_write or 0.0) if audit is not None else 0.0)
        yield GaugeMetricFamily("ffe_audit_lag_seconds", "How long the oldest unwritten audit record has waited.",
                                value=audit.lag() if audit is not None else 0.0)
        if m.health is not None:
            verdict = m.health()
            h = GaugeMetricFamily("ffe_health_status", "1 for the current /health verdict.", labels=["status"])
            for s in ("healthy", "degraded", "down"):
                h.add_metric([s], 1.0 if verdict["status"] == s else 0.0)
            yield h
        pending = GaugeMetricFamily("ffe_alerts_pending", "Alerts in the outbox not yet delivered, per channel.",
                                    labels=["channel"])
        sent = _counter("ffe_alerts_sent_total", "Alerts delivered, per channel.")
        failed = _counter("ffe_alerts_failed_total", "Delivery attempts that failed, per channel.")
        dropped = _counter("ffe_alerts_dropped_total", "Alerts dropped from a full outbox, per channel, in every run "
                                                       "(the outbox's dropped rows, counted at start).")
        last_ok = GaugeMetricFamily("ffe_alerts_last_success_timestamp_seconds",
                                    "When the channel last delivered (seconds since the epoch; 0 = not yet).",
                                    labels=["channel"])
        for channel, st in (m.alert_status() if m.alert_status is not None else {}).items():
            pending.add_metric([channel], float(st["pending"]))
            sent.add_metric([channel], float(st["sent"]))
            failed.add_metric([channel], float(st["failures"]))
            dropped.add_metric([channel], float(st["dropped"]))
            last_ok.add_metric([channel], float(st["last_success"] or 0.0))
        yield from (pending, sent, failed, dropped, last_ok)


def _counter(name: str, doc: str) -> CounterMetricFamily:
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name[: -len("_total")], doc, labels=["channel"])
