"""Decide what a signal does to the book, from a snapshot of it. Pure: the engine persists."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.gates import join_reasons, pyramid_gate_failures
from core.models import BASE_LAYER, Layer, LayerStatus, Outcome, PyramidingState, SignalType
from core.signals import Signal
from core.sizing import (
    Sizing,
    cap_to_margin,
    cap_to_portfolio,
    pyramid_risk_budget,
    size_base_entry,
    size_pyramid,
)
from core.specs import InstrumentSpec, PortfolioConfig
from core.stops import Trail, initial_stop, trail_stop

STOP_HIT_REASON = "PM_STOP_HIT"
MAX_LOTS = "max_lots"
MARGIN_CAP = "margin_cap"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outcome that needs no order: blocked, rejected or ignored."""

    outcome: Outcome
    reason: str | None


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    sizing_equity: Decimal
    portfolio_equity: Decimal  # closed + half the unrealised P&L
    margin: Decimal
    open_risk: Decimal
    open_vol: Decimal
    margin_used: Decimal = Decimal(0)  # by open layers and entries in flight


@dataclass(frozen=True, slots=True)
class EntryPlan:
    layer: str
    lots: int
    limiter: str
    initial_stop: Decimal


@dataclass(frozen=True, slots=True)
class ExitPlan:
    layers: tuple[Layer, ...]
    reason: str

    @property
    def lots(self) -> int:
        return sum(layer.lots for layer in self.layers)

    @property
    def quantity(self) -> int:
        """The broker quantity the layers hold (what they were bought with)."""
        return sum(layer.quantity for layer in self.layers)

    def by_contract(self) -> list[ExitPlan]:
        """Split the exit into one order per contract its layers are held in, in order.

        Layers entered on either side of a front-month change hold different contracts;
        each is sold in its own, never in whatever is the front month now.
        """
        groups: dict[str | None, list[Layer]] = {}
        for layer in self.layers:
            groups.setdefault(layer.tradingsymbol, []).append(layer)
        return [ExitPlan(tuple(layers), self.reason) for layers in groups.values()]


@dataclass(frozen=True, slots=True)
class MarketDataPlan:
    trails: tuple[tuple[Layer, Trail], ...]  # layers whose highest close or stop moved
    exit: ExitPlan | None  # layers whose stop was hit


def blocked(reason: str) -> Verdict:
    return Verdict(Outcome.BLOCKED, reason)


def ignored(reason: str) -> Verdict:
    return Verdict(Outcome.IGNORED, reason)


def rejected(reason: str) -> Verdict:
    return Verdict(Outcome.REJECTED, reason)


def _capped(signal: Signal, stop: Decimal, sizing: Sizing, spec: InstrumentSpec,
            cfg: PortfolioConfig, book: BookSnapshot, risk_limit: Decimal, vol_limit: Decimal,
            layer: str) -> Verdict | EntryPlan:
    if sizing.lots <= 0:
        return blocked(f"Zero lots (limited by {sizing.limiter})")
    wanted, limiter = sizing.lots, sizing.limiter
    if wanted > spec.max_lots_per_order:
        wanted, limiter = spec.max_lots_per_order, MAX_LOTS
    atr = signal.atr or Decimal(0)
    lots, reason = cap_to_portfolio(
        wanted, (signal.price - stop) * spec.point_value, atr * spec.point_value,
        book.open_risk, book.open_vol, book.portfolio_equity, risk_limit, vol_limit)
    if lots <= 0:
        return blocked(reason or "Zero lots (limited by portfolio)")
    if lots < wanted:
        limiter = "portfolio"
    by_margin, reason = cap_to_margin(lots, spec.margin_per_lot, book.margin_used,
                                      book.sizing_equity, cfg.max_margin_utilization_percent)
    if by_margin <= 0:
        return blocked(reason or "Zero lots (limited by margin_cap)")
    if by_margin < lots:
        lots, limiter = by_margin, MARGIN_CAP
    return EntryPlan(layer=layer, lots=lots, limiter=limiter, initial_stop=stop)


def decide_base_entry(signal: Signal, spec: InstrumentSpec, cfg: PortfolioConfig,
                      layers: list[Layer], book: BookSnapshot) -> Verdict | EntryPlan:
    """Return the base entry to place for `signal`, or why there is none (DOMAIN.md §4)."""
    if layers:
        return blocked("already in position")
    assert signal.stop is not None and signal.atr is not None and signal.er is not None
    stop = initial_stop(signal.price, signal.stop, signal.atr, spec, cfg)
    sizing = size_base_entry(signal.price, stop, signal.atr, signal.er, book.sizing_equity,
                             book.margin, spec, cfg)
    return _capped(signal, stop, sizing, spec, cfg, book, cfg.max_portfolio_risk_percent,
                   cfg.max_portfolio_vol_percent, BASE_LAYER)


def decide_pyramid(signal: Signal, spec: InstrumentSpec, cfg: PortfolioConfig,
                   layers: list[Layer], pyramiding: PyramidingState | None,
                   book: BookSnapshot) -> Verdict | EntryPlan:
    """Return the pyramid to place for `signal`, or why there is none (DOMAIN.md §5)."""
    refusal = pyramid_refusal(signal, spec, layers, pyramiding)
    if refusal is not None:
        return refusal
    base = next(x for x in layers if x.is_base_position and x.status == LayerStatus.OPEN)
    assert pyramiding is not None and signal.stop is not None and signal.atr is not None
    layer_name = signal.position or ""
    trade = [(x.entry_price, x.lots) for x in layers
             if x.trade_id == base.trade_id and x.status == LayerStatus.OPEN]
    failures = pyramid_gate_failures(signal.price, signal.atr, base.entry_price,
                                     base.initial_stop, pyramiding.last_pyramid_price, trade,
                                     spec.point_value, cfg)
    if failures:
        return blocked(join_reasons(failures))
    stop = initial_stop(signal.price, signal.stop, signal.atr, spec, cfg)
    budget = pyramid_risk_budget(signal.price, base.entry_price, base.initial_stop, base.lots,
                                 spec.point_value)
    sizing = size_pyramid(signal.price, stop, book.margin, base.lots,
                          pyramiding.pyramid_count, budget, spec)
    return _capped(signal, stop, sizing, spec, cfg, book, cfg.pyramid_risk_block,
                   cfg.pyramid_vol_block, layer_name)


def pyramid_refusal(signal: Signal, spec: InstrumentSpec, layers: list[Layer],
                    pyramiding: PyramidingState | None) -> Verdict | None:
    """Why the trade's layers refuse a pyramid whatever the book (no sizing needed), or None."""
    base = next((x for x in layers if x.is_base_position and x.status == LayerStatus.OPEN), None)
    if base is None or pyramiding is None or pyramiding.trade_id != base.trade_id:
        return blocked("no base position")
    layer_name = signal.position or ""
    if layer_name == BASE_LAYER or any(x.layer == layer_name for x in layers):
        return blocked(f"layer {layer_name} already open")
    if pyramiding.pyramid_count >= spec.max_pyramids:
        return blocked("max pyramids reached")
    return None


def decide_on_flat(signal: Signal, spec: InstrumentSpec) -> Verdict | None:
    """The decision of a signal on an instrument with no live layer, where it needs no book
    (an exit or a bar has nothing to act on, a pyramid no base), or None (a base entry)."""
    if signal.signal_type is SignalType.EXIT:
        return _verdict(decide_exit(signal, []))
    if signal.signal_type is SignalType.MARKET_DATA:
        return _verdict(decide_market_data(signal, spec, []))
    if signal.signal_type is SignalType.PYRAMID:
        return pyramid_refusal(signal, spec, [], None)
    return None


def _verdict(plan: Verdict | ExitPlan | MarketDataPlan) -> Verdict:
    assert isinstance(plan, Verdict), "no layer: nothing to exit or trail"
    return plan


def decide_exit(signal: Signal, layers: list[Layer]) -> Verdict | ExitPlan:
    """Return the layers an EXIT closes (one order for all of them), or why none (§7)."""
    reason = signal.reason or "EXIT"
    if signal.position == "ALL":
        if not layers:
            return ignored("no open layers")
        open_layers = tuple(x for x in layers if x.status == LayerStatus.OPEN)
        return ExitPlan(open_layers, reason) if open_layers else ignored("already closing")
    layer = next((x for x in layers if x.layer == signal.position), None)
    if layer is None:
        return ignored(f"no open layer {signal.position}")
    if layer.status != LayerStatus.OPEN:
        return ignored("already closing")
    return ExitPlan((layer,), reason)


def decide_market_data(signal: Signal, spec: InstrumentSpec,
                       layers: list[Layer]) -> Verdict | MarketDataPlan:
    """Trail every open layer's stop; those the bar closes below are exited (DOMAIN.md §6)."""
    open_layers = [x for x in layers if x.status == LayerStatus.OPEN]
    if not open_layers:
        return ignored("no open layers")
    atr = signal.atr or Decimal(0)
    trails: list[tuple[Layer, Trail]] = []
    hits: list[Layer] = []
    for layer in open_layers:
        trail = trail_stop(layer.highest_close, layer.current_stop, signal.price, atr, spec)
        if trail.hit:
            hits.append(layer)
        elif (trail.highest_close, trail.current_stop) != (layer.highest_close,
                                                          layer.current_stop):
            trails.append((layer, trail))
    exit_plan = ExitPlan(tuple(hits), STOP_HIT_REASON) if hits else None
    return MarketDataPlan(tuple(trails), exit_plan)


def check_execution_price(plan: EntryPlan, signal: Signal, quote: Decimal, pyramid: bool,
                          max_divergence_percent: Decimal,
                          max_risk_increase_percent: Decimal) -> Verdict | EntryPlan:
    """Refuse an entry whose market moved away from the alert (DOMAIN.md §10).

    The quote must be within the divergence limit and above the stop. When the risk per lot
    (price − stop) grew by more than `max_risk_increase_percent` between alert and quote, a
    base entry is refused and a pyramid shrinks in proportion — never below one lot, never up.
    """
    divergence = abs(quote - signal.price) / signal.price * 100
    if divergence > max_divergence_percent:
        return rejected(f"Quote {quote} diverges {divergence:.2f}% from signal "
                        f"price {signal.price} (limit {max_divergence_percent}%)")
    if quote <= plan.initial_stop:
        return rejected(f"quote at or below stop (quote {quote}, stop {plan.initial_stop})")
    alert_risk = signal.price - plan.initial_stop
    quote_risk = quote - plan.initial_stop
    if quote_risk * 100 <= alert_risk * (100 + max_risk_increase_percent):
        return plan
    if not pyramid:
        growth = (quote_risk - alert_risk) / alert_risk * 100
        return rejected(f"risk per lot grew {growth:.1f}% from the alert to the quote "
                        f"(limit {max_risk_increase_percent}%)")
    lots = max(1, int(plan.lots * alert_risk / quote_risk))
    return EntryPlan(plan.layer, lots, "quote" if lots < plan.lots else plan.limiter,
                     plan.initial_stop)
