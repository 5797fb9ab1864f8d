"""What the live book exposes: equities, open risk, volatility and margin in use. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.accounting import Equity, equity, open_risk, open_volatility, unrealised_pnl
from core.models import Layer, PortfolioState
from core.specs import InstrumentSpec

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Exposure:
    equity: Equity
    risk: Decimal
    volatility: Decimal
    margin_used: Decimal
    layers: int


@dataclass(frozen=True, slots=True)
class Part:
    """One instrument's share of the book's exposure."""

    unrealised: Decimal = _ZERO
    risk: Decimal = _ZERO
    volatility: Decimal = _ZERO
    margin_used: Decimal = _ZERO
    layers: int = 0

    def plus(self, other: Part, sign: int = 1) -> Part:
        return Part(self.unrealised + sign * other.unrealised, self.risk + sign * other.risk,
                    self.volatility + sign * other.volatility,
                    self.margin_used + sign * other.margin_used,
                    self.layers + sign * other.layers)


def part(layers: Iterable[Layer], spec: InstrumentSpec, price: Decimal | None) -> Part:
    """One instrument's layers marked at `price` (None: at their entries, as if unmoved)."""
    live = list(layers)
    pv = spec.point_value
    return Part(
        unrealised=unrealised_pnl((x.entry_price, x.entry_price if price is None else price,
                                   x.lots, pv) for x in live),
        risk=open_risk((x.entry_price, x.current_stop, x.lots, pv) for x in live),
        volatility=open_volatility((x.atr, x.lots, pv) for x in live),
        margin_used=sum((x.lots * spec.margin_per_lot for x in live), _ZERO),
        layers=len(live))


def of_parts(portfolio: PortfolioState | None, total: Part) -> Exposure:
    closed = portfolio.closed_equity if portfolio else _ZERO
    high = portfolio.equity_high if portfolio else _ZERO
    return Exposure(equity=equity(closed, total.unrealised, high), risk=total.risk,
                    volatility=total.volatility, margin_used=total.margin_used,
                    layers=total.layers)


def marked(prices: dict[str, Decimal], layer: Layer) -> Decimal:
    """A layer's price among `prices` (its instrument's last), else its entry's."""
    return prices.get(layer.instrument, layer.entry_price)


def by_instrument(layers: Iterable[Layer]) -> dict[str, list[Layer]]:
    grouped: dict[str, list[Layer]] = {}
    for layer in layers:
        grouped.setdefault(layer.instrument, []).append(layer)
    return grouped


def exposure(portfolio: PortfolioState | None, layers: Iterable[Layer],
             instruments: dict[str, InstrumentSpec],
             last_price: Callable[[str], Decimal | None]) -> Exposure:
    """Return the book's exposure, marking each instrument's open layers at its last known
    price (None: at their entries)."""
    total = Part()
    for instrument, held in by_instrument(layers).items():
        total = total.plus(part(held, instruments[instrument], last_price(instrument)))
    return of_parts(portfolio, total)


class RunningExposure:
    """The book's exposure kept by instrument, so that one instrument's change costs its own
    layers, not the whole book's (an entry sizes against the book: 100k layers summed for
    each entry took longer than the entry). The sums are exact (Decimal addition), so the
    figures are those `exposure` would give for the same layers and prices."""

    def __init__(self, instruments: dict[str, InstrumentSpec]):
        self._instruments = instruments
        self._parts: dict[str, Part] = {}
        self._total = Part()

    def reset(self, layers: Iterable[Layer], last_price: Callable[[str], Decimal | None]
              ) -> None:
        self._parts, self._total = {}, Part()
        for instrument, held in by_instrument(layers).items():
            self.update(instrument, held, last_price(instrument))

    def update(self, instrument: str, layers: list[Layer], price: Decimal | None) -> None:
        """Take an instrument's live layers and price as they are now."""
        old = self._parts.pop(instrument, None)
        if old is not None:
            self._total = self._total.plus(old, -1)
        if layers:
            new = part(layers, self._instruments[instrument], price)
            self._parts[instrument] = new
            self._total = self._total.plus(new)

    def exposure(self, portfolio: PortfolioState | None) -> Exposure:
        return of_parts(portfolio, self._total)
