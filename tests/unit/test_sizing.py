"""Sizing beyond the golden vectors: ties, edge cases and the portfolio caps (§4, §5)."""

from decimal import Decimal as D

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from core.sizing import cap_to_portfolio, pyramid_risk_budget, size_base_entry, size_pyramid
from core.specs import PortfolioConfig

SPECS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
CFG = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")
VOL_CFG = PortfolioConfig.model_validate({**CFG.model_dump(), "use_volatility_constraint": True})
BN = SPECS["BANK_NIFTY"]
E = D("5000000")


# --- base entry ------------------------------------------------------------------------------


def test_volatility_constraint_binds_when_on() -> None:
    sizing = size_base_entry(D("52000"), D("51650"), D("350"), D("0.82"), E, D("3000000"),
                             BN, VOL_CFG)

    assert (sizing.lots, sizing.limiter) == (2, "volatility")


def test_volatility_is_reported_but_ignored_when_off() -> None:
    sizing = size_base_entry(D("52000"), D("51650"), D("350"), D("0.82"), E, D("3000000"),
                             BN, CFG)

    assert sizing.detail["lot_v"] < sizing.detail["lot_r"]
    assert sizing.limiter == "risk"


def test_zero_atr_leaves_the_other_constraints() -> None:
    sizing = size_base_entry(D("52000"), D("51650"), D("0"), D("0.82"), E, D("3000000"),
                             BN, VOL_CFG)

    assert (sizing.lots, sizing.limiter) == (3, "risk")
    assert "lot_v" not in sizing.detail


@pytest.mark.parametrize(("stop", "atr", "limiter"), [
    (D("51100"), D("450"), "risk"),        # R 2, V 2, M 2
    (D("51200"), D("450"), "volatility"),  # R 2.25, V 2, M 2
    (D("51200"), D("300"), "margin"),      # R 2.25, V 3, M 2
])
def test_equal_candidates_resolve_risk_then_volatility_then_margin(
        stop: D, atr: D, limiter: str) -> None:
    # E 5,400,000 and ER 1: Lot-R = 54,000 / ((P − S) × 30); Lot-V = 27,000 / (ATR × 30);
    # Lot-M = 540,000 / 270,000 = 2.
    sizing = size_base_entry(D("52000"), stop, atr, D("1"), D("5400000"), D("540000"), BN,
                             VOL_CFG)

    assert (sizing.lots, sizing.limiter) == (2, limiter)


def test_whole_candidate_is_not_floored_to_one_less() -> None:
    # 3 lots exactly: (E × 1% × ER) / ((P − S) × pv) = 50,000 × 0.63 / 10,500.
    sizing = size_base_entry(D("52000"), D("51650"), D("350"), D("0.63"), E, D("9000000"),
                             BN, CFG)

    assert sizing.detail["lot_r"] == 3
    assert sizing.lots == 3


def test_price_equal_to_stop_is_invalid_risk() -> None:
    sizing = size_base_entry(D("52000"), D("52000"), D("350"), D("1"), E, D("3000000"),
                             BN, CFG)

    assert (sizing.lots, sizing.limiter) == (0, "invalid_risk")


@pytest.mark.parametrize(("equity", "margin"), [(D("-1000"), D("3000000")),
                                                (E, D("-270000"))])
def test_negative_equity_or_margin_gives_zero_lots(equity: D, margin: D) -> None:
    assert size_base_entry(D("52000"), D("51650"), D("350"), D("1"), equity, margin,
                           BN, CFG).lots == 0


# --- pyramids --------------------------------------------------------------------------------


def test_risk_budget_limits_a_pyramid() -> None:
    # C = floor(0.5 × 40,000 / (500 × 30)) = 1.
    sizing = size_pyramid(D("52500"), D("52000"), D("5000000"), 10, 0, D("40000"), BN)

    assert (sizing.lots, sizing.limiter) == (1, "risk_budget")
    assert sizing.detail == {"a": D(18), "b": D(5), "c": D(1)}


def test_pyramid_ties_resolve_margin_then_geometric() -> None:
    margin_tie = size_pyramid(D("52500"), D("52000"), D("1350000"), 10, 0, D("150000"), BN)
    geometric_tie = size_pyramid(D("52500"), D("52000"), D("5000000"), 10, 0, D("150000"), BN)

    assert (margin_tie.lots, margin_tie.limiter) == (5, "margin")
    assert (geometric_tie.lots, geometric_tie.limiter) == (5, "geometric")


def test_pyramid_at_or_below_its_stop_is_invalid_risk() -> None:
    sizing = size_pyramid(D("52000"), D("52000"), D("5000000"), 10, 0, D("150000"), BN)

    assert (sizing.lots, sizing.limiter) == (0, "invalid_risk")


def test_negative_pyramid_count_is_a_bug() -> None:
    with pytest.raises(ValueError, match="pyramids_taken"):
        size_pyramid(D("52500"), D("52000"), D("5000000"), 10, -1, D("150000"), BN)


def test_risk_budget_is_never_negative() -> None:
    # 300 points up on a 500-point initial risk: U < R_base.
    assert pyramid_risk_budget(D("52300"), D("52000"), D("51500"), 10, D("30")) == 0
    assert pyramid_risk_budget(D("53100"), D("52000"), D("51500"), 10, D("30")) == D("180000")


# --- portfolio cap ---------------------------------------------------------------------------


def cap(lots: int, open_risk: D = D("0"), open_vol: D = D("0"),
        risk_per_lot: D = D("10500"), vol_per_lot: D = D("10500"),
        equity: D = E) -> tuple[int, str | None]:
    return cap_to_portfolio(lots, risk_per_lot, vol_per_lot, open_risk, open_vol, equity,
                            D("15"), D("5"))


def test_cap_leaves_lots_that_fit() -> None:
    assert cap(5) == (5, None)


def test_cap_reduces_to_the_largest_count_that_fits() -> None:
    # Room under 15% of 5,000,000: 750,000 − 700,000 = 50,000 → 4 lots of 10,500.
    assert cap(5, open_risk=D("700000")) == (4, None)
    assert cap(3, open_risk=D("700000")) == (3, None)


def test_cap_limit_is_inclusive() -> None:
    # 729,000 + 2 × 10,500 = 750,000: exactly 15%.
    assert cap(5, open_risk=D("729000")) == (2, None)
    assert cap(5, open_risk=D("729001")) == (1, None)


def test_cap_blocks_on_risk_with_reason() -> None:
    # One lot more makes 900,000 of 5,000,000.
    assert cap(5, open_risk=D("889500")) == (0, "Portfolio risk would be 18.0% (limit 15.0%)")


def test_cap_reduces_on_volatility() -> None:
    # Room under 5%: 250,000 − 200,000 = 50,000 → 4 lots.
    assert cap(6, open_vol=D("200000")) == (4, None)


def test_cap_blocks_on_volatility_with_reason() -> None:
    # One lot more makes 310,000 of 5,000,000.
    assert cap(2, open_vol=D("299500")) == (
        0, "Portfolio volatility would be 6.2% (limit 5.0%)")


def test_cap_reports_risk_before_volatility() -> None:
    reason = cap(2, open_risk=D("889500"), open_vol=D("299500"))[1]

    assert reason == "Portfolio risk would be 18.0% (limit 15.0%)"


def test_cap_takes_the_tighter_of_risk_and_volatility() -> None:
    assert cap(10, open_risk=D("700000"), open_vol=D("220000")) == (2, None)


def test_cap_uses_the_limits_it_is_given() -> None:
    # The pyramid blocks: 12% risk, 4% volatility.
    by_risk = cap_to_portfolio(5, D("10500"), D("10500"), D("580000"), D("0"), E,
                               CFG.pyramid_risk_block, CFG.pyramid_vol_block)
    by_vol = cap_to_portfolio(5, D("10500"), D("10500"), D("0"), D("200000"), E,
                              CFG.pyramid_risk_block, CFG.pyramid_vol_block)

    assert by_risk == (1, None)
    assert by_vol == (0, "Portfolio volatility would be 4.3% (limit 4.0%)")


def test_breach_is_rounded_up_to_show_it() -> None:
    # 600,500 of 5,000,000 is 12.01%: over the limit, so it must not read as 12.0%.
    result = cap_to_portfolio(5, D("10500"), D("10500"), D("590000"), D("0"), E,
                              D("12"), D("4"))

    assert result == (0, "Portfolio risk would be 12.1% (limit 12.0%)")


@pytest.mark.parametrize("equity", [D("0"), D("-5")])
def test_cap_blocks_without_positive_equity(equity: D) -> None:
    lots, reason = cap(5, equity=equity)

    assert lots == 0
    assert reason is not None


def test_cap_of_nothing_is_nothing() -> None:
    assert cap(0) == (0, None)
