"""DOMAIN.md §8 golden vectors that belong to the pure core, on the shipped configuration."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_instruments, load_portfolio_config
from core.accounting import equity, layer_pnl
from core.gates import pyramid_gate_failures
from core.signals import fingerprint
from core.sizing import Sizing, pyramid_risk_budget, size_base_entry, size_pyramid
from core.specs import PortfolioConfig
from core.stops import initial_stop, trail_stop

SPECS = load_instruments(DEFAULT_CONFIG_DIR / "instruments.json")
CFG = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")
BN = SPECS["BANK_NIFTY"]
GOLD = SPECS["GOLD_MINI"]

# The Bank Nifty base-entry signal of V1, V2 and V5.
BN_PRICE, BN_STOP, BN_ATR, BN_ER = D("52000"), D("51650"), D("350"), D("0.82")


def with_config(**changes: object) -> PortfolioConfig:
    return PortfolioConfig.model_validate({**CFG.model_dump(), **changes})


def size_bn_base(equity_: D, margin: D, stop: D = BN_STOP) -> Sizing:
    return size_base_entry(BN_PRICE, stop, BN_ATR, BN_ER, equity_, margin, BN, CFG)


def test_v1_base_entry_limited_by_risk() -> None:
    sizing = size_bn_base(D("5000000"), D("3000000"))

    assert (sizing.lots, sizing.limiter) == (3, "risk")
    assert round(sizing.detail["lot_r"], 3) == D("3.905")
    assert round(sizing.detail["lot_v"], 3) == D("2.381")
    assert round(sizing.detail["lot_m"], 2) == D("11.11")


def test_v1_base_entry_limited_by_margin() -> None:
    sizing = size_bn_base(D("5000000"), D("540000"))

    assert sizing.detail["lot_m"] == D("2.0")
    assert (sizing.lots, sizing.limiter) == (2, "margin")


@pytest.mark.parametrize(("equity_", "lots"), [(D("1000000"), 0), (D("10000000"), 7)])
def test_v2_paper_margin_is_a_fraction_of_equity(equity_: D, lots: int) -> None:
    sizing = size_bn_base(equity_, CFG.paper_margin_fraction * equity_)

    assert sizing.lots == lots
    assert sizing.limiter == "risk"


def test_v5_no_margin_gives_zero_lots_limited_by_margin() -> None:
    sizing = size_bn_base(D("5000000"), D("0"))

    assert (sizing.lots, sizing.limiter) == (0, "margin")


def test_v5_no_equity_gives_zero_lots() -> None:
    assert size_bn_base(D("0"), D("3000000")).lots == 0


def test_v5_stop_above_price_is_invalid_risk() -> None:
    sizing = size_bn_base(D("5000000"), D("3000000"), stop=D("52100"))

    assert (sizing.lots, sizing.limiter) == (0, "invalid_risk")


def test_v6_pyramid_limited_by_margin() -> None:
    # Base 10 lots at 51,500 with initial stop 51,000: at 52,500, U = 300,000 and
    # R_base = 150,000, so U − R_base = 150,000.
    budget = pyramid_risk_budget(D("52500"), D("51500"), D("51000"), 10, BN.point_value)
    assert budget == D("150000")

    for risk_budget in (budget, D("150000")):
        sizing = size_pyramid(D("52500"), D("52000"), D("1000000"), 10, 0, risk_budget, BN)

        assert (sizing.lots, sizing.limiter) == (3, "margin")
        assert sizing.detail == {"a": D(3), "b": D(5), "c": D(5)}


@pytest.mark.parametrize(("taken", "lots"), [(0, 5), (1, 2), (2, 1), (3, 0)])
def test_v7_pyramids_shrink_geometrically(taken: int, lots: int) -> None:
    sizing = size_pyramid(D("53000"), D("52500"), D("5000000"), 10, taken, D("5000000"), BN)

    assert (sizing.lots, sizing.limiter) == (lots, "geometric")


@pytest.mark.parametrize(("spec_name", "price", "atr", "stop"), [
    ("GOLD_MINI", D("78500"), D("700"), D("77800")),
    ("BANK_NIFTY", D("52000"), D("400"), D("51400")),
])
def test_v11_atr_stop_source(spec_name: str, price: D, atr: D, stop: D) -> None:
    cfg = with_config(stop_source="atr")

    assert initial_stop(price, D("1"), atr, SPECS[spec_name], cfg) == stop


def test_v13_stop_hit_only_strictly_below() -> None:
    # Highest close 78,500 and ATR 700: the trail (77,100) stays under the 78,000 stop.
    highest, stop = D("78500"), D("78000")
    hits = []
    for price in (D("78200"), D("78000"), D("77900")):
        trail = trail_stop(highest, stop, price, D("700"), GOLD)
        highest, stop = trail.highest_close, trail.current_stop
        hits.append(trail.hit)

    assert hits == [False, False, True]
    assert stop == D("78000")


def test_v15_open_and_blended_equity() -> None:
    result = equity(D("5000000"), D("100000"), D("5000000"))

    assert result.open == D("5100000")
    assert result.blended == D("5050000")


def test_v16_closing_a_layer_books_its_pnl_into_closed_equity() -> None:
    # The high-water mark moves with the ledger row (integration test of the same vector).
    pnl = layer_pnl(D("78500"), D("79000"), 3, GOLD.point_value)
    result = equity(D("5000000") + pnl, D("0"), D("5015000"))

    assert pnl == D("15000")
    assert result.closed == D("5015000")


@pytest.mark.parametrize(("price", "failures"), [
    (D("134400"), ["Price not > 1R (moved 400, need 500)"]),
    (D("134500"), ["Price not > 1R (moved 500, need 500)"]),
    (D("134510"), []),
])
def test_v18_one_r_gate_is_strict(price: D, failures: list[str]) -> None:
    # Spacing and profit pass with room to spare, so only the 1R gate speaks.
    result = pyramid_gate_failures(price, D("100"), D("134000"), D("133500"), D("134000"),
                                   [(D("134000"), 2)], GOLD.point_value, CFG)

    assert result == failures


def test_v26_identical_signals_share_a_fingerprint() -> None:
    moment = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)

    first = fingerprint("BANK_NIFTY", "BASE_ENTRY", "Long_1", moment)

    assert fingerprint("BANK_NIFTY", "BASE_ENTRY", "Long_1", moment) == first
    assert fingerprint("BANK_NIFTY", "BASE_ENTRY", "Long_1", moment + timedelta(seconds=1)) != first
    assert fingerprint("BANK_NIFTY", "BASE_ENTRY", "Long_2", moment) != first


def test_v26_naive_time_is_india_time() -> None:
    naive = datetime(2025, 1, 15, 15, 0)  # noqa: DTZ001 - naive on purpose: India time
    india = datetime(2025, 1, 15, 15, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))

    assert fingerprint("GOLD_MINI", "EXIT", "ALL", naive) == fingerprint(
        "GOLD_MINI", "EXIT", "ALL", india)
    assert fingerprint("GOLD_MINI", "EXIT", "ALL", naive) != fingerprint(
        "GOLD_MINI", "EXIT", "ALL", naive.replace(tzinfo=UTC))


def test_v26_z_and_zero_offset_are_the_same_instant() -> None:
    zulu = datetime.fromisoformat("2025-01-15T09:30:00Z")
    offset = datetime.fromisoformat("2025-01-15T09:30:00+00:00")

    assert fingerprint("COPPER", "MARKET_DATA", None, zulu) == fingerprint(
        "COPPER", "MARKET_DATA", None, offset)
