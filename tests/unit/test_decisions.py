"""What a signal does to the book (core/decisions.py), against DOMAIN.md §4-§8 (and §10).

Pure functions only: signals are parsed from payloads as the webhook does, layers and book
snapshots are built directly, the instrument table and portfolio defaults are the shipped ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from core.decisions import (
    BookSnapshot,
    EntryPlan,
    ExitPlan,
    MarketDataPlan,
    Verdict,
    check_execution_price,
    decide_base_entry,
    decide_exit,
    decide_market_data,
    decide_pyramid,
)
from core.models import Layer, LayerStatus, PyramidingState
from core.signals import Signal, parse_signal
from core.specs import PortfolioConfig
from core.stops import Trail

D = Decimal

SPECS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
CFG = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")
GOLD = SPECS["GOLD_MINI"]
AT = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
OPEN, CLOSING = LayerStatus.OPEN, LayerStatus.CLOSING


# -- builders -------------------------------------------------------------------------------
def signal(kind: str, instrument: str = "BANK_NIFTY", position: str | None = "Long_1",
           price: str = "52000", **fields: Any) -> Signal:
    """Parse a webhook payload; defaults are the V1 Bank Nifty signal (§8)."""
    payload: dict[str, Any] = {"type": kind, "instrument": instrument, "price": price,
                               "timestamp": AT.isoformat(), "atr": "350",
                               "supertrend": "51000"}
    if position is not None:
        payload["position"] = position
    if kind in ("BASE_ENTRY", "PYRAMID", "EXIT"):
        payload.update(stop="51650", lots=1, er="0.82")
    if kind == "EXIT":
        payload.update(stop="0", reason="trend reversal")
    payload.update(fields)
    return parse_signal(payload, SPECS)


def layer(name: str = "Long_1", entry: str = "52000", stop: str = "51650", lots: int = 1, *,
          trade_id: int = 1, status: str = OPEN, current_stop: str | None = None,
          highest: str | None = None, atr: str = "350",
          instrument: str = "BANK_NIFTY") -> Layer:
    spec = SPECS[instrument]
    return Layer(
        id=trade_id * 10 + int(name.removeprefix("Long_")), trade_id=trade_id,
        instrument=instrument, layer=name, status=status, lots=lots,
        quantity=spec.broker_quantity(lots), entry_price=D(entry), entry_timestamp=AT,
        initial_stop=D(stop), current_stop=D(current_stop or stop),
        highest_close=D(highest or entry), atr=D(atr), limiter="risk", tradingsymbol=None,
        signal_id=None, exit_price=None, exit_timestamp=None, exit_reason=None,
        realized_pnl=None, version=1)


def book(equity: str = "5000000", margin: str = "3000000", *, portfolio: str | None = None,
         open_risk: str = "0", open_vol: str = "0") -> BookSnapshot:
    return BookSnapshot(sizing_equity=D(equity), portfolio_equity=D(portfolio or equity),
                        margin=D(margin), open_risk=D(open_risk), open_vol=D(open_vol))


def pyramiding(last: str, count: int, trade_id: int = 1,
               instrument: str = "BANK_NIFTY") -> PyramidingState:
    return PyramidingState(instrument=instrument, trade_id=trade_id, base_position_id=None,
                           last_pyramid_price=D(last), pyramid_count=count)


def config(**changes: object) -> PortfolioConfig:
    return CFG.model_copy(update=changes)


def assert_verdict(result: object, outcome: str, reason: str) -> None:
    assert isinstance(result, Verdict), result
    assert (result.outcome, result.reason) == (outcome, reason)


def assert_plan(result: object, layer_name: str, lots: int, limiter: str,
                stop: str) -> EntryPlan:
    assert isinstance(result, EntryPlan), result
    assert (result.layer, result.lots, result.limiter, result.initial_stop) == (
        layer_name, lots, limiter, D(stop))
    return result


def base_entry(bk: BookSnapshot, cfg: PortfolioConfig = CFG, layers: list[Layer] | None = None,
               **fields: Any) -> Verdict | EntryPlan:
    sig = signal("BASE_ENTRY", **fields)
    return decide_base_entry(sig, SPECS[sig.instrument], cfg, layers or [], bk)


# -- §4 base entry sizing -------------------------------------------------------------------
def test_v1_base_entry_is_limited_by_risk() -> None:
    # Lot-R 3.905, Lot-M 11.11 (Lot-V 2.381 is off by default) → 3 lots.
    assert_plan(base_entry(book(margin="3000000")), "Long_1", 3, "risk", "51650")


def test_v1_base_entry_is_limited_by_margin() -> None:
    # Lot-M = 540,000 / 270,000 = 2.0 exactly: not floored to 1.
    assert_plan(base_entry(book(margin="540000")), "Long_1", 2, "margin", "51650")


def test_volatility_constraint_limits_lots_only_when_enabled() -> None:
    # Lot-V 2.381 < Lot-R 3.905: binding only with use_volatility_constraint.
    assert_plan(base_entry(book()), "Long_1", 3, "risk", "51650")
    on = config(use_volatility_constraint=True)
    assert_plan(base_entry(book(), cfg=on), "Long_1", 2, "volatility", "51650")


@pytest.mark.parametrize(("equity", "expected"), [("1000000", None), ("10000000", 7)])
def test_v2_paper_margin_is_sixty_percent_of_equity(equity: str, expected: int | None) -> None:
    margin = str(D(equity) * CFG.paper_margin_fraction)
    result = base_entry(book(equity, margin))
    if expected is None:
        assert_verdict(result, "blocked", "Zero lots (limited by risk)")
    else:
        assert_plan(result, "Long_1", expected, "risk", "51650")


@pytest.mark.parametrize(("equity", "margin", "stop", "reason"), [
    ("5000000", "0", "51650", "Zero lots (limited by margin)"),
    ("0", "3000000", "51650", "Zero lots (limited by risk)"),
    ("5000000", "3000000", "52100", "Zero lots (limited by invalid_risk)"),
    ("5000000", "3000000", "52000", "Zero lots (limited by invalid_risk)"),  # P = S
])
def test_v5_zero_lots_is_blocked_naming_the_limiter(equity: str, margin: str, stop: str,
                                                    reason: str) -> None:
    result = base_entry(book(equity, margin, portfolio="5000000"), stop=stop)
    assert_verdict(result, "blocked", reason)


@pytest.mark.parametrize(("instrument", "price", "atr", "stop", "lots"), [
    # Gold: risk/lot 700 × 10 = 7,000 → Lot-R 50,000 × 0.82 / 7,000 = 5.86 (signal stop: 8.2)
    ("GOLD_MINI", "78500", "700", "77800", 5),
    # Bank Nifty: risk/lot 600 × 30 = 18,000 → Lot-R 2.28 (signal stop 51,650: 3.9)
    ("BANK_NIFTY", "52000", "400", "51400", 2),
])
def test_v11_atr_stop_source_sets_the_stop_and_sizes_on_it(instrument: str, price: str,
                                                           atr: str, stop: str,
                                                           lots: int) -> None:
    signal_stop = "78000" if instrument == "GOLD_MINI" else "51650"
    result = base_entry(book(), cfg=config(stop_source="atr"), instrument=instrument,
                        price=price, atr=atr, stop=signal_stop)
    assert_plan(result, "Long_1", lots, "risk", stop)


@pytest.mark.parametrize("layers", [
    [layer("Long_1")],
    [layer("Long_2", entry="52500", stop="52100")],  # base closed, pyramid still open
    [layer("Long_1", status=CLOSING)],  # not flat until the exit fills
], ids=["base-open", "pyramid-only", "base-closing"])
def test_base_entry_while_in_position_is_blocked(layers: list[Layer]) -> None:
    assert_verdict(base_entry(book(), layers=layers), "blocked", "already in position")


@pytest.mark.parametrize(("open_risk", "lots"), [
    ("729000", 2),  # 729,000 + 2 × 10,500 = 750,000 = exactly 15 % of 5,000,000: fits
    ("729001", 1),  # one rupee more and only one lot fits
])
def test_portfolio_risk_cap_reduces_lots_to_the_most_that_fit(open_risk: str,
                                                              lots: int) -> None:
    result = base_entry(book(open_risk=open_risk))
    assert_plan(result, "Long_1", lots, "portfolio", "51650")


def test_portfolio_risk_cap_blocks_with_the_percentage_it_would_reach() -> None:
    # 889,500 + 10,500 = 900,000 = 18 % of 5,000,000
    result = base_entry(book(open_risk="889500"))
    assert_verdict(result, "blocked", "Portfolio risk would be 18.0% (limit 15.0%)")


def test_portfolio_cap_is_measured_against_portfolio_equity_not_sizing_equity() -> None:
    # 15 % of 4,000,000 = 600,000 leaves room for two lots of 10,500 (of 5,000,000: all 3).
    result = base_entry(book("5000000", portfolio="4000000", open_risk="579000"))
    assert_plan(result, "Long_1", 2, "portfolio", "51650")


def test_portfolio_vol_cap_applies_even_without_the_volatility_constraint() -> None:
    # V per lot = 350 × 30 = 10,500; 239,500 + 10,500 = 250,000 = exactly 5 %.
    assert not CFG.use_volatility_constraint
    assert_plan(base_entry(book(open_vol="239500")), "Long_1", 1, "portfolio", "51650")
    assert_verdict(base_entry(book(open_vol="264500")), "blocked",
                   "Portfolio volatility would be 5.5% (limit 5.0%)")


# -- §5 pyramids ----------------------------------------------------------------------------
def v6_layers() -> list[Layer]:
    # Base 10 lots at 51,500, initial stop 51,000: at 52,500 U − R_base = 300,000 − 150,000.
    return [layer("Long_1", entry="51500", stop="51000", lots=10)]


def pyramid(layers: list[Layer], state: PyramidingState | None, bk: BookSnapshot,
            cfg: PortfolioConfig = CFG, position: str = "Long_2", price: str = "52500",
            stop: str = "52000", **fields: Any) -> Verdict | EntryPlan:
    sig = signal("PYRAMID", position=position, price=price, stop=stop, **fields)
    return decide_pyramid(sig, SPECS[sig.instrument], cfg, layers, state, bk)


def test_v6_pyramid_is_limited_by_margin() -> None:
    # A = floor(1,000,000 / 270,000) = 3, B = 5, C = floor(0.5 × 150,000 / 15,000) = 5
    result = pyramid(v6_layers(), pyramiding("51500", 0),
                     book(margin="1000000", open_risk="150000", open_vol="105000"))
    assert_plan(result, "Long_2", 3, "margin", "52000")


@pytest.mark.parametrize(("taken", "lots"), [(0, 5), (1, 2), (2, 1), (3, 0)])
def test_v7_pyramids_shrink_geometrically(taken: int, lots: int) -> None:
    # Base 10 lots at 50,000 / 49,900: at 53,000 the risk budget allows 29, margin 18.
    layers = [layer("Long_1", entry="50000", stop="49900", lots=10)]
    entries = [("51000", 5), ("51500", 2), ("52000", 1)][:taken]
    layers += [layer(f"Long_{n}", entry=entry, stop=str(D(entry) - 500), lots=size)
               for n, (entry, size) in enumerate(entries, start=2)]
    last = entries[-1][0] if entries else "50000"
    position = f"Long_{taken + 2}"
    result = pyramid(layers, pyramiding(last, taken), book(margin="5000000"),
                     position=position, price="53000", stop="52500")
    if lots == 0:
        assert_verdict(result, "blocked", "Zero lots (limited by geometric)")
    else:
        assert_plan(result, position, lots, "geometric", "52500")


@pytest.mark.parametrize(("layers", "state"), [
    ([], None),
    ([layer("Long_1", status=CLOSING)], pyramiding("52000", 0)),
    ([layer("Long_2", entry="52500", stop="52100")], pyramiding("52500", 1)),
    ([layer("Long_1", trade_id=2)], pyramiding("52000", 0, trade_id=1)),
    ([layer("Long_1")], None),
], ids=["flat", "base-closing", "base-closed-pyramid-open", "other-trade", "no-state"])
def test_pyramid_without_an_open_base_of_the_trade_is_blocked(
        layers: list[Layer], state: PyramidingState | None) -> None:
    result = pyramid(layers, state, book(), position="Long_3", price="53000", stop="52600")
    assert_verdict(result, "blocked", "no base position")


@pytest.mark.parametrize("position", ["Long_2", "Long_1"])
def test_pyramid_on_an_open_layer_is_blocked(position: str) -> None:
    layers = [layer("Long_1"), layer("Long_2", entry="52500", stop="52100")]
    result = pyramid(layers, pyramiding("52500", 1), book(), position=position,
                     price="53000", stop="52600")
    assert_verdict(result, "blocked", f"layer {position} already open")


@pytest.mark.parametrize(("taken", "position"), [(2, "Long_4"), (3, "Long_5")])
def test_gold_allows_three_pyramids_per_trade(taken: int, position: str) -> None:
    assert GOLD.max_pyramids == 3
    layers = [layer("Long_1", "78000", "77000", 16, instrument="GOLD_MINI"),
              layer("Long_2", "79000", "78300", 8, instrument="GOLD_MINI"),
              layer("Long_3", "80000", "79300", 4, instrument="GOLD_MINI")]
    if taken == 3:
        layers.append(layer("Long_4", "80500", "79800", 2, instrument="GOLD_MINI"))
    state = pyramiding("80000" if taken == 2 else "80500", taken, instrument="GOLD_MINI")
    result = pyramid(layers, state, book(), instrument="GOLD_MINI", position=position,
                     price="81000", stop="80300", atr="700")
    if taken == 3:
        assert_verdict(result, "blocked", "max pyramids reached")
    else:
        # A 28, B = floor(16 × 0.5^3) = 2, C = floor(0.5 × 320,000 / 7,000) = 22
        assert_plan(result, position, 2, "geometric", "80300")


def test_max_pyramids_is_checked_before_the_gates() -> None:
    layers = [layer("Long_1", "78000", "77000", 16, instrument="GOLD_MINI")]
    # Price below the base entry would fail every gate.
    result = pyramid(layers, pyramiding("80500", 3, instrument="GOLD_MINI"), book(),
                     instrument="GOLD_MINI", position="Long_5", price="77900",
                     stop="77500", atr="700")
    assert_verdict(result, "blocked", "max pyramids reached")


def test_every_failing_gate_is_reported_in_order() -> None:
    # Below the base entry: moved -40 of 350 needed, spacing -40/350, P&L -40 × 1 × 30.
    result = pyramid([layer("Long_1")], pyramiding("52000", 0), book(), price="51960",
                     stop="51600")
    assert_verdict(result, "blocked", "Price not > 1R (moved -40, need 350) | "
                                      "ATR spacing -0.12 < 0.5 | "
                                      "Instrument P&L negative: ₹-1,200")


def test_gate_reasons_read_as_in_the_domain_examples() -> None:
    result = pyramid([layer("Long_1", stop="51550")], pyramiding("52000", 0), book(),
                     price="52400", stop="52100", atr="1800")
    assert_verdict(result, "blocked",
                   "Price not > 1R (moved 400, need 450) | ATR spacing 0.22 < 0.5")


@pytest.mark.parametrize(("price", "reason"), [
    ("134400", "Price not > 1R (moved 400, need 500)"),
    ("134500", "Price not > 1R (moved 500, need 500)"),  # exactly 1R is not enough
    ("134510", None),
])
def test_v18_one_r_gate_is_strict(price: str, reason: str | None) -> None:
    layers = [layer("Long_1", "134000", "133500", 10, instrument="SILVER_MINI", atr="400")]
    stop = str(D(price) - 10)
    result = pyramid(layers, pyramiding("134000", 0, instrument="SILVER_MINI"), book(),
                     instrument="SILVER_MINI", price=price, stop=stop, atr="400")
    if reason is None:
        # A 7, B 5, C = floor(0.5 × (10 × 10 × 5) / (10 × 5)) = 5
        assert_plan(result, "Long_2", 5, "geometric", stop)
    else:
        assert_verdict(result, "blocked", reason)


def test_one_r_gate_can_be_switched_off() -> None:
    layers = [layer("Long_1", "134000", "133500", 10, instrument="SILVER_MINI", atr="400")]
    result = pyramid(layers, pyramiding("134000", 0, instrument="SILVER_MINI"), book(),
                     cfg=config(use_1r_gate=False), instrument="SILVER_MINI",
                     price="134400", stop="134390", atr="400")
    # Past the gates; below 1R the base has no profit beyond its risk to fund a pyramid.
    assert_verdict(result, "blocked", "Zero lots (limited by risk_budget)")


def test_atr_spacing_is_measured_from_the_last_pyramid() -> None:
    layers = [layer("Long_1", lots=4), layer("Long_2", entry="52500", stop="52150", lots=2)]
    state = pyramiding("52500", 1)
    # 100 / 350 = 0.2857 from the last pyramid, though 600 / 350 from the base entry.
    result = pyramid(layers, state, book(), position="Long_3", price="52600", stop="52250")
    assert_verdict(result, "blocked", "ATR spacing 0.28 < 0.5")
    # Exactly 0.5 ATR (175 / 350) passes: A 11, B = floor(4 × 0.25) = 1, C 1.
    result = pyramid(layers, state, book(), position="Long_3", price="52675", stop="52300")
    assert_plan(result, "Long_3", 1, "geometric", "52300")


def test_profit_gate_sums_the_trades_open_layers() -> None:
    # Base +600 × 1 × 30 = 18,000; Long_2 filled above its alert: -100 × 10 × 30 = -30,000.
    base = layer("Long_1", lots=1)
    loser = layer("Long_2", entry="52700", stop="52300", lots=10)
    state = pyramiding("52400", 1)
    result = pyramid([base, loser], state, book(), position="Long_3", price="52600",
                     stop="52250")
    assert_verdict(result, "blocked", "Instrument P&L negative: ₹-12,000")
    # A layer already closing is no longer part of the trade's P&L: the gates pass, and the
    # 1-lot base leaves no geometric share.
    closing = layer("Long_2", entry="52700", stop="52300", lots=10, status=CLOSING)
    result = pyramid([base, closing], state, book(), position="Long_3", price="52600",
                     stop="52250")
    assert_verdict(result, "blocked", "Zero lots (limited by geometric)")


@pytest.mark.parametrize(("open_risk", "expected"), [
    ("585000", 1),  # 585,000 + 15,000 = 600,000 = exactly 12 %; at 15 % all 3 would fit
    ("635000", "Portfolio risk would be 13.0% (limit 12.0%)"),
])
def test_pyramid_portfolio_cap_uses_the_pyramid_risk_block(open_risk: str,
                                                           expected: int | str) -> None:
    result = pyramid(v6_layers(), pyramiding("51500", 0),
                     book(margin="1000000", open_risk=open_risk, open_vol="105000"))
    if isinstance(expected, int):
        assert_plan(result, "Long_2", expected, "portfolio", "52000")
    else:
        assert_verdict(result, "blocked", expected)


def test_pyramid_portfolio_cap_uses_the_pyramid_vol_block() -> None:
    # 189,500 + 10,500 = 200,000 = exactly 4 %; at the base limit of 5 % all 3 would fit.
    result = pyramid(v6_layers(), pyramiding("51500", 0),
                     book(margin="1000000", open_risk="150000", open_vol="189500"))
    assert_plan(result, "Long_2", 1, "portfolio", "52000")


def test_pyramid_with_atr_stop_source_sizes_on_the_atr_stop() -> None:
    # S = 52,500 − 1.5 × 350 = 51,975; C = floor(75,000 / (525 × 30)) = 4 < B 5 (signal: 5)
    result = pyramid(v6_layers(), pyramiding("51500", 0), book(margin="3000000"),
                     cfg=config(stop_source="atr"))
    assert_plan(result, "Long_2", 4, "risk_budget", "51975")


# -- §7 exits -------------------------------------------------------------------------------
def exit_signal(position: str, **fields: Any) -> Signal:
    return signal("EXIT", position=position, **fields)


@pytest.mark.parametrize("position", ["Long_1", "Long_2"])
def test_exit_closes_only_the_named_layer(position: str) -> None:
    layers = [layer("Long_1", lots=4), layer("Long_2", entry="52500", stop="52100", lots=2)]
    named = next(x for x in layers if x.layer == position)
    plan = decide_exit(exit_signal(position, reason="supertrend flip"), layers)
    assert isinstance(plan, ExitPlan)
    assert plan.layers == (named,)
    assert plan.lots == named.lots
    assert plan.reason == "supertrend flip"


def test_exit_all_closes_every_open_layer_in_one_plan() -> None:
    base = layer("Long_1", lots=4)
    second = layer("Long_2", entry="52500", stop="52100", lots=2)
    closing = layer("Long_3", entry="53000", stop="52600", lots=1, status=CLOSING)
    plan = decide_exit(exit_signal("ALL"), [base, second, closing])
    assert isinstance(plan, ExitPlan)
    assert plan.layers == (base, second)
    assert plan.lots == 6
    assert plan.reason == "trend reversal"


@pytest.mark.parametrize("layers", [
    [layer("Long_1"), layer("Long_2", entry="52500", stop="52100")],
    [],
], ids=["other-layers-open", "flat"])
def test_exit_of_a_layer_that_is_not_open_is_ignored(layers: list[Layer]) -> None:
    assert_verdict(decide_exit(exit_signal("Long_3"), layers), "ignored",
                   "no open layer Long_3")


def test_exit_of_a_layer_already_closing_is_ignored() -> None:
    layers = [layer("Long_1"), layer("Long_2", entry="52500", stop="52100", status=CLOSING)]
    assert_verdict(decide_exit(exit_signal("Long_2"), layers), "ignored", "already closing")


def test_exit_all_when_every_layer_is_closing_is_ignored() -> None:
    layers = [layer("Long_1", status=CLOSING),
              layer("Long_2", entry="52500", stop="52100", status=CLOSING)]
    assert_verdict(decide_exit(exit_signal("ALL"), layers), "ignored", "already closing")


def test_exit_all_when_flat_is_ignored() -> None:
    assert_verdict(decide_exit(exit_signal("ALL"), []), "ignored", "no open layers")


# -- §6 market data: trailing stops -----------------------------------------------------------
def market_data(price: str, atr: str = "700", instrument: str = "GOLD_MINI") -> Signal:
    return signal("MARKET_DATA", instrument=instrument, position=None, price=price, atr=atr)


def gold_layer(name: str = "Long_1", entry: str = "78500", stop: str = "77800", *,
               current_stop: str | None = None, highest: str | None = None,
               status: str = OPEN) -> Layer:
    return layer(name, entry, stop, 3, current_stop=current_stop, highest=highest,
                 status=status, atr="700", instrument="GOLD_MINI")


@pytest.mark.parametrize(("price", "hit"), [("78200", False), ("78000", False),
                                            ("77900", True)])
def test_v13_stop_is_hit_only_strictly_below(price: str, hit: bool) -> None:
    # Highest close 78,500, ATR 700: the trail (77,100) stays under the 78,000 stop.
    held = gold_layer(current_stop="78000")
    plan = decide_market_data(market_data(price), GOLD, [held])
    assert isinstance(plan, MarketDataPlan)
    assert plan.trails == ()  # neither the highest close nor the stop moved
    if hit:
        assert plan.exit is not None
        assert plan.exit.layers == (held,)
        assert plan.exit.reason == "PM_STOP_HIT"
    else:
        assert plan.exit is None


def test_new_high_raises_highest_close_and_trails_the_stop() -> None:
    held = gold_layer()
    plan = decide_market_data(market_data("80000"), GOLD, [held])
    assert isinstance(plan, MarketDataPlan)
    # trail = 80,000 − 2.0 × 700 = 78,600 > 77,800
    assert plan.trails == ((held, Trail(D("80000"), D("78600"), False)),)
    assert plan.exit is None


def test_stop_never_moves_down() -> None:
    held = gold_layer(current_stop="78600", highest="80000")
    # A new high with a wider ATR: trail 80,100 − 3,000 = 77,100 < 78,600.
    plan = decide_market_data(market_data("80100", atr="1500"), GOLD, [held])
    assert isinstance(plan, MarketDataPlan)
    assert plan.trails == ((held, Trail(D("80100"), D("78600"), False)),)
    # A lower close with a narrower ATR moves nothing at all.
    plan = decide_market_data(market_data("79000", atr="1000"), GOLD, [held])
    assert isinstance(plan, MarketDataPlan)
    assert (plan.trails, plan.exit) == ((), None)


def test_stop_is_hit_against_the_freshly_trailed_stop_and_not_also_trailed() -> None:
    # Old stop 77,000; the trail lifts it to 80,000 − 2 × 500 = 79,000, and 78,900 is below.
    held = gold_layer(current_stop="77000", highest="80000")
    plan = decide_market_data(market_data("78900", atr="500"), GOLD, [held])
    assert isinstance(plan, MarketDataPlan)
    assert plan.trails == ()
    assert plan.exit is not None
    assert plan.exit.layers == (held,)
    assert plan.exit.reason == "PM_STOP_HIT"


def test_each_open_layer_is_trailed_or_exited_on_its_own_stop() -> None:
    base = gold_layer("Long_1", "78500", "77800", highest="80000")
    second = gold_layer("Long_2", "79800", "79200", highest="80000")
    closing = gold_layer("Long_3", "80000", "79500", highest="80000", status=CLOSING)
    # trail = 80,000 − 2 × 600 = 78,800: the base's stop rises to it; Long_2's 79,200 is hit.
    plan = decide_market_data(market_data("79100", atr="600"), GOLD, [base, second, closing])
    assert isinstance(plan, MarketDataPlan)
    assert plan.trails == ((base, Trail(D("80000"), D("78800"), False)),)
    assert plan.exit is not None
    assert plan.exit.layers == (second,)
    assert plan.exit.lots == 3
    assert plan.exit.reason == "PM_STOP_HIT"


@pytest.mark.parametrize("layers", [[], [gold_layer(status=CLOSING)]],
                         ids=["flat", "only-closing"])
def test_market_data_without_open_layers_is_ignored(layers: list[Layer]) -> None:
    assert_verdict(decide_market_data(market_data("70000"), GOLD, layers), "ignored",
                   "no open layers")


def test_zero_atr_never_moves_the_stop() -> None:
    held = gold_layer(current_stop="78000", highest="80000")
    plan = decide_market_data(market_data("79500", atr="0"), GOLD, [held])
    assert isinstance(plan, MarketDataPlan)
    assert plan.exit is None
    assert all(trail.current_stop == D("78000") for _, trail in plan.trails)


# -- entry price check against the venue's quote ----------------------------------------------
BASE_PLAN = EntryPlan("Long_1", 3, "risk", D("51650"))
PYRAMID_PLAN = EntryPlan("Long_2", 10, "geometric", D("51500"))


@pytest.mark.parametrize("quote", ["53040", "50960"])  # exactly ±2 % of 52,000
def test_quote_at_the_divergence_limit_passes_unchanged(quote: str) -> None:
    sig = signal("BASE_ENTRY")
    # Divergence alone: a stop below both quotes, a risk-increase cap that never decides.
    wide = EntryPlan("Long_1", 3, "risk", D("50000"))
    assert check_execution_price(wide, sig, D(quote), False, D("2"), D("1000")) == wide


@pytest.mark.parametrize(("quote", "percent"), [("53041", "2.00"), ("50900", "2.12")])
def test_quote_beyond_the_divergence_limit_is_rejected_either_way(quote: str,
                                                                  percent: str) -> None:
    result = check_execution_price(BASE_PLAN, signal("BASE_ENTRY"), D(quote), False, D("2"),
                                   D("50"))
    assert_verdict(result, "rejected", f"Quote {quote} diverges {percent}% from signal "
                                       "price 52000 (limit 2%)")


def test_diverging_pyramid_is_rejected_not_shrunk() -> None:
    sig = signal("PYRAMID", position="Long_2", stop="51500")
    result = check_execution_price(PYRAMID_PLAN, sig, D("52600"), True, D("1"), D("20"))
    assert isinstance(result, Verdict)
    assert result.outcome == "rejected"


def test_base_entry_is_not_resized_by_a_higher_quote() -> None:
    sig = signal("BASE_ENTRY")
    assert check_execution_price(BASE_PLAN, sig, D("52100"), False, D("2"),
                                 D("50")) == BASE_PLAN


@pytest.mark.parametrize(("quote", "lots", "limiter"), [
    ("52250", 6, "quote"),  # risk/lot 500 → 750: 10 × 500 / 750 = 6.67
    ("52110", 8, "quote"),  # 500 → 610 (+22 %, past the 20 % cap): 8.19
    ("52100", 10, "geometric"),  # 500 → 600: +20 %, at the cap: unchanged
    ("52000", 10, "geometric"),  # at the signal price: unchanged
    ("51900", 10, "geometric"),  # a better quote never grows the pyramid
])
def test_pyramid_lots_shrink_in_proportion_to_the_risk_at_the_quote(quote: str, lots: int,
                                                                    limiter: str) -> None:
    sig = signal("PYRAMID", position="Long_2", stop="51500")
    result = check_execution_price(PYRAMID_PLAN, sig, D(quote), True, D("1"), D("20"))
    assert_plan(result, "Long_2", lots, limiter, "51500")


def test_base_entry_quoted_at_or_below_its_stop_is_rejected() -> None:
    plan = EntryPlan("Long_1", 3, "risk", D("51990"))
    sig = signal("BASE_ENTRY", stop="51990")
    result = check_execution_price(plan, sig, D("51980"), False, D("2"), D("50"))
    assert isinstance(result, Verdict)
    assert result.outcome == "rejected"
    assert "quote at or below stop" in (result.reason or "")


# -- limits beyond sizing (§10) ---------------------------------------------------------------
def test_no_equity_makes_an_order_larger_than_the_per_order_cap() -> None:
    # 1e15 of equity sizes millions of lots; the order carries the instrument's cap.
    plan = decide_base_entry(signal("BASE_ENTRY"), SPECS["BANK_NIFTY"], CFG, [],
                             book("1000000000000000", "1000000000000000"))
    assert isinstance(plan, EntryPlan)
    assert (plan.lots, plan.limiter) == (SPECS["BANK_NIFTY"].max_lots_per_order, "max_lots")


def test_margin_cap_reduces_an_entry_to_what_fits_in_the_limit() -> None:
    # 60 % of 5,000,000 = 3,000,000; 2,500,000 in use leaves room for one 270,000 lot.
    snapshot = BookSnapshot(D("5000000"), D("5000000"), D("3000000"), D(0), D(0), D("2500000"))
    plan = decide_base_entry(signal("BASE_ENTRY"), SPECS["BANK_NIFTY"], CFG, [], snapshot)
    assert isinstance(plan, EntryPlan)
    assert (plan.lots, plan.limiter) == (1, "margin_cap")


def test_margin_cap_counts_what_is_in_use_and_blocks_when_no_lot_fits() -> None:
    snapshot = BookSnapshot(D("5000000"), D("5000000"), D("3000000"), D(0), D(0), D("2800000"))
    plan = decide_base_entry(signal("BASE_ENTRY"), SPECS["BANK_NIFTY"], CFG, [], snapshot)
    assert plan == Verdict("blocked", "Margin use would be 61.4% (limit 60.0%)")


def test_an_exit_sells_the_quantity_its_layers_hold_not_todays_lot_size() -> None:
    held = layer("Long_1", lots=3)
    bought_at_old_lot_size = Layer(**{**{f: getattr(held, f) for f in held.__slots__},
                                      "quantity": 105})  # 3 lots of 35 before a lot change
    plan = decide_exit(signal("EXIT", position="Long_1"), [bought_at_old_lot_size])
    assert isinstance(plan, ExitPlan)
    assert (plan.lots, plan.quantity) == (3, 105)
