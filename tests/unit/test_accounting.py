"""P&L, equity, open risk and the equity sizing reads (§4, §7)."""

from decimal import Decimal as D

import pytest

from config.domain_files import DEFAULT_CONFIG_DIR, load_portfolio_config
from core.accounting import (
    Equity,
    equity,
    layer_pnl,
    open_risk,
    open_volatility,
    percent,
    sizing_equity,
    unrealised_pnl,
)
from core.specs import PortfolioConfig

CFG = load_portfolio_config(DEFAULT_CONFIG_DIR / "portfolio.json")


def test_layer_pnl_is_signed() -> None:
    assert layer_pnl(D("52000"), D("52300"), 2, D("30")) == D("18000")
    assert layer_pnl(D("52000"), D("51900"), 2, D("30")) == D("-6000")


def test_unrealised_pnl_sums_layers() -> None:
    positions = [(D("78500"), D("79000"), 3, D("10")), (D("52000"), D("51900"), 2, D("30"))]

    assert unrealised_pnl(positions) == D("9000")
    assert unrealised_pnl([]) == 0


def test_equity_figures() -> None:
    assert equity(D("5000000"), D("-100000"), D("5200000")) == Equity(
        closed=D("5000000"), unrealised=D("-100000"), open=D("4900000"),
        blended=D("4950000"), high=D("5200000"))


def test_open_risk_counts_only_stops_below_entry() -> None:
    layers = [(D("52000"), D("51650"), 2, D("30")),   # 350 × 2 × 30 = 21,000
              (D("52500"), D("52600"), 1, D("30")),   # stop above entry: no risk
              (D("78500"), D("77800"), 3, D("10"))]   # 700 × 3 × 10 = 21,000

    assert open_risk(layers) == D("42000")
    assert open_risk([]) == 0


def test_open_volatility() -> None:
    assert open_volatility([(D("350"), 2, D("30")), (D("700"), 3, D("10"))]) == D("42000")


@pytest.mark.parametrize(("choice", "expected"), [
    ("equity_high", D("5200000")), ("closed", D("5000000")), ("blended", D("5050000")),
])
def test_sizing_equity_follows_configuration(choice: str, expected: D) -> None:
    cfg = PortfolioConfig.model_validate({**CFG.model_dump(), "sizing_equity": choice})

    assert sizing_equity(cfg, D("5000000"), D("5050000"), D("5200000")) == expected


def test_default_sizing_equity_is_the_high() -> None:
    assert sizing_equity(CFG, D("5000000"), D("5050000"), D("5200000")) == D("5200000")


@pytest.mark.parametrize(("part", "whole", "expected"), [
    (D("750000"), D("5000000"), D("15")), (D("1"), D("0"), D("0")), (D("1"), D("-5"), D("0")),
])
def test_percent(part: D, whole: D, expected: D) -> None:
    assert percent(part, whole) == expected
