"""The arguments of the control commands (ffe_engine/api.py), each a section (schema.py) checked strictly: a wrong
type (`{"confirm": "false"}`), a missing argument or an unknown one is refused with a one-line error, never coerced.

Only the engine's side of the socket validates them; `ffe ctl` and the parser use the table in api.py alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from . import fmt
from .market.bounds import PRICE_MAX, PRICE_MIN
from .schema import AfterValidator, Field, Section


def _plain(text: str | None) -> str | None:
    """The words a request carries are stored and shown on terminals later (`ffe ctl status`, `ffe audit tail`, the
    console's log): a character a terminal would act on (a new line that would read as a record of its own, an
    escape sequence, a turn of the text's direction) is refused rather than stored."""
    bad = fmt.unprintable(text) if text is not None else None
    if bad is not None:
        raise ValueError(f"holds a control character ({bad}): plain text only")
    return text


Text = Annotated[str, AfterValidator(_plain)]  # every free text of a request
OptionalText = Annotated[str | None, AfterValidator(_plain)]


class Args(Section):
    frozen = True  # what a command was asked with stays as it was checked

    by: Text = Field("ctl", min_length=1, max_length=64)


class StateArgs(Args):
    # A console's own (kill switch); else the command's.
    reason: OptionalText = Field(None, min_length=1, max_length=120)


class HaltArgs(StateArgs):
    # How long the client waits for the answer (`ffe ctl halt --timeout`): a halt pressed while another control is
    # under way answers within half of it with what is done and what is still under way (Engine.halt).
    timeout_s: float | None = Field(None, gt=0, le=3600)


class FlattenArgs(Args):
    timeout_s: float | None = Field(None, gt=0, le=3600)  # as HaltArgs'


class ResumeArgs(Args):
    confirm: bool = False
    state_serial: int | None = Field(default=None, ge=0)  # the state the operator was asked about (snapshot's)
    timeout_s: float | None = Field(None, gt=0, le=3600)  # as HaltArgs'


class ApprovalArgs(Args):
    id: Text = Field(min_length=1, max_length=64)


class OrderIdArgs(Args):
    id: Text = Field(min_length=1, max_length=64)


class SettleArgs(OrderIdArgs):
    outcome: Literal["filled", "canceled"]
    quantity: float | None = Field(None, gt=0)  # filled: what filled, and at what price (the operator's word)
    price: float | None = Field(None, ge=PRICE_MIN, le=PRICE_MAX)  # a price the books can compute with
    # filled: its fee, as the exchange's account shows it, in the symbol's base or quote currency (the default)
    fee: float | None = Field(None, ge=0)
    fee_currency: OptionalText = Field(None, min_length=1, max_length=16)


class SymbolArgs(Args):
    symbol: Text = Field(min_length=1, max_length=32)


class CloseArgs(SymbolArgs):
    # The position the operator was shown (its opening time, ms): another one in the symbol is not closed.
    opened_ts: int | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0, le=3600)  # as HaltArgs'


class HandSaleArgs(SymbolArgs):
    quantity: float = Field(gt=0)  # as the exchange's account shows the sale (the operator's word)
    price: float = Field(ge=PRICE_MIN, le=PRICE_MAX)
    fee: float = Field(0.0, ge=0)  # in the quote currency


class ModeArgs(Args):
    mode: Literal["auto", "manual"]


class OrderArgs(Args):
    symbol: Text = Field(min_length=1, max_length=32)
    side: Literal["buy", "sell"]
    quantity: float = Field(gt=0)  # finite, as every number


class AcceptArgs(Args):
    # How long the client waits for the answer (`ffe ctl accept --timeout`): the accept waits for the settle window
    # within half of it too, so that its answer (accepted, or when to accept again) still reaches the client.
    timeout_s: float | None = Field(None, gt=0, le=3600)
    # `ffe ctl accept --own-coins`: coins gone beside a position, which the baseline covers, were the operator's own
    # (the baseline is lowered by them, the position kept), not the position's sold by hand.
    own_coins: bool = False


class BackupArgs(Args):
    to: OptionalText = Field(None, min_length=1, max_length=4096)  # a directory; none: the engine's [backup] dir


# The commands that take more than `by`; every other command takes Args.
ARGS: dict[str, type[Args]] = {
    "pause": StateArgs, "resume": ResumeArgs, "halt": HaltArgs, "flatten": FlattenArgs, "approve": ApprovalArgs,
    "reject": ApprovalArgs,
    "mode": ModeArgs, "cancel": OrderIdArgs, "settle": SettleArgs, "close": CloseArgs, "order": OrderArgs,
    "backup": BackupArgs, "sold-by-hand": HandSaleArgs, "accept": AcceptArgs,
}
