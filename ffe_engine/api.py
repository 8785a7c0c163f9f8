"""The engine's control surface as one table: `ffe ctl`, the control socket's dispatch and the attached console's
client are all built from COMMANDS.

Every command's arguments are a section checked strictly (ffe_engine/control_args.py): a wrong type
(`{"confirm": "false"}`), a missing argument or an unknown one is refused with a one-line error, never coerced.
The table itself is plain data, so `ffe` builds its parser and `ffe ctl` its requests without those sections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple, Protocol

from .errors import ControlError

UNDER_WAY = "under way: "  # how a control's answer given before it has ended begins (a resume behind a close)

if TYPE_CHECKING:
    from .control_args import Args


class EngineControl(Protocol):
    """What a front end may ask of an engine, in process (`Engine`) or through the socket (`RemoteEngine`)."""

    def snapshot(self) -> dict[str, Any]: ...
    async def pause(self, reason: str = ..., by: str = ...) -> Any: ...
    async def resume(self, by: str = ..., confirm: bool = ..., state_serial: int | None = ...,
                     timeout_s: float | None = ...) -> Any: ...
    async def halt(self, reason: str = ..., by: str = ..., timeout_s: float | None = ...) -> Any: ...
    async def flatten(self, by: str = ..., timeout_s: float | None = ...) -> Any: ...
    async def approve(self, approval_id: str, by: str = ...) -> Any: ...
    async def reject(self, approval_id: str, by: str = ...) -> Any: ...
    async def set_approval_mode(self, mode: str, by: str = ...) -> Any: ...
    async def accept_reconcile(self, by: str = ..., timeout_s: float | None = ..., own_coins: bool = ...) -> Any: ...
    async def operator_order(self, symbol: str, side: str, quantity: float, by: str = ...) -> Any: ...
    async def operator_cancel(self, client_order_id: str, by: str = ...) -> Any: ...
    async def settle_order(self, client_order_id: str, outcome: str, quantity: float | None = ...,
                           price: float | None = ..., by: str = ..., fee: float | None = ...,
                           fee_currency: str | None = ...) -> Any: ...
    async def book_hand_sale(self, symbol: str, quantity: float, price: float, fee: float = ...,
                             by: str = ...) -> Any: ...
    async def close_position(self, symbol: str, by: str = ..., opened_ts: int | None = ...,
                             timeout_s: float | None = ...) -> Any: ...
    async def balances(self) -> Any: ...
    async def profit(self) -> Any: ...
    async def why(self) -> Any: ...
    def health(self) -> dict[str, Any]: ...
    async def backup(self, to: str | None = ..., by: str = ...) -> Any: ...


async def _status(e: EngineControl, a: Any) -> Any:
    return e.snapshot()


async def _health(e: EngineControl, a: Any) -> Any:
    return e.health()


async def _pause(e: EngineControl, a: Any) -> Any:
    return await e.pause(reason=a.reason or "ffe ctl pause", by=a.by)


async def _resume(e: EngineControl, a: Any) -> Any:
    return await e.resume(by=a.by, confirm=a.confirm, state_serial=a.state_serial, timeout_s=a.timeout_s)


async def _halt(e: EngineControl, a: Any) -> Any:
    return await e.halt(reason=a.reason or "ffe ctl halt", by=a.by, timeout_s=a.timeout_s)


async def _flatten(e: EngineControl, a: Any) -> Any:
    return await e.flatten(by=a.by, timeout_s=a.timeout_s)


async def _approve(e: EngineControl, a: Any) -> Any:
    return await e.approve(a.id, by=a.by)


async def _reject(e: EngineControl, a: Any) -> Any:
    return await e.reject(a.id, by=a.by)


async def _mode(e: EngineControl, a: Any) -> Any:
    return await e.set_approval_mode(a.mode, by=a.by)


async def _accept(e: EngineControl, a: Any) -> Any:
    return await e.accept_reconcile(by=a.by, timeout_s=a.timeout_s, own_coins=a.own_coins)


async def _order(e: EngineControl, a: Any) -> Any:
    return await e.operator_order(a.symbol, a.side, a.quantity, by=a.by)


async def _backup(e: EngineControl, a: Any) -> Any:
    return await e.backup(a.to, by=a.by)


async def _cancel(e: EngineControl, a: Any) -> Any:
    return await e.operator_cancel(a.id, by=a.by)


async def _settle(e: EngineControl, a: Any) -> Any:
    return await e.settle_order(a.id, a.outcome, quantity=a.quantity, price=a.price, by=a.by, fee=a.fee,
                                fee_currency=a.fee_currency)


async def _sold_by_hand(e: EngineControl, a: Any) -> Any:
    return await e.book_hand_sale(a.symbol, a.quantity, a.price, fee=a.fee, by=a.by)


async def _close(e: EngineControl, a: Any) -> Any:
    return await e.close_position(a.symbol, by=a.by, opened_ts=a.opened_ts, timeout_s=a.timeout_s)


async def _orders(e: EngineControl, a: Any) -> Any:
    snap = e.snapshot()
    return {"market_ts": snap.get("market_ts"), "orders": snap["orders"]}


async def _trades(e: EngineControl, a: Any) -> Any:
    snap = e.snapshot()
    return {"market_ts": snap.get("market_ts"), "positions": snap["positions"]}


async def _balances(e: EngineControl, a: Any) -> Any:
    return await e.balances()


async def _profit(e: EngineControl, a: Any) -> Any:
    return await e.profit()


async def _why(e: EngineControl, a: Any) -> Any:
    return await e.why()


class Command(NamedTuple):  # not a dataclass: `ffe` builds its parser without importing dataclasses (and inspect)
    name: str
    call: Callable[[EngineControl, Any], Awaitable[Any]]
    help: str
    ctl: bool = True  # offered by `ffe ctl`
    target: str | None = None  # the argument `ffe ctl NAME TARGET` fills
    second: str | None = None  # the argument `ffe ctl NAME TARGET SECOND` fills
    confirm: str | None = None  # what `ffe ctl` asks before sending (skipped with --yes)
    options: tuple[str, ...] = ()  # the `ffe ctl` options it takes (--quantity, --price, --fee, --own-coins)
    required: tuple[str, ...] = ()  # of which it cannot go without
    reads: bool = False  # a question: it changes nothing (unanswered, nothing of it applies later)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("status", _status, "state, equity, positions, orders, approvals", reads=True),
    Command("health", _health, "the monitor's verdict: exit 0 healthy, 1 degraded, 2 down or unreachable", reads=True),
    Command("pause", _pause, "no new entries; exits, stop-loss and take-profit go on"),
    Command("resume", _resume, "resume; re-arming a HALTED engine needs --yes"),
    Command("halt", _halt, "kill switch: cancel every open order, refuse new ones, HALTED stored"),
    Command("flatten", _flatten, "cancel all, close every position, then HALTED",
            confirm="close every position at market and halt"),
    Command("approve", _approve, "approve a pending trade", target="id"),
    Command("reject", _reject, "reject a pending trade", target="id"),
    Command("mode", _mode, "approval mode: auto or manual", target="mode"),
    Command("accept", _accept, "accept the differences reconciliation found (--own-coins: coins gone beside a "
            "position were the operator's own, not the position's)", options=("own_coins",)),
    Command("orders", _orders, "open orders with their age and status", reads=True),
    Command("cancel", _cancel, "cancel one open order (its client order id) through the order path",
            target="id", confirm="cancel this order at the venue"),
    Command("settle", _settle, "end an order in doubt that the exchange lost, as filled (--quantity, --price, "
            "--fee, --fee-currency) or canceled, through the order path; nothing is sent", target="id",
            second="outcome", confirm="record this order's end by hand, without the exchange's word",
            options=("quantity", "price", "fee", "fee_currency")),
    Command("sold-by-hand", _sold_by_hand, "book a sale of a position's coins made on the exchange by hand, "
            "outside ffe (--quantity, --price, --fee), as the exchange's account shows it; nothing is sent",
            target="symbol", confirm="book this sale as made on the exchange by hand",
            options=("quantity", "price", "fee"), required=("quantity", "price")),
    Command("trades", _trades, "open trades: entry, price now, P&L, age, stop-loss and take-profit", reads=True),
    Command("close", _close, "close one position at market through the order path (gates apply)",
            target="symbol", confirm="close this position at market"),
    Command("balances", _balances, "balances per asset: free, locked in orders, total, value", reads=True),
    Command("profit", _profit, "realised and unrealised P&L by day, week, month and symbol; win rate, fees, "
            "drawdown", reads=True),
    Command("why", _why, "why no trades: refusals by gate in the last hour and day, what blocks entries now",
            reads=True),
    Command("order", _order, "a manual order through the single order path", ctl=False),
    Command("backup", _backup, "a backup of the running engine's records (`ffe backup`)", ctl=False),
)}

STREAM = "subscribe"  # not a command: the connection turns into the event stream (ffe attach)


def parse_args(name: str, raw: Any) -> Args:
    """The command's arguments, checked strictly; ControlError names what is wrong."""
    command = COMMANDS.get(name)
    if command is None:
        raise ControlError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ControlError(f"{name}: args must be an object")
    from .control_args import ARGS, Args
    from .schema import ValidationError

    try:
        return ARGS.get(name, Args).model_validate(raw, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "args"
        raise ControlError(f"{name}: {where}: {err['msg']}") from None


async def dispatch(engine: EngineControl, name: str, raw: Any) -> Any:
    args = parse_args(name, raw)
    return await COMMANDS[name].call(engine, args)
