"""The fee of a fill the operator settles by hand (`ffe ctl settle ID filled --fee F --fee-currency C`), as the
exchange's account shows it: in the symbol's base currency (Binance takes a buy's fee from the coins bought) or in
its quote currency (the default, as `ffe ctl sold-by-hand` takes a sale's fee). Booked with the fill as the
exchange's own answers are (execution.py): a fee in the base currency is paid in kind (the position holds that much
less than was bought, the cash is left alone), one in the quote currency comes off the cash. Without it the books
held the fee's coins beyond the account's, which no exit could sell.

The books count a fee in those two currencies only, as they do the exchange's answers (a fee in another token, BNB,
is left out of them): a fee in another currency is refused, nothing settled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ControlError


@dataclass(frozen=True, slots=True)
class SettledFee:
    amount: float = 0.0
    currency: str = ""  # the currency the operator gave it in; "" with no fee
    in_base: bool = False  # taken in the symbol's base currency (coins), not its quote currency

    def booked(self, price: float) -> tuple[float, float, float]:
        """As a fill books it at `price`: (the fee valued in the quote currency, the coins it took, what the first
        counts for those coins), i.e. Fill.fee, fee_base and fee_base_value."""
        if self.in_base:
            return self.amount * price, self.amount, self.amount * price
        return self.amount, 0.0, 0.0


NO_FEE = SettledFee()


def settled_fee(symbol: str, fee: float | None, currency: str | None, quantity: float | None) -> SettledFee:
    """The fee the operator gave for a settle of `quantity` of `symbol` (BASE/QUOTE). ControlError, nothing settled:
    a currency without a fee, a fee below 0 or not a number, a currency other than the symbol's base or quote, a fee
    in the base currency of the whole quantity or more."""
    base, _, quote = symbol.partition("/")
    quote = quote.partition(":")[0]  # a contract's settle currency, after the colon, is not its quote
    if fee is None:
        if currency is not None:
            raise ControlError("the fee's currency names the currency of a fee: give the fee too (--fee); nothing "
                               "settled")
        return NO_FEE
    if not (math.isfinite(fee) and fee >= 0):
        raise ControlError(f"a fee is 0 or more, got {fee!r}: nothing settled")
    named = (currency or quote).strip().upper()
    if named not in (base.upper(), quote.upper()):
        raise ControlError(f"a fee in {named} cannot be booked: the books count a {symbol} fee in {base} or {quote} "
                           "only (one in another currency, such as BNB, is left out of them, as it is of the "
                           "exchange's own answers); settle without the fee; nothing settled")
    in_base = named == base.upper()
    if in_base and quantity is not None and fee >= quantity:
        raise ControlError(f"a fee of {fee:.8g} {base} is not less than the {quantity:.8g} {base} filled: nothing "
                           "settled")
    if fee == 0:
        return NO_FEE
    return SettledFee(fee, base if in_base else quote, in_base)
