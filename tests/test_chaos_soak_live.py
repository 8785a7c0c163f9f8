"""A seeded chaos soak of a live session against the fake Binance, trading on the strategy's own decisions.

Real `ffe run --headless --live` subprocesses trade BTC/USDT, or (by the seed) BTC/USDT and ETH/USDT from one cash
balance, on the fake, spoken to by real ccxt, with the strategy's entries placed at once or (by the seed) held for
the operator's approval, which the soak gives or refuses now and then. The fake's klines follow a zigzag that climbs
faster than it falls (`zigzag`): the trend provider, alone and with a lower bar for confidence than the default
(min_confidence 0.5), votes BUY on most climbs, so the engine enters there, and its stop-losses and take-profits
(nearer than the defaults) close the positions on the legs that follow: most orders are the strategy's. Meanwhile
the exchange answers with a fault on every order, trades, account and klines route (dropped before or after running,
hung, slow, 5xx executed or not, rate limits, a missing order, a read from the books before their last change,
orders answered without what they cost, a market order acknowledged and filled a moment later), goes down now and
then (a restart: every request dropped or answered 503 for a few seconds), fills some orders in part and expires the
rest, fills market orders in one trade or (by the seed) several at their own prices, answers new orders with their
fills or (by the seed) without them or with nothing but their ids, takes a buy's fee from the coins or (by the seed)
from the cash or every fee in BNB, the process is killed, frozen and thawed, stopped and restarted, and now and then
the operator halts, resumes, flattens or sells a little.

The invariants, checked after every round (the engine dead) and at the end (after a last start has settled every
order, reconciled and stopped in order):
(a) the books are the venue's: every fill the journal holds is of an order the exchange placed, never more fills
    than its trades, and an order the journal has closed holds exactly the exchange's trades for it (as much, for as
    much, the same commissions but those in BNB; each trade where there is a fill per trade; one the journal ended on
    its cancel's answer and still looks up, which may fill after it, by the end: never more meanwhile); at the end the
    positions, the cash and the fills in the database (and what `trades` and `balances` report before the stop)
    equal the fake's balances and trades;
(b) the audit trail holds every committed event byte for byte, and every fill its `fill` event (the doctor's
    checks, in this process after each round, and `ffe doctor` and `ffe audit verify` at the end); the only lines
    it holds that the database lacks were written just before a kill (an orderly stop leaves none);
(c) an order's status never goes back, sampled from the journal and the events after each round: a final status
    never changes, an order the venue showed is never again new or in doubt, its filled quantity never shrinks;
(d) the exchange never placed two orders with one client order id, and no fill is recorded twice;
(e) every order made of a decision has that decision recorded (committed with the order's journal entry).

The schedule comes from one seed (FFE_CHAOS_SEED, printed with the counts). Bounded: a fixed number of rounds. A
schedule that left the strategy nothing filled (its entries lost on the wire, the engine halted by the operator
through its bars) ends with calm bars, no fault and no kill, until the strategy's first fill: the checks at the end
then always weigh the strategy's own orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

from conftest import kill_rounds
from fake_exchange import LISTINGS, Balance, FakeBinance
from ffe_engine.config import load_settings
from ffe_engine.control import request
from ffe_engine.doctor import check
from live_helpers import (BTC, M, RECV_WINDOW_MS, AsyncFfe, exchange_options, fx, live_config, live_env,  # noqa: F401
                          processes, rows, run_ffe_async, wait_for, write_config)

ROUNDS = 6
SEED = int(os.environ.get("FFE_CHAOS_SEED", "20261201"))
NETWORK = ("drop_after", "drop_before", "hang", "slow", "5xx_executed", "5xx_not_executed", "429")
FAULTS = {  # route -> the faults an exchange gives on it
    # no_cost: how much filled, not for how much; fill_later: a market order acknowledged, then filled a moment later
    "POST /api/v3/order": (*NETWORK, "no_cost", "fill_later"),
    "GET /api/v3/order": (*NETWORK, "not_found_once", "stale", "no_cost"),
    # cancel_later: a cancel acknowledged, done a moment later; cancel_unkept: answered done, the order left open
    "DELETE /api/v3/order": (*NETWORK, "not_found_once", "no_cost", "cancel_later", "cancel_unkept"),
    "GET /api/v3/openOrders": (*NETWORK, "stale", "no_cost"),
    "GET /api/v3/account": (*NETWORK, "stale"),
    "GET /api/v3/myTrades": (*NETWORK, "stale"),  # where an order's fees are read from when its answer lacks them
    "GET /api/v3/klines": NETWORK,  # the market data the strategy decides on
}
ETH = "ETH/USDT"
BASES = {BTC: "BTC", ETH: "ETH"}
STEPS = {BTC: float(LISTINGS["BTCUSDT"]["step"]), ETH: float(LISTINGS["ETHUSDT"]["step"])}  # the venue's precision
SELLS = {BTC: (0.001, 0.005), ETH: (0.01, 0.08)}  # what the operator sells of what the strategy holds
CENT = 0.01
FINAL = {"filled", "canceled", "rejected"}
SHOWN = {"open"} | FINAL  # an order the venue has shown is never again new or in doubt
STARTS = {"BTCUSDT": 30_000.0, "ETHUSDT": 2_000.0}
ETH_LAG = 4  # bars: ETH's zigzag turns later than BTC's, so the two positions open and close apart
UP, DOWN, UP_BARS, DOWN_BARS = 0.0025, -0.003, 10, 5  # the zigzag: per bar, and how long each leg lasts


def tag(counts: Counter) -> str:
    return f"[chaos seed={SEED} (FFE_CHAOS_SEED={SEED}) {dict(sorted(counts.items()))}]"


def zigzag(fx: FakeBinance) -> None:
    """Klines that climb UP per bar for UP_BARS bars, then fall DOWN per bar for DOWN_BARS, over and over (warm-up
    included), on both listings; market orders fill at the open candle's last price."""
    origin = fx.market_clock() - 200 * M
    cycle = UP_BARS + DOWN_BARS
    per_cycle = UP * UP_BARS + DOWN * DOWN_BARS

    def path(sid: str, ts: int) -> float:
        bars = (ts - origin) / M + (ETH_LAG if sid == "ETHUSDT" else 0)
        n, into = divmod(bars, cycle)
        leg = UP * min(into, UP_BARS) + DOWN * max(0.0, into - UP_BARS)
        return round(STARTS[sid] * (1.0 + n * per_cycle + leg), 2)

    fx.price_path = path
    for sid in STARTS:
        fx.set_price(sid, path(sid, fx.market_clock()))


def next_bar(fx: FakeBinance) -> None:
    fx.market_clock.step()
    for sid in STARTS:
        fx.set_price(sid, fx.price_path(sid, fx.market_clock()))


# ---------------------------------------------------------------------------------------------------- invariants
class Books:
    """What the checks remember between rounds: every order's status and filled quantity as last sampled."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.seen: dict[str, tuple[str, float, str]] = {}  # client order id -> (status, filled, where sampled)
        self.events: dict[int, bytes] = {}  # the order events sampled so far: seq -> record
        self.orphans: set[bytes] = set()  # the audit lines the database never committed, as written

    def sample(self, counts: Counter, when: str) -> None:
        """(c): the journal's and the events' statuses of every order, against what the last sample saw."""
        # In the order they happened: the events since the last sample first, then the journal (the latest word).
        # The events the last sample saw are still there as they were.
        now: dict[str, list[tuple[str, float, str]]] = defaultdict(list)
        events = dict(rows(self.db, "SELECT seq, data FROM events WHERE event = 'order' ORDER BY seq"))
        lost = [seq for seq, data in self.events.items() if events.get(seq) != data]
        assert not lost, f"{tag(counts)} {when}: order events seq {lost[:5]} changed or went away since the last look"
        for seq, data in events.items():
            rec = json.loads(data)
            if seq not in self.events and rec.get("client_order_id"):
                now[rec["client_order_id"]].append((rec["status"], rec.get("filled", 0.0), f"event seq {seq}"))
        self.events = events
        for cid, status, filled in rows(self.db, "SELECT client_order_id, status, filled FROM orders"):
            now[cid].append((status, filled, "journal"))
        for cid, samples in now.items():
            for status, filled, where in samples:
                prev = self.seen.get(cid)
                if prev is not None:
                    p_status, p_filled, p_where = prev
                    assert not (p_status in FINAL and status != p_status), (
                        f"{tag(counts)} {when}: order {cid} was {p_status} ({p_where}), then {status} ({where})")
                    assert not (p_status in SHOWN and status not in SHOWN), (
                        f"{tag(counts)} {when}: order {cid} was {p_status} ({p_where}), then {status} ({where})")
                    assert filled >= p_filled - 1e-12, (
                        f"{tag(counts)} {when}: order {cid} filled {p_filled:g} ({p_where}), then {filled:g} ({where})")
                self.seen[cid] = (status, filled, where)
        counts["status samples"] += sum(len(s) for s in now.values())

    def audit_beyond_database(self, logs: Path, counts: Counter, when: str, killed: bool) -> None:
        """(b): the trail's lines that the database lacks are those written just before a kill, never committed
        (docs/storage.md): an orderly stop adds none, none of them is ever committed later, and the start after
        the kill sets them aside (the trail then goes on under the same seqs, in lines of its own): none is lost."""
        committed = {bytes(data) for (data,) in rows(self.db, "SELECT data FROM events")}
        trail = {line for f in sorted(logs.glob("audit*.jsonl")) for line in f.read_bytes().splitlines()}
        aside = {line for f in logs.glob("audit.jsonl.uncommitted-after-*") for line in f.read_bytes().splitlines()}
        orphans = trail - committed
        later = sorted(json.loads(line)["seq"] for line in self.orphans & committed)
        assert not later, f"{tag(counts)} {when}: audit lines seq {later[:5]} were committed later"
        lost = sorted(json.loads(line)["seq"] for line in self.orphans - trail - aside)
        assert not lost, f"{tag(counts)} {when}: audit lines seq {lost[:5]} never committed were lost, not set aside"
        new = sorted(json.loads(line)["seq"] for line in orphans - self.orphans)
        assert killed or not new, f"{tag(counts)} {when}: an orderly stop left audit lines the database lacks: {new}"
        counts["audit lines never committed"] += len(new)
        self.orphans |= orphans

    def against_exchange(self, fx: FakeBinance, counts: Counter, when: str) -> None:
        """(a) and (d) on every round: the journal's fills against the exchange's own trades."""
        ids = [o.client_id for o in fx.orders]
        twice = sorted({c for c in ids if ids.count(c) > 1})
        assert not twice, f"{tag(counts)} {when}: the exchange placed two orders with one client order id: {twice}"
        journal = {cid: (status, filled) for cid, status, filled in
                   rows(self.db, "SELECT client_order_id, status, filled FROM orders")}
        fills: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for cid, qty, price, fee, fee_base in rows(self.db, "SELECT client_order_id, quantity, price, fee, fee_base "
                                                            "FROM fills ORDER BY id"):
            fills[cid].append((qty, price, fee, fee_base))
        venue = {o.client_id: o for o in fx.orders}
        strange = sorted(set(venue) - set(journal))
        assert not strange, f"{tag(counts)} {when}: the exchange holds orders the journal never had: {strange}"
        for cid, got in fills.items():
            o = venue.get(cid)
            assert o is not None, f"{tag(counts)} {when}: fills of {cid}, which the exchange never placed: {got}"
            # A fill holds one trade or more: never more fills than trades (a fill recorded twice).
            assert len(got) <= len(o.trades), (
                f"{tag(counts)} {when}: order {cid} has {len(got)} fills in the journal, {len(o.trades)} trades "
                f"at the exchange (a fill recorded twice)")
            assert sum(q for q, *_ in got) <= o.filled + 1e-12, (
                f"{tag(counts)} {when}: order {cid} filled {sum(q for q, *_ in got):g} in the journal, "
                f"{o.filled:g} at the exchange")
        # Orders ended on a cancel's answer, still looked up by id (a cancel answered done may not be, and the order
        # may fill after it): what the exchange shows them filled beyond the journal is booked by the next look, after
        # a restart too (order-path.md, "ended, then shown by the venue"); the fills above are never more.
        kept = rows(self.db, "SELECT value FROM kv WHERE key = 'orders_ended_unseen'")
        watched = set(json.loads(kept[0][0]) or {}) if kept and kept[0][0] else set()
        for cid, o in venue.items():
            status, filled = journal[cid]
            if (status not in FINAL or cid in watched) and not when.startswith("at the end"):
                continue  # in flight when the engine died, or watched: the next start settles it
            trades = [(t.qty, t.price) for t in o.trades]
            got = [(q, round(p, 2)) for q, p, *_ in fills.get(cid, [])]
            assert abs(filled - o.filled) <= 1e-12, (
                f"{tag(counts)} {when}: order {cid} filled {filled:g} in the journal, {o.filled:g} at the exchange")
            # A fill is what one look at the order found new: one trade, or several (a market order that walked the
            # book). Together they are the exchange's trades: as much, for as much, at the same commissions.
            assert abs(sum(q for q, _ in got) - o.filled) <= 1e-12 and abs(
                sum(q * p for q, p, *_ in fills.get(cid, [])) - sum(q * p for q, p in trades)) <= CENT, (
                f"{tag(counts)} {when}: order {cid} is {status} in the journal with fills {got}, the exchange "
                f"{o.status} with trades {trades}")
            if len(got) == len(trades):  # one fill per trade: each is one of them
                assert sorted(got) == sorted(trades), (
                    f"{tag(counts)} {when}: order {cid} is {status} in the journal with fills {got}, the exchange "
                    f"{o.status} with trades {trades}")
            for asset in {t.commission_asset for t in o.trades} - {"BNB"}:  # a fee in BNB is left out
                # a buy's fee in the coins bought is the fill's fee_base; in USDT, its fee
                charged = sum(fee_base if asset != "USDT" else fee for _q, _p, fee, fee_base in fills.get(cid, []))
                commission = sum(t.commission for t in o.trades if t.commission_asset == asset)
                assert abs(charged - commission) <= 1e-9, (
                    f"{tag(counts)} {when}: order {cid} paid {charged:g} {asset} in the journal, {commission:g} at "
                    "the exchange")

    def decided(self, counts: Counter, when: str) -> None:
        """(e): the decision of every order made of one is there, whenever the engine died."""
        orphans = rows(self.db, "SELECT o.client_order_id, o.reason FROM orders o WHERE o.decision_id IS NOT NULL "
                                "AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.decision_id = o.decision_id)")
        assert not orphans, f"{tag(counts)} {when}: orders without the decision they were made of: {orphans}"
        made = rows(self.db, "SELECT count(*) FROM orders WHERE decision_id IS NOT NULL")
        counts["orders of decisions"] += made[0][0]

    def settled(self, fx: FakeBinance, counts: Counter, trades: dict, balances: dict) -> None:
        """(a) at the end: positions, cash and what the engine reported are the fake account's."""
        usdt = fx.balances["USDT"].total
        positions = dict(rows(self.db, "SELECT symbol, quantity FROM positions"))
        for symbol, base in BASES.items():  # a symbol not traded: nothing held on either side
            coins = fx.balances[base].total
            held = positions.get(symbol, 0.0)
            assert abs(held - coins) <= STEPS[symbol], (
                f"{tag(counts)} at the end: position {held!r} {base}, the exchange {coins!r}")
            reported = sum(p["quantity"] for p in trades["positions"] if p["symbol"] == symbol)
            assert abs(reported - coins) <= STEPS[symbol], (
                f"{tag(counts)} at the end: `trades` says {reported!r} {base}, the exchange {coins!r}")
        (book,) = rows(self.db, "SELECT value FROM kv WHERE key = 'portfolio'")
        cash = json.loads(book[0])["cash"]
        assert abs(cash - usdt) <= CENT, f"{tag(counts)} at the end: cash {cash!r} USDT, the exchange {usdt!r}"
        totals = {a["asset"]: a["total"] for a in balances["assets"]}
        wanted = [(base, fx.balances[base].total, STEPS[symbol]) for symbol, base in BASES.items()]
        for asset, want, tol in (*wanted, ("USDT", usdt, CENT)):
            assert abs(totals.get(asset, 0.0) - want) <= tol, (
                f"{tag(counts)} at the end: `balances` says {totals.get(asset)!r} {asset}, the exchange {want!r}")


async def doctor(cwd: Path, fx: FakeBinance, books: Books, counts: Counter, when: str, killed: bool) -> None:
    """Every check on the records (no engine runs: nothing waits on the fake meanwhile)."""
    counts["doctor"] += 1
    settings = load_settings(cwd / "config.toml", environ=live_env(fx), data_dir=cwd / "data", log_dir=cwd / "logs")
    try:
        check(settings)
    except Exception as exc:
        raise AssertionError(f"{tag(counts)} doctor {when}: {exc}") from exc
    books.sample(counts, when)
    books.audit_beyond_database(cwd / "logs", counts, when, killed)
    books.against_exchange(fx, counts, when)
    books.decided(counts, when)


# ---------------------------------------------------------------------------------------------------- the engine
async def start(cwd: Path, fx: FakeBinance, processes, counts: Counter) -> AsyncFfe:
    """Start the live engine; a start the exchange's faults refused (one line, exit 2 or 1) is tried again."""
    sock = cwd / "data" / "ffe.sock"
    for _ in range(10):
        counts["starts"] += 1
        p = await AsyncFfe.start(cwd, "run", "--headless", "--live", env=live_env(fx),
                                 name=f"live{counts['starts']}")
        processes.append(p)

        async def answers() -> bool:
            if not p.alive():
                return True
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                return (await request(sock, "status", timeout=5))["ok"]
            return False

        await wait_for(answers, timeout=60, what="the engine answering on its control socket", interval=0.05)
        if p.alive():
            return p
        code = await p.wait()
        last = p.stderr.rstrip().splitlines()[-1] if p.stderr.strip() else ""
        refused = (code == 2 and last.startswith("ffe: error: live start check failed")) or (
            code == 1 and last.startswith(("ffe: error: start failed on binance",
                                           "ffe: error: live start check failed on binance: the exchange did not",
                                           "ffe: error: live start check failed on binance: the exchange asked")))
        assert refused and "Traceback" not in p.stderr, f"{tag(counts)} ffe exited {code}: {p.stderr[-2000:]}"
        counts["start check refused"] += 1
    raise AssertionError(f"{tag(counts)} the engine never started")


async def call(sock: Path, counts: Counter, command: str, args: dict | None = None) -> dict | None:
    counts[command] += 1
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        return await request(sock, command, {"by": "ctl", **(args or {})}, timeout=10)
    return None


async def settle(sock: Path, proc: AsyncFfe, counts: Counter) -> tuple[dict, dict]:
    """Wait until no order is in flight and a reconciliation found nothing to say; then `trades` and `balances`."""
    last: dict = {}

    async def quiet() -> dict | None:
        assert proc.alive(), f"{tag(counts)} the engine stopped while settling: {proc.stderr[-3000:]}"
        answer = await call(sock, counts, "status")
        if not answer or not answer["ok"]:
            return None
        last.update(orders=answer["result"]["orders"], reconcile_blocked=answer["result"]["reconcile_blocked"],
                    state=answer["result"]["state"])
        if answer["result"]["orders"] or answer["result"]["reconcile_blocked"]:
            return None
        return answer["result"]

    try:
        await wait_for(quiet, timeout=30, what="every order settled", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{tag(counts)} {exc}; the engine said at last: {last}") from None
    trades = await call(sock, counts, "trades")
    balances = await call(sock, counts, "balances")
    assert trades and trades["ok"] and balances and balances["ok"], (trades, balances)
    return trades["result"], balances["result"]


STRATEGY_FILLS = ("SELECT COUNT(*) FROM fills JOIN orders USING (client_order_id) "
                  "WHERE orders.reason IN ('signal', 'stop_loss', 'take_profit')")


async def trade_calmly_until_a_strategy_fill(db: Path, sock: Path, fx: FakeBinance, proc: AsyncFfe,
                                            counts: Counter) -> None:
    """A schedule can leave the strategy nothing filled: its entries lost on the wire and ended absent, the rest
    decided while the operator had the engine halted. Then the last start trades the zigzag with no fault, kill or
    operator but one who approves at once, until the strategy's first fill, so that the books are checked on the
    strategy's own orders whatever the schedule did. An engine that never fills one fails the soak."""
    if rows(db, STRATEGY_FILLS)[0][0]:
        return
    counts["calm end"] += 1
    for route in FAULTS:
        fx.clear_faults(route)
    await call(sock, counts, "resume", {"confirm": True})
    for _ in range(120):
        assert proc.alive(), f"{tag(counts)} the engine stopped while trading calmly: {proc.stderr[-3000:]}"
        if rows(db, STRATEGY_FILLS)[0][0]:
            return
        next_bar(fx)
        counts["bars"] += 1
        await asyncio.sleep(0.2)
        answer = await call(sock, counts, "status")
        for waiting in answer["result"]["approvals"] if answer and answer["ok"] else []:
            await call(sock, counts, "approve", {"id": waiting["approval_id"]})
    raise AssertionError(f"{tag(counts)} 120 calm bars and no strategy order filled: {proc.stderr[-3000:]}")


async def decide_an_approval(sock: Path, rng: random.Random, counts: Counter) -> None:
    """The operator approves (mostly) or rejects one of the entries waiting for approval, if any."""
    answer = await call(sock, counts, "status")
    waiting = answer["result"]["approvals"] if answer and answer["ok"] else []
    if not waiting:
        return
    verb = "approve" if rng.random() < 0.8 else "reject"
    got = await call(sock, counts, verb, {"id": rng.choice(waiting)["approval_id"]})
    if got and got["ok"] and verb == "approve":
        # accepted, or refused on its re-check (the price moved past its stops, the venue holds orders, ...)
        counts["approved and sent" if got["result"]["accepted"] else "approval refused on re-check"] += 1


def strategy_config(fx: FakeBinance, answer: str, symbols: list[str], approval: str) -> dict:
    """A live engine on the fake whose strategy trades the zigzag on `symbols`, its entries placed at once or held
    for approval (`approval`, auto or manual): warm at start, the trend provider alone, a confidence of 0.5
    enough (its least), stop-loss and take-profit nearer than the defaults (1 and 1.5 ATRs, so
    that exits come within a leg), a reconciliation every 2 s (under the faults too), and rate limits that the
    soak's many bars a minute of wall time do not reach. `answer` is the exchange's answer to a new order: FULL
    (with its fills and their fees), RESULT (how much filled, without the fees) or ACK (the order's ids only)."""
    return live_config(fx, engine={"symbols": symbols, "approval": approval, "live_start_paused": False,
                                   "cancel_timeout_s": 3, "warmup_bars": 80, "reconcile_interval_s": 2},
                       ensemble={"providers": ["trend"], "min_votes": 1, "adaptive": False},
                       risk={"min_confidence": 0.5, "max_orders_per_minute": 200, "max_daily_trades": 1000,
                             "stop_loss_atr": 1.0, "take_profit_atr": 1.5},
                       exchange={"timeout_ms": 1000,
                                 "options": exchange_options(newOrderRespType={"market": answer,
                                                                               "limit": answer})},
                       breaker={"failure_threshold": 5, "recovery_timeout_s": 2})


async def test_a_live_session_under_faults_kills_and_restarts_keeps_every_invariant(tmp_path, fx, processes):
    rng = random.Random(SEED)
    counts: Counter[str] = Counter()
    print(f"chaos seed={SEED} (replay with FFE_CHAOS_SEED={SEED})")
    zigzag(fx)
    answer = rng.choice(["FULL", "RESULT", "ACK"])
    counts[f"answers {answer}"] = 1
    fx.buy_fee_in_quote = rng.random() < 0.5  # a buy's fee taken from the cash, not from the coins bought
    counts["buy fees in " + ("USDT" if fx.buy_fee_in_quote else "the coins")] = 1
    # Market orders fill in one trade or walk a thin book (several trades, each its own price and commission); drawn
    # apart from the schedule, which a seed keeps as it was.
    drawn = random.Random(f"book {SEED}")
    fx.book_levels = drawn.choice([1, 2, 3])
    counts[f"book levels {fx.book_levels}"] = 1
    if drawn.random() < 0.25:  # every commission paid in BNB, which the books leave out (docs/order-path.md)
        fx.fee_asset, fx.balances["BNB"] = "BNB", Balance(10.0)
        counts["fees in BNB"] = 1
    symbols = [BTC, ETH] if rng.random() < 0.5 else [BTC]
    approval = rng.choice(["auto", "manual"])
    counts[f"symbols {len(symbols)}"] = counts[f"approval {approval}"] = 1
    write_config(tmp_path, strategy_config(fx, answer, symbols, approval))
    sock = tmp_path / "data" / "ffe.sock"
    books = Books(tmp_path / "data" / "ffe.db")
    kills = kill_rounds(SEED, list(range(ROUNDS)), at_least=2)
    for n in range(ROUNDS):
        proc = await start(tmp_path, fx, processes, counts)
        await call(sock, counts, "resume", {"confirm": True})
        until = time.monotonic() + rng.uniform(2.0, 4.0)
        while time.monotonic() < until and proc.alive():
            roll = rng.random()
            if approval == "manual" and rng.random() < 0.2:
                await decide_an_approval(sock, rng, counts)
            elif roll < 0.45:
                next_bar(fx)
                counts["bars"] += 1
                await asyncio.sleep(rng.uniform(0.0, 0.1))
                if approval == "manual" and rng.random() < 0.5:
                    # An operator who answers within the bar: a trade approved bars later is mostly refused on its
                    # re-check (the zigzag has moved past its take-profit), and a schedule of those trades nothing.
                    await decide_an_approval(sock, rng, counts)
            elif roll < 0.65:
                counts["faults"] += 1
                route = rng.choice(sorted(FAULTS))
                kind = rng.choice(FAULTS[route])
                # A stale read's replica lags by less than the venue's settle window, as the settle window says of
                # the venue (a lag beyond it is a difference, and pauses the engine).
                seconds = rng.uniform(0.2, 2.0) if kind != "stale" else rng.uniform(0.1, 0.9 * RECV_WINDOW_MS / 1000)
                fx.fault(route, kind, seconds=seconds, execute=True)
            elif roll < 0.67:
                counts["sigstop"] += 1
                proc.proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                proc.proc.send_signal(signal.SIGCONT)
            elif roll < 0.69:  # the next order fills in part, the rest expires (as an IOC order's would)
                counts["partial"] += 1
                fx.partial_fill_next(rng.uniform(0.2, 0.8), rest="expire")
            elif roll < 0.72:  # the operator sells a little of what the strategy holds (a buy would hold no exits)
                symbol = rng.choice(symbols)
                await call(sock, counts, "order", {"symbol": symbol, "side": "sell",
                                                   "quantity": round(rng.uniform(*SELLS[symbol]), 5)})
            elif roll < 0.75:
                await call(sock, counts, "halt")
            elif roll < 0.76:
                await call(sock, counts, "flatten")
            elif roll < 0.82:
                await call(sock, counts, "resume", {"confirm": True})
            elif roll < 0.835:  # the exchange restarts: every request dropped (or answered 503) for a moment
                counts["exchange down"] += 1
                fx.down_status = rng.choice([None, 503])
                fx.down = True
                await asyncio.sleep(rng.uniform(0.3, 2.5))
                fx.down = False
            else:
                await asyncio.sleep(rng.uniform(0.05, 0.3))
        assert proc.alive(), f"{tag(counts)} the engine stopped by itself: {proc.stderr[-3000:]}"
        killed = n in kills
        if killed:
            counts["sigkill"] += 1
            await proc.kill()
        else:
            counts["sigterm"] += 1
            code = await proc.stop(timeout=60)
            assert code == 0, f"{tag(counts)} orderly stop exited {code}: {proc.stderr[-3000:]}"
        await doctor(tmp_path, fx, books, counts, f"after round {n}", killed)
    # The end: one more start that settles what is in flight and reconciles, the engine's reports, an orderly stop.
    proc = await start(tmp_path, fx, processes, counts)
    await trade_calmly_until_a_strategy_fill(tmp_path / "data" / "ffe.db", sock, fx, proc, counts)
    trades, balances = await settle(sock, proc, counts)
    counts["sigterm"] += 1
    assert await proc.stop(timeout=60) == 0, proc.stderr[-3000:]
    await doctor(tmp_path, fx, books, counts, "at the end", killed=False)
    books.settled(fx, counts, trades, balances)
    for verb in (("doctor",), ("audit", "verify")):  # as an operator runs them
        p = await run_ffe_async(tmp_path, *verb, env=live_env(fx), name=verb[-1], timeout=120)
        assert p.proc.returncode == 0, f"{tag(counts)} ffe {' '.join(verb)} at the end: {p.stderr.strip()}"
    db = tmp_path / "data" / "ffe.db"
    by_reason = dict(rows(db, "SELECT reason, COUNT(*) FROM orders GROUP BY reason"))
    fills = rows(db, "SELECT COUNT(*) FROM fills")[0][0]
    strategy = sum(by_reason.get(r, 0) for r in ("signal", "stop_loss", "take_profit"))
    # The engine's own reconciliations, every 2 s under the faults, never found its books off the venue's.
    differences = [json.loads(r[0])["differences"] for r in rows(db, "SELECT data FROM events WHERE event = "
                                                                     "'reconcile' ORDER BY seq")
                   if json.loads(r[0])["status"] == "differences"]
    posts = Counter(r.params.get("newClientOrderId") for r in fx.requests_to("POST /api/v3/order"))
    print(f"chaos seed={SEED} rounds={ROUNDS} orders={by_reason} fills={fills} exchange_orders={len(fx.orders)} "
          f"exchange_trades={sum(len(o.trades) for o in fx.orders)} sent_again={sum(n > 1 for n in posts.values())} "
          f"reconcile_differences={len(differences)} {dict(sorted(counts.items()))}")
    assert not differences, f"{tag(counts)} reconciliation found differences: {differences[:3]}"
    assert counts["sigkill"] >= 2 and counts["faults"] > 0, tag(counts)
    assert strategy > 0 and fills > 0, f"{tag(counts)} strategy orders {by_reason}, fills {fills}"
