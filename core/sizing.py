"""Position sizing (DOMAIN.md §4 and §5): Tom Basso base entries, pyramids, portfolio caps.

Pure: standard library, `decimal` and `core.specs` only. Each candidate is one division of
exact products, so a value that is exactly whole (2.0 lots) is never floored to one less.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from core.accounting import layer_pnl
from core.specs import InstrumentSpec, PortfolioConfig

RISK = "risk"
VOLATILITY = "volatility"
MARGIN = "margin"
GEOMETRIC = "geometric"
RISK_BUDGET = "risk_budget"
INVALID_RISK = "invalid_risk"

_HUNDRED = Decimal(100)
_ONE_DECIMAL = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class Sizing:
    """Lots to trade, the constraint that bound them, and the raw candidates behind them."""

    lots: int
    limiter: str
    detail: dict[str, Decimal]


def size_base_entry(price: Decimal, stop: Decimal, atr: Decimal, er: Decimal,
                    equity: Decimal, margin: Decimal, spec: InstrumentSpec,
                    cfg: PortfolioConfig) -> Sizing:
    """Return the base-entry lots: floor of the smallest of Lot-R, Lot-M (and Lot-V if on).

    Ties go to risk, then volatility, then margin. With ATR 0 there is no Lot-V.
    """
    if price <= stop:
        return Sizing(0, INVALID_RISK, {})
    detail = {"lot_r": (equity * spec.initial_risk_percent * er
                        / (_HUNDRED * (price - stop) * spec.point_value))}
    if atr > 0:
        detail["lot_v"] = equity * spec.initial_vol_percent / (_HUNDRED * atr * spec.point_value)
    detail["lot_m"] = margin / spec.margin_per_lot
    candidates = [(RISK, detail["lot_r"])]
    if cfg.use_volatility_constraint and "lot_v" in detail:
        candidates.append((VOLATILITY, detail["lot_v"]))
    candidates.append((MARGIN, detail["lot_m"]))
    return _smallest(candidates, detail)


def pyramid_risk_budget(price: Decimal, base_entry: Decimal, base_initial_stop: Decimal,
                        base_lots: int, point_value: Decimal) -> Decimal:
    """Return max(0, U − R_base): the base's open profit beyond the risk it started with."""
    unrealised = layer_pnl(base_entry, price, base_lots, point_value)
    base_risk = (base_entry - base_initial_stop) * base_lots * point_value
    return max(Decimal(0), unrealised - base_risk)


def size_pyramid(price: Decimal, stop: Decimal, margin: Decimal, base_lots: int,
                 pyramids_taken: int, risk_budget: Decimal, spec: InstrumentSpec) -> Sizing:
    """Return the pyramid lots: the smallest of margin (A), geometric (B) and risk budget (C).

    `pyramids_taken` is k, the pyramids already taken in this trade. Ties go to margin, then
    geometric, then risk budget.
    """
    if pyramids_taken < 0:
        raise ValueError(f"pyramids_taken must be >= 0, got {pyramids_taken}")
    if price <= stop:
        return Sizing(0, INVALID_RISK, {})
    by_margin = _floor_lots(margin / spec.margin_per_lot)
    # floor(base_lots × 0.5^(k+1)) computed exactly on integers.
    geometric = max(base_lots, 0) >> (pyramids_taken + 1)
    by_budget = _floor_lots(max(Decimal(0), risk_budget)
                            / (2 * (price - stop) * spec.point_value))
    detail = {"a": Decimal(by_margin), "b": Decimal(geometric), "c": Decimal(by_budget)}
    return _smallest([(MARGIN, detail["a"]), (GEOMETRIC, detail["b"]),
                      (RISK_BUDGET, detail["c"])], detail)


def cap_to_portfolio(lots: int, risk_per_lot: Decimal, vol_per_lot: Decimal,
                     open_risk: Decimal, open_vol: Decimal, portfolio_equity: Decimal,
                     max_risk_percent: Decimal, max_vol_percent: Decimal) -> tuple[int, str | None]:
    """Return the most lots (at most `lots`) that keep portfolio risk and volatility in limits.

    The reason is None unless not even one lot fits; then the lots are 0 and the reason says
    which limit one more lot would break, risk first.
    """
    if lots <= 0:
        return 0, None
    if portfolio_equity <= 0:
        return 0, "Portfolio equity is not positive"
    by_risk = _most_lots(lots, risk_per_lot, open_risk, portfolio_equity, max_risk_percent)
    by_vol = _most_lots(lots, vol_per_lot, open_vol, portfolio_equity, max_vol_percent)
    if by_risk == 0:
        return 0, _breach("risk", open_risk + risk_per_lot, portfolio_equity, max_risk_percent)
    if by_vol == 0:
        return 0, _breach("volatility", open_vol + vol_per_lot, portfolio_equity,
                          max_vol_percent)
    return min(by_risk, by_vol), None


def cap_to_margin(lots: int, margin_per_lot: Decimal, margin_used: Decimal, equity: Decimal,
                  max_percent: Decimal) -> tuple[int, str | None]:
    """Return the most lots (at most `lots`) whose margin keeps the book's margin use within
    `max_percent` of `equity`; with none, 0 and the use one lot would reach (DOMAIN.md §10)."""
    if lots <= 0:
        return 0, None
    if equity <= 0:
        return 0, "Sizing equity is not positive"
    count = _most_lots(lots, margin_per_lot, margin_used, equity, max_percent)
    if count == 0:
        return 0, _breach("Margin use", margin_used + margin_per_lot, equity, max_percent,
                          prefix="")
    return count, None


def _smallest(candidates: list[tuple[str, Decimal]], detail: dict[str, Decimal]) -> Sizing:
    # min() keeps the first of equal values, so the list order is the tie order.
    limiter, value = min(candidates, key=lambda candidate: candidate[1])
    return Sizing(_floor_lots(value), limiter, detail)


def _floor_lots(value: Decimal) -> int:
    return max(0, int(value.to_integral_value(rounding=ROUND_FLOOR)))


def _fits(count: int, per_lot: Decimal, already_open: Decimal, equity: Decimal,
          limit_percent: Decimal) -> bool:
    # Multiplied out rather than divided, so the boundary is exact.
    return (already_open + count * per_lot) * _HUNDRED <= limit_percent * equity


def _most_lots(ceiling: int, per_lot: Decimal, already_open: Decimal, equity: Decimal,
               limit_percent: Decimal) -> int:
    if per_lot <= 0:
        # Adding lots cannot raise the total, so either all fit or none does.
        return ceiling if _fits(ceiling, per_lot, already_open, equity, limit_percent) else 0
    room = limit_percent * equity / _HUNDRED - already_open
    count = min(ceiling, _floor_lots(room / per_lot))
    # The division is rounded; settle the last lot with the exact comparison.
    while count < ceiling and _fits(count + 1, per_lot, already_open, equity, limit_percent):
        count += 1
    while count > 0 and not _fits(count, per_lot, already_open, equity, limit_percent):
        count -= 1
    return count


def _breach(what: str, total: Decimal, equity: Decimal, limit_percent: Decimal,
            prefix: str = "Portfolio ") -> str:
    # Rounded up, so a breach of 12.01% never reads "12.0% (limit 12.0%)".
    would_be = _one_decimal(total * _HUNDRED / equity, ROUND_CEILING)
    return (f"{prefix}{what} would be {would_be}% "
            f"(limit {_one_decimal(limit_percent, ROUND_HALF_UP)}%)")


def _one_decimal(value: Decimal, rounding: str) -> str:
    return str(value.quantize(_ONE_DECIMAL, rounding=rounding))
